#!/usr/bin/env python
"""Writes a finished sweep's report: a Markdown table and a PNG.

A thin wrapper around nfnet_jax.commands.report (installed as `nfnet-report`);
`python scripts/report.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('report')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.report import main  # pylint: disable=g-import-not-at-top,unused-import
