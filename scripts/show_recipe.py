#!/usr/bin/env python
"""Prints the training recipe a config resolves to, next to the official one.

A thin wrapper around nfnet_jax.commands.show_recipe (installed as `nfnet-show-recipe`);
`python scripts/show_recipe.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('show_recipe')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.show_recipe import main  # pylint: disable=g-import-not-at-top,unused-import
