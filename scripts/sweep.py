#!/usr/bin/env python
"""Runs a hyper-parameter sweep (see nfnet_jax/analysis/sweeps/cli.py, or --help).

  python scripts/sweep.py --config configs/fashion_mnist.py --workdir W \
      --sweep model.alpha=0.1,0.2,0.4 --sweep optimizer.clipping=0.01,None \
      [--launcher local|inproc|submitit|print]

A thin wrapper around nfnet_jax.analysis.sweeps.cli.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.analysis.sweeps.cli import main  # pylint: disable=g-import-not-at-top
from nfnet_jax.commands import base  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  base.quiet_console()   # the entry point's process-wide console settings
  sys.exit(main())
