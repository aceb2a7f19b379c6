"""nfnet-curves: training curves of runs (loss, learning rate, train and eval top-1).

Reads each training workdir's metrics.jsonl and draws the training loss with
the learning rate, and the top-1 of the training batches, of every eval and of
the final eval on config.data.train_eval_split (when the run had one), one
colour per run. Writes WORKDIR/curves.png (or --out).

Examples:
  nfnet-curves workdirs/quickstart
  nfnet-curves W/clipping=0.01 W/clipping=0.16 --labels 0.01,0.16 --out clipping.png
  nfnet-curves docs/results/fashion_mnist_best --steps_per_epoch 234.375
  nfnet-curves W/seed=0 W/seed=1 --labels seed0,seed1 --log_loss --out stability.png
"""
import os
from typing import Optional, Sequence

from nfnet_jax.commands import base


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__)
  p.add_argument('workdirs', nargs='+', help='training workdirs (holding metrics.jsonl)')
  p.add_argument('--out', default=None, help='image path (default FIRST_WORKDIR/curves.png)')
  p.add_argument('--title', default=None)
  p.add_argument('--labels', default=None, help='comma-separated legend names, one per workdir')
  p.add_argument('--steps_per_epoch', type=float, default=None,
                 help='x axis in epochs: training examples / global batch')
  p.add_argument('--log_loss', action='store_true',
                 help='the training loss on a log axis (runs that diverged beside ones that did not)')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  args = p.parse_args(argv)
  for w in args.workdirs:
    if not os.path.isfile(os.path.join(w, 'metrics.jsonl')):
      p.error(f'{w} has no metrics.jsonl: give a training workdir')
  labels = args.labels.split(',') if args.labels else None
  if labels is not None and len(labels) != len(args.workdirs):
    p.error(f'--labels names {len(labels)} runs, but {len(args.workdirs)} workdirs are given')
  if args.steps_per_epoch is not None and not args.steps_per_epoch > 0:
    p.error(f'--steps_per_epoch must be > 0, got {args.steps_per_epoch:g}')
  # matplotlib and the metrics reader: imported after the flags parse (--help stays fast).
  curves = base.library('nfnet_jax.analysis.curves')
  try:
    path = curves.plot_curves(args.workdirs, args.out or os.path.join(args.workdirs[0], 'curves.png'),
                              args.title, args.steps_per_epoch, labels, args.log_loss)
  except ValueError as e:
    p.error(str(e))
  print(f'wrote {path}')
  return 0
