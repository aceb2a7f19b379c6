#!/usr/bin/env python
"""Benchmarks a model's train step, eval step or input pipeline.

A thin wrapper around nfnet_jax.commands.benchmark (installed as `nfnet-benchmark`);
`python scripts/benchmark.py --help` shows its flags and examples.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  entry.run('benchmark')
else:  # loaded by path (tests): the command's main(argv) -> exit status
  from nfnet_jax.commands.benchmark import main  # pylint: disable=g-import-not-at-top,unused-import
