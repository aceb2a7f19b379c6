#!/usr/bin/env python
"""Exports a model for inference: folded WS params, jax.export, SavedModel.

A thin wrapper around nfnet_jax.commands.export (installed as `nfnet-export`);
`python scripts/export.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('export')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.export import main  # pylint: disable=g-import-not-at-top,unused-import
