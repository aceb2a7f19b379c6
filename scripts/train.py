"""Trains and evaluates a config; resumes from --workdir if it holds a checkpoint.

    python scripts/train.py --config configs/nfnet.py:F0 --workdir DIR \
        --config.optimizer.clipping=0.02

A thin wrapper around nfnet_jax.commands.train (installed as `nfnet-train`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('train')
