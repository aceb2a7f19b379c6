#!/usr/bin/env python
"""Top-5 labels with probabilities for image files or folders.

A thin wrapper around nfnet_jax.commands.predict (installed as `nfnet-predict`);
`python scripts/predict.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('predict')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.predict import main  # pylint: disable=g-import-not-at-top,unused-import
