"""nfnet-evaluate: top-1, top-5 and loss of a checkpoint at one or several resolutions.

Evaluates a checkpoint on the eval split of an experiment config: one of our
workdirs (its newest checkpoint; EMA params when present), a
checkpoints/<step> directory or an official DeepMind F*_haiku.npz. Results
are printed and written as JSON to --out (default
<workdir>/eval_results.json for our workdirs, ./eval_results.json else).

Examples:
  nfnet-evaluate --config configs/fashion_mnist.py --checkpoint workdirs/quickstart
  nfnet-evaluate --config configs/nfnet.py:F0 --checkpoint F0_haiku.npz --resolutions 224,256,320 --config.data.data_dir=/data/tfds
"""
import os
from typing import Optional, Sequence

from nfnet_jax import errors
from nfnet_jax.commands import base
from nfnet_jax.config import load as config_load


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__, config_overrides=True)
  p.add_config(help='experiment config file (its data and model); default for '
                    'our workdirs: the config saved with the checkpoint (a '
                    '--config that contradicts it is refused)')
  p.add_argument('--checkpoint', required=True,
                 help='workdir, checkpoints/<step> dir or official F*_haiku.npz')
  p.add_argument('--resolutions', type=base.int_list, default=None, metavar='R1,R2',
                 help='eval resolutions (default: config.data.eval_image_size)')
  p.add_argument('--out', default=None, help='output JSON path')
  p.add_argument('--no_ema', action='store_true',
                 help='evaluate the raw params even when the checkpoint has EMA params')
  p.add_argument('--max_batches', type=int, default=None,
                 help='stop after this many eval batches per resolution')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  args, overrides = p.parse_with_overrides(argv)
  # JAX and orbax: imported after the flags parse (--help stays fast).
  ckpt_lib = base.library('nfnet_jax.train.checkpoint')
  config = None
  if args.config is not None:
    config = errors.exit_on_error(config_load.load_config, args.config, overrides)
  if not os.path.exists(args.checkpoint):
    p.error(f'--checkpoint {args.checkpoint!r} does not exist')
  config = errors.exit_on_error(ckpt_lib.config_for_checkpoint, args.checkpoint,
                                config, args.config, overrides)
  if args.max_batches is not None and args.max_batches < 1:
    p.error(f'--max_batches must be >= 1, got {args.max_batches}')
  eval_lib = base.library('nfnet_jax.analysis.evaluate')
  result = eval_lib.evaluate(config, args.checkpoint, args.resolutions,
                             use_ema=not args.no_ema, max_batches=args.max_batches)
  out = args.out
  if out is None:
    out = (os.path.join(args.checkpoint, 'eval_results.json')
           if os.path.isdir(os.path.join(args.checkpoint, 'checkpoints'))
           else 'eval_results.json')
  eval_lib.write_json(result, out)
  print(f'[evaluate] wrote {out}')
  return 0
