#!/usr/bin/env python
"""Prepares a data set for nfnet_jax.

A thin wrapper around nfnet_jax.commands.prepare_data (installed as `nfnet-prepare-data`);
`python scripts/prepare_data.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('prepare_data')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.prepare_data import main  # pylint: disable=g-import-not-at-top,unused-import
