#!/usr/bin/env python
"""Draws where and how hard AGC clipped during a run.

  python scripts/agc_report.py WORKDIR [--out FILE.png]

WORKDIR is a training workdir whose run had AGC on and telemetry on
(config.train.agc_telemetry, the default). Writes WORKDIR/agc_report.png:
the fraction of clipped units by layer depth x training step, and the
distribution of ||G_i|| / max(||W_i||, eps) per layer against lambda.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.analysis import agc_report  # pylint: disable=g-import-not-at-top


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('workdir', help='a training workdir (holds metrics.jsonl)')
  p.add_argument('--out', default=None, help='image path (default WORKDIR/agc_report.png)')
  p.add_argument('--title', default=None)
  args = p.parse_args(argv)
  if not os.path.isfile(os.path.join(args.workdir, 'metrics.jsonl')):
    p.error(f'{args.workdir} has no metrics.jsonl: give a training workdir')
  path = agc_report.plot_agc_report(args.workdir, args.out, args.title)
  if path is None:
    p.error(f'{args.workdir}/metrics.jsonl has no AGC telemetry rows: the run had AGC off '
            '(config.optimizer.clipping=None) or config.train.agc_telemetry=False')
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
