#!/usr/bin/env python
"""Draws where and how hard AGC clipped during a run.

  python scripts/agc_report.py WORKDIR [WORKDIR ...] [--out FILE.png]

WORKDIR is a training workdir whose run had AGC on and telemetry on
(config.train.agc_telemetry, the default). Writes WORKDIR/agc_report.png
(or --out): the fraction of clipped units by layer depth x training step,
and the distribution of ||G_i|| / max(||W_i||, eps) per layer against
lambda; several workdirs (e.g. one model at several lambdas) are drawn one
under the other.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.analysis import agc_report  # pylint: disable=g-import-not-at-top


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('workdirs', nargs='+', help='training workdirs (holding metrics.jsonl)')
  p.add_argument('--out', default=None, help='image path (default WORKDIR/agc_report.png)')
  p.add_argument('--title', default=None)
  args = p.parse_args(argv)
  for w in args.workdirs:
    if not os.path.isfile(os.path.join(w, 'metrics.jsonl')):
      p.error(f'{w} has no metrics.jsonl: give a training workdir')
    if not agc_report.read_agc_rows(w):
      p.error(f'{w}/metrics.jsonl has no AGC telemetry rows: the run had AGC off '
              '(config.optimizer.clipping=None) or config.train.agc_telemetry=False')
  path = agc_report.plot_agc_report(args.workdirs, args.out, args.title)
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
