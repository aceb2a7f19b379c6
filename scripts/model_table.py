#!/usr/bin/env python
"""The model zoo table: params and FLOPs of every registered model and variant.

A thin wrapper around nfnet_jax.commands.model_table (installed as `nfnet-model-table`);
`python scripts/model_table.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('model_table')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.model_table import main  # pylint: disable=g-import-not-at-top,unused-import
