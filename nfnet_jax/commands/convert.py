"""nfnet-convert: weights between DeepMind .npz, our checkpoints and timm files.

Converts weights. Specs (nfnet_jax/analysis/convert.py): timm:NAME=PATH,
official:PATH (or a .npz/.pkl path), ckpt:DIR (or a directory; EMA params
unless --no_ema). Bad input: one line on stderr, exit status 2.

Examples:
  nfnet-convert --from timm:dm_nfnet_f0=dm_nfnet_f0.safetensors --to f0.npz
  nfnet-convert --from F0_haiku.npz --to timm:dm_nfnet_f0=dm_nfnet_f0.pth
  nfnet-convert --from ckpt:workdirs/run --to timm:nf_resnet50=run.safetensors
"""
import sys
from typing import Optional, Sequence

from nfnet_jax.commands import base


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__)
  p.add_argument('--from', dest='source', required=True, help='weight source spec')
  p.add_argument('--to', dest='dest', required=True, help='destination spec')
  p.add_argument('--no_ema', action='store_true', help='ckpt sources: raw params, not EMA')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parser().parse_args(argv)
  # JAX (through the analysis package): imported after the flags parse (--help stays fast).
  convert = base.library('nfnet_jax.analysis.convert')
  try:
    config, params = convert.read_weights(args.source, use_ema=not args.no_ema)
    what = convert.write_weights(args.dest, params, config)
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f'nfnet-convert: {e}', file=sys.stderr)
    return base.EXIT_USAGE
  n = sum(len(d) for d in params.values())
  print(f'[convert] {n} tensors from {args.source} -> {what}')
  if config is not None:
    print(f'[convert] model config: {config}')
  return 0
