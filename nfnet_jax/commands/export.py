"""nfnet-export: folded-WS inference params, a jax.export artifact, a SavedModel.

Exports a model for inference. Writes to --out: params_folded.npz (weight
standardization and gains folded into the kernels, official-format pickle),
model.json (the folded model config, classes, input shape), model.stablehlo
(jax.export; load with nfnet_jax.export.load_stablehlo(path).call(images))
and saved_model/ (a TensorFlow SavedModel through jax2tf, signature
serving_default: images -> logits). --model JSON gives the model config when
the source holds none. Bad input: one line on stderr, exit status 2.

Examples:
  nfnet-export --from timm:dm_nfnet_f0=dm_nfnet_f0.safetensors --image_size 256 --out exported/f0
  nfnet-export --from F0_haiku.npz --image_size 256 --out exported/f0 --formats stablehlo
  nfnet-export --from ckpt:workdirs/quickstart --image_size 48 --channels 1 --out exported/quickstart
"""
import json
import sys

from nfnet_jax.commands import base


FORMATS = ('stablehlo', 'savedmodel')


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__)
  p.add_argument('--from', dest='source', required=True,
                      help='timm:NAME=PATH, official:PATH (.npz) or ckpt:WORKDIR')
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--image_size', type=int, required=True, help='input height = width')
  p.add_argument('--channels', type=int, default=3)
  p.add_argument('--formats', default='stablehlo,savedmodel',
                      help=f'comma-separated subset of {FORMATS}')
  p.add_argument('--model', default=None, help='model config as JSON (overrides)')
  p.add_argument('--no_ema', action='store_true', help='ckpt sources: raw params')
  return p


def main(argv=None) -> int:
  p = parser()
  args = p.parse_args(argv)
  formats = [f for f in args.formats.split(',') if f]
  bad = [f for f in formats if f not in FORMATS]
  if bad or args.image_size < 1 or args.channels < 1:
    print(f'nfnet-export: --formats must be a subset of {FORMATS} (got {bad}), --image_size and '
          f'--channels positive', file=sys.stderr)
    return base.EXIT_USAGE
  # JAX, the models and jax2tf: imported after the flags parse (--help stays fast).
  export_bundle = base.library('nfnet_jax.analysis.export_bundle')
  try:
    config, folded, fconfig, num_classes = export_bundle.load_folded(
        args.source, args.image_size, args.channels, args.model, use_ema=not args.no_ema)
  except (ValueError, FileNotFoundError, ImportError, json.JSONDecodeError) as e:
    print(f'nfnet-export: {e}', file=sys.stderr)
    return base.EXIT_USAGE
  export_bundle.write_bundle(args.source, args.out, formats, args.image_size, args.channels,
                             config, folded, fconfig, num_classes)
  print(f'[export] folded params and model.json in {args.out}')
  return 0
