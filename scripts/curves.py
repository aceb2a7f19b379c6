#!/usr/bin/env python
"""Draws the training curves of runs (loss, learning rate, top-1).

A thin wrapper around nfnet_jax.commands.curves (installed as `nfnet-curves`);
`python scripts/curves.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('curves')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.curves import main  # pylint: disable=g-import-not-at-top,unused-import
