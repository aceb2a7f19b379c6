#!/usr/bin/env python
"""Writes a finished sweep's report: a Markdown table and a PNG.

  python scripts/report.py SWEEP_WORKDIR [--out docs/studies/normalizers] [--collect]

Reads SWEEP_WORKDIR/results.csv (written by scripts/sweep.py; with --collect,
or when it is missing, it is first rebuilt from the runs' files), groups runs
that differ only in their seed, and writes PREFIX.md (mean +- std of the
final eval top-1 and train loss, n, and how many runs finished, diverged,
failed or are missing) and PREFIX.png (bars with error bars, one dot per
seed). PREFIX defaults to SWEEP_WORKDIR/report.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.analysis import report as report_lib  # pylint: disable=g-import-not-at-top


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('workdir', help='the sweep workdir (scripts/sweep.py --workdir)')
  p.add_argument('--out', default=None,
                 help='output prefix: writes PREFIX.md and PREFIX.png (default WORKDIR/report)')
  p.add_argument('--collect', action='store_true',
                 help='rebuild results.csv from the runs first (e.g. while the sweep runs)')
  p.add_argument('--title', default=None, help='figure title')
  args = p.parse_args(argv)
  try:
    out = report_lib.write_report(args.workdir, args.out, collect=args.collect, title=args.title)
  except ValueError as e:
    print(f'report.py: {e}', file=sys.stderr)
    return 2
  print(out['table'])
  print(f"[report] wrote {out['markdown']} and {out['png']}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
