#!/usr/bin/env python
"""Converts weights between DeepMind .npz, our training checkpoints and timm files.

A thin wrapper around nfnet_jax.commands.convert (installed as `nfnet-convert`);
`python scripts/convert.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('convert')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.convert import main  # pylint: disable=g-import-not-at-top,unused-import
