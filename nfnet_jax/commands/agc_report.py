"""nfnet-agc-report: where and how hard AGC clipped during a run.

Draws, for training workdirs whose runs had AGC and its telemetry on
(config.train.agc_telemetry, the default), the fraction of clipped units by
layer depth x training step and the distribution of ||G_i|| / max(||W_i||,
eps) per layer against lambda; several workdirs are drawn one under the
other. Writes WORKDIR/agc_report.png (or --out).

Examples:
  nfnet-agc-report workdirs/quickstart
  nfnet-agc-report W/clipping=0.01 W/clipping=0.16 --out agc_telemetry.png
"""
import os
from typing import Optional, Sequence

from nfnet_jax.commands import base


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__)
  p.add_argument('workdirs', nargs='+', help='training workdirs (holding metrics.jsonl)')
  p.add_argument('--out', default=None, help='image path (default WORKDIR/agc_report.png)')
  p.add_argument('--title', default=None)
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  args = p.parse_args(argv)
  # JAX (through the analysis package): imported after the flags parse (--help stays fast).
  agc_report = base.library('nfnet_jax.analysis.agc_report')
  for w in args.workdirs:
    if not os.path.isfile(os.path.join(w, 'metrics.jsonl')):
      p.error(f'{w} has no metrics.jsonl: give a training workdir')
    if not agc_report.read_agc_rows(w):
      p.error(f'{w}/metrics.jsonl has no AGC telemetry rows: the run had AGC off '
              '(config.optimizer.clipping=None) or config.train.agc_telemetry=False')
  path = agc_report.plot_agc_report(args.workdirs, args.out, args.title)
  print(f'wrote {path}')
  return 0
