#!/usr/bin/env bash
# Every figure of docs/performance.md's CPU table, in one run (~25 min on
# the 2-core machine; run it with nothing else on the machine):
#   bash benchmarks/run_all.sh [OUT_DIR]
# Writes OUT_DIR/bench.jsonl (scripts/benchmark.py records),
# OUT_DIR/timm.jsonl + timm.txt (benchmarks/timm_compare.py) and OUT_DIR/table.md
# (benchmarks/render_table.py). Needs the `bench` extra for timm:
#   pip install -e '.[bench]' -c constraints.txt
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-workdirs/bench}"
mkdir -p "$out"
export TF_CPP_MIN_LOG_LEVEL=3
jsonl="$out/bench.jsonl"
: > "$jsonl"
b() { python scripts/benchmark.py --json_out "$jsonl" "$@"; }

# NFNet-F0 train: the per-group split ('auto' on CPU) vs feature_group_count.
b --model NFNet --variant F0 --batch 8 --resolution 128 --steps 15 --warmup 2 --name f0_train_b8_128
b --model NFNet --variant F0 --batch 8 --resolution 128 --steps 5 --warmup 1 --conv_impl xla --noagc_ema_share --name f0_train_b8_128_xla
b --model NFNet --variant F0 --batch 8 --resolution 128 --steps 5 --warmup 1 --dtype bfloat16 --noagc_ema_share --name f0_train_b8_128_bf16
b --model NFNet --variant F0 --batch 4 --resolution 192 --steps 5 --warmup 1 --noagc_ema_share --name f0_train_b4_192
b --model NFNet --variant F0 --batch 4 --resolution 192 --steps 5 --warmup 1 --conv_impl xla --noagc_ema_share --name f0_train_b4_192_xla
b --model NFNet --variant F0 --batch 4 --resolution 192 --steps 5 --warmup 1 --dtype bfloat16 --noagc_ema_share --name f0_train_b4_192_bf16
# NFNet-F0 eval at the F0 test resolution.
b --model NFNet --variant F0 --mode eval --batch 8 --resolution 256 --steps 5 --warmup 1 --name f0_eval_b8_256
b --model NFNet --variant F0 --mode eval --batch 8 --resolution 256 --steps 3 --warmup 1 --conv_impl xla --name f0_eval_b8_256_xla
b --model NFNet --variant F0 --mode eval --batch 8 --resolution 256 --steps 5 --warmup 1 --dtype bfloat16 --name f0_eval_b8_256_bf16
# NF-ResNet-50 train.
b --model NFResNet --variant ResNet50 --batch 8 --resolution 128 --steps 15 --warmup 2 --name nfr50_train_b8_128
b --model NFResNet --variant ResNet50 --batch 8 --resolution 128 --steps 5 --warmup 1 --dtype bfloat16 --noagc_ema_share --name nfr50_train_b8_128_bf16

# Ours vs timm, alternating in one process.
: > "$out/timm.jsonl"
python benchmarks/timm_compare.py --shapes all --rounds 3 --warmup 1 --threads 2 \
    --impls auto,xla --xla_rounds 1 --json_out "$out/timm.jsonl" | tee "$out/timm.txt"

python benchmarks/render_table.py "$jsonl" "$out/timm.jsonl" | tee "$out/table.md"
