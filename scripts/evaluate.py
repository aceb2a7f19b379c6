#!/usr/bin/env python
"""Evaluates a checkpoint: top-1, top-5 and loss at one or several resolutions.

A thin wrapper around nfnet_jax.commands.evaluate (installed as `nfnet-evaluate`);
`python scripts/evaluate.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('evaluate')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.evaluate import main  # pylint: disable=g-import-not-at-top,unused-import
