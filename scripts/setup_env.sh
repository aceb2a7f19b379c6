#!/usr/bin/env bash
# Installs nfnet_jax (editable, with test extras) and, where apt is usable,
# Debian's Fashion-MNIST package (the embedded default data set) and
# tcmalloc (libtcmalloc-minimal4: the training commands run with it, 1.36x
# faster on a CPU; docs/performance.md, "Allocator").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
      || echo "warning: could not install dataset-fashion-mnist; tests using the real files will be skipped"
  else
    echo "note: not root / no apt: install Debian's dataset-fashion-mnist or set config.data.data_dir"
  fi
fi
if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
      || (apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4) \
      || echo "warning: could not install libtcmalloc-minimal4; commands keep glibc's malloc (slower on CPU)"
  else
    echo "note: not root / no apt: install tcmalloc (Debian/Ubuntu: libtcmalloc-minimal4) for faster CPU training"
  fi
fi
# constraints.txt: the exact tested versions (setup.py states ranges).
python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[test]" -c constraints.txt
