#!/usr/bin/env python
"""Draws where and how hard AGC clipped during a run.

A thin wrapper around nfnet_jax.commands.agc_report (installed as `nfnet-agc-report`);
`python scripts/agc_report.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('agc_report')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.agc_report import main  # pylint: disable=g-import-not-at-top,unused-import
