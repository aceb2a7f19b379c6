#!/usr/bin/env python
"""Converts weights between DeepMind .npz, our training checkpoints and timm files.

  python scripts/convert.py --from timm:dm_nfnet_f0=dm_nfnet_f0.safetensors --to f0.npz
  python scripts/convert.py --from F0_haiku.npz --to timm:dm_nfnet_f0=dm_nfnet_f0.pth
  python scripts/convert.py --from ckpt:workdirs/run --to timm:nf_resnet50=run.safetensors

Specs (nfnet_jax/analysis/convert.py): timm:NAME=PATH, official:PATH (or a
.npz/.pkl path), ckpt:DIR (or a directory; EMA params unless --no_ema).
Bad input: one line on stderr, exit status 2.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--from', dest='source', required=True, help='weight source spec')
  parser.add_argument('--to', dest='dest', required=True, help='destination spec')
  parser.add_argument('--no_ema', action='store_true', help='ckpt sources: raw params, not EMA')
  args = parser.parse_args(argv)
  from nfnet_jax.analysis import convert  # pylint: disable=g-import-not-at-top
  try:
    config, params = convert.read_weights(args.source, use_ema=not args.no_ema)
    what = convert.write_weights(args.dest, params, config)
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f'convert.py: {e}', file=sys.stderr)
    return 2
  n = sum(len(d) for d in params.values())
  print(f'[convert] {n} tensors from {args.source} -> {what}')
  if config is not None:
    print(f'[convert] model config: {config}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
