#!/usr/bin/env python
"""Signal Propagation Plots of models at initialization, or of trained models.

A thin wrapper around nfnet_jax.commands.spp (installed as `nfnet-spp`);
`python scripts/spp.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('spp')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.spp import main  # pylint: disable=g-import-not-at-top,unused-import
