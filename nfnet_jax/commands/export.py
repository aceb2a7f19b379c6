"""nfnet-export: folded-WS inference params, a jax.export artifact, a SavedModel."""
import json
import os
import sys

from nfnet_jax.commands import base

EXAMPLES = (
    'nfnet-export --from timm:dm_nfnet_f0=dm_nfnet_f0.safetensors --image_size 256 '
    '--out exported/f0',
    'nfnet-export --from F0_haiku.npz --image_size 256 --out exported/f0 --formats stablehlo',
    'nfnet-export --from ckpt:workdirs/quickstart --image_size 48 --channels 1 '
    '--out exported/quickstart',
)

FORMATS = ('stablehlo', 'savedmodel')


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser(
      'nfnet-export',
      'Exports a model for inference. Writes to --out: params_folded.npz (weight '
      'standardization and gains folded into the kernels, official-format '
      'pickle), model.json (the folded model config, classes, input shape), '
      'model.stablehlo (jax.export; load with '
      'nfnet_jax.export.load_stablehlo(path).call(images)) and saved_model/ (a '
      'TensorFlow SavedModel through jax2tf, signature serving_default: images '
      '-> logits). --model JSON gives the model config when the source holds '
      'none. Bad input: one line on stderr, exit status 2.', EXAMPLES)
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
  from nfnet_jax import export, pretrained  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import convert  # pylint: disable=g-import-not-at-top
  from nfnet_jax.models import validate_model_config  # pylint: disable=g-import-not-at-top
  try:
    config, params = convert.read_weights(args.source, use_ema=not args.no_ema)
    if args.model:
      config = dict(config or {}, **json.loads(args.model))
    if config is None:
      raise ValueError(f'{args.source}: the source holds no model config; pass --model JSON')
    num_classes = pretrained.classifier_classes(params)
    if num_classes is None:
      raise ValueError(f'{args.source}: cannot find the classifier bias <root>/~/linear/b')
    validate_model_config(config, num_classes)
    folded, fconfig = export.fold_ws(params, config)
    # Every name and shape against the folded model before anything compiles.
    import jax  # pylint: disable=g-import-not-at-top
    from nfnet_jax.models import create_model  # pylint: disable=g-import-not-at-top
    model = create_model(fconfig, num_classes)
    spec = jax.ShapeDtypeStruct((1, args.image_size, args.image_size, args.channels), 'float32')
    expected, _ = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, False), spec)
    pretrained.check_params(folded, {m: {n: v.shape for n, v in d.items()}
                                     for m, d in expected.items()}, what=args.source)
  except (ValueError, FileNotFoundError, ImportError, json.JSONDecodeError) as e:
    print(f'nfnet-export: {e}', file=sys.stderr)
    return base.EXIT_USAGE
  os.makedirs(args.out, exist_ok=True)
  pretrained.save_official(folded, os.path.join(args.out, 'params_folded.npz'))
  # How an image becomes the input: the source's eval preprocessing at the
  # exported size (nfnet_jax.data.inference; nfnet-predict reads it).
  from nfnet_jax.data import inference  # pylint: disable=g-import-not-at-top
  try:
    prep = convert.read_preprocessing(args.source, config, num_classes)
    if prep is not None:
      prep = inference.record(
          (args.image_size, args.image_size, args.channels),
          **{k: prep[k] for k in ('source_channels', 'resize', 'crop_padding', 'interpolation',
                                  'mean', 'std', 'num_classes', 'dataset')},
          class_names=prep.get('class_names'))
  except (ValueError, KeyError, OSError) as e:
    print(f'nfnet-export: note: no preprocessing recorded ({e})', file=sys.stderr)
    prep = None
  with open(os.path.join(args.out, 'model.json'), 'w') as f:
    json.dump({'model': fconfig, 'num_classes': num_classes,
               'input_shape': [None, args.image_size, args.image_size, args.channels],
               'preprocessing': prep, 'source': args.source}, f, indent=1)
  if 'stablehlo' in formats:
    path = os.path.join(args.out, 'model.stablehlo')
    export.export_stablehlo(folded, fconfig, num_classes, args.image_size, path,
                            channels=args.channels)
    print(f'[export] wrote {path}')
  if 'savedmodel' in formats:
    path = os.path.join(args.out, 'saved_model')
    export.export_saved_model(folded, fconfig, num_classes, args.image_size, path,
                              channels=args.channels)
    print(f'[export] wrote {path}')
  print(f'[export] folded params and model.json in {args.out}')
  return 0

