#!/usr/bin/env bash
# The quickstart (README): installs nfnet_jax and Debian's Fashion-MNIST, then
# trains and evaluates a small NF-ResNet on Fashion-MNIST on the CPU.
# Usage: bash scripts/quickstart.sh [WORKDIR] [--config.overrides ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
workdir="${1:-workdirs/quickstart}"
shift || true
export TF_CPP_MIN_LOG_LEVEL=3
python scripts/train.py --config configs/fashion_mnist.py --workdir "$workdir" "$@"
