#!/usr/bin/env python
"""Runs a hyper-parameter sweep: one training run per grid point.

A thin wrapper around nfnet_jax.commands.sweep (installed as `nfnet-sweep`);
`python scripts/sweep.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('sweep')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.sweep import main  # pylint: disable=g-import-not-at-top,unused-import
