#!/usr/bin/env bash
# The stability pilot of the quickstart recipe (README.md here): the first
# STOP steps of `configs/fashion_mnist.py` at one seed, logged every 10 steps,
# then the run is killed (a diverged run stops itself with exit status 3).
# Usage, from the checkout's root:
#   bash docs/results/quickstart_stability/pilot.sh NAME SEED STOP [--config.overrides ...]
# e.g. (the arms of pilot.csv; AGC is the config's default since this pilot):
#   ... pilot.sh base 1 700 --config.optimizer.clipping=None
#   ... pilot.sh agc04 1 700
#   ... pilot.sh lr01 1 700 --config.optimizer.clipping=None --config.optimizer.base_lr=0.1
set -u
name=$1; seed=$2; stop=$3; shift 3
out=${PILOT_DIR:-/tmp/quickstart_pilot}
wd=$out/wd_${name}_s${seed}
mkdir -p "$out"; rm -rf "$wd"
export TF_CPP_MIN_LOG_LEVEL=3
python scripts/train.py --config configs/fashion_mnist.py --workdir "$wd" \
  --config.seed="$seed" --config.train.log_every=10 \
  --config.train.checkpoint_every=100000 "$@" > "$out/log_${name}_s${seed}.txt" 2>&1 &
pid=$!
t0=$(date +%s)
while kill -0 $pid 2>/dev/null; do
  sleep 2
  step=$(tail -1 "$wd/metrics.jsonl" 2>/dev/null | python -c \
    "import sys, json; l = sys.stdin.read().strip(); print(json.loads(l).get('step', 0) if l else 0)" 2>/dev/null)
  if [ "${step:-0}" -ge "$stop" ]; then kill -9 $pid; break; fi
done
wait $pid 2>/dev/null; rc=$?
echo "$name seed=$seed rc=$rc wall=$(( $(date +%s) - t0 ))s" | tee -a "$out/done.txt"
