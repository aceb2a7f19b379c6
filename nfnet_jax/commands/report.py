"""nfnet-report: a finished sweep's report, a Markdown table and a PNG.

Reads SWEEP_WORKDIR/results.csv (written by nfnet-sweep; with --collect, or
when it is missing, it is first rebuilt from the runs' files), groups runs
that differ only in their seed, and writes PREFIX.md (mean +- std of the
final eval top-1 and train loss, n, and how many runs finished, diverged,
failed or are missing) and PREFIX.png (bars with error bars, one dot per
seed). PREFIX defaults to SWEEP_WORKDIR/report.

Examples:
  nfnet-report workdirs/alpha_clipping
  nfnet-report SWEEP_WORKDIR --out docs/studies/normalizers --collect
  nfnet-report docs/studies/results/regularization --baseline 'model=ResNet (batchnorm)'
"""
import sys
from typing import Optional, Sequence

from nfnet_jax.commands import base


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__)
  p.add_argument('workdir', help='the sweep workdir (nfnet-sweep --workdir)')
  p.add_argument('--out', default=None,
                 help='output prefix: writes PREFIX.md and PREFIX.png (default WORKDIR/report)')
  p.add_argument('--collect', action='store_true',
                 help='rebuild results.csv from the runs first (e.g. while the sweep runs)')
  p.add_argument('--title', default=None, help='figure title')
  p.add_argument('--baseline', action='append', default=[], metavar='COLUMN=VALUE',
                 help="add a table of each cell's top-1 minus the cell with COLUMN=VALUE "
                      "(standard error, Welch t-test p), e.g. 'model=ResNet (batchnorm, per "
                      "device)'; repeatable")
  p.add_argument('--line', default=None, metavar='KEY',
                 help='plot top-1 against this swept key (one line per model) instead of bars')
  p.add_argument('--x_scale', type=float, default=1.0,
                 help="with --line: multiply the key's values (0.125: batch over 8 devices)")
  p.add_argument('--x_label', default=None, help='with --line: the x axis label')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parser().parse_args(argv)
  # JAX (through the analysis package): imported after the flags parse (--help stays fast).
  report_lib = base.library('nfnet_jax.analysis.report')
  try:
    out = report_lib.write_report(args.workdir, args.out, collect=args.collect, title=args.title,
                                  baselines=args.baseline, line=args.line, x_scale=args.x_scale,
                                  x_label=args.x_label)
  except ValueError as e:
    print(f'nfnet-report: {e}', file=sys.stderr)
    return base.EXIT_USAGE
  print(out['table'])
  print(f"[report] wrote {out['markdown']} and {out['png']}")
  return 0
