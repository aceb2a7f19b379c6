"""nfnet-spp: signal propagation plots of models at initialization or trained.

Signal propagation plots (per-block average squared channel mean, average
channel variance and residual-branch variance) of models at initialization,
or of a trained model. Model specs are short names
(nfnet_jax/analysis/spp.py: MODEL_SPECS and the patterns nf_resnetD,
bn_resnetD_{bn_relu_conv,relu_bn_conv}, gn_resnetD, wsgn_resnetD,
resnetD_plain, fixup_resnetD, nfnet_fN, nfnet_l0, eca_nfnet_lN,
nf_regnet_bN) with optional overrides "name:key=val;key=val". --config FILE
adds the model of an experiment config (the only model unless --models is
given) and is the data of --input data. --config.model.k=v applies to every
model that has the field; other --config.a.b=v overrides go to the config.
Every SkipInit gain is set to --skip_gain (default 1; "none" keeps the init
value 0). With --checkpoint, the trained model of a workdir or of an
official-format file is plotted with its trained skip gains. Writes
OUT/spp.csv, OUT/spp.json and OUT/spp.png.

Examples:
  nfnet-spp --out docs/figures --resolution 224 --batch 16   # the paper's comparison
  nfnet-spp --models nf_resnet101,bn_resnet101_bn_relu_conv --out /tmp/spp --config.model.alpha=0.4
  nfnet-spp --config configs/fashion_mnist.py --input data --batch 16 --out /tmp/spp_fm
  nfnet-spp --checkpoint workdirs/quickstart --overlay_init --out /tmp/spp_trained
"""
import os
import time

from nfnet_jax import errors
from nfnet_jax.commands import base
from nfnet_jax.config import load as config_load
from nfnet_jax.config.load import parse_value

# The data config of --input data when neither --config nor --data_config is
# given: the checkout's Fashion-MNIST experiment (absent from a wheel install).
DEFAULT_DATA_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    'configs', 'fashion_mnist.py')


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__, config_overrides=True)
  p.add_argument('--models', default=None,
                 help='comma-separated model specs (default without --config: the '
                      "paper's four ResNet-50s, nfnet_jax/analysis/spp.py DEFAULT_MODELS)")
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--resolution', type=int, default=None,
                 help='input size (default 224; with --checkpoint the training resolution)')
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--input', choices=('gaussian', 'smooth', 'data'), default='gaussian',
                 help='gaussian: white noise; smooth: Gaussian values constant over '
                      '--cell x --cell squares (NF-RegNets/NFNets average-pool at '
                      'transitions); data: real images')
  p.add_argument('--cell', type=int, default=32, help='cell size of --input smooth (px)')
  p.add_config(help='experiment config: its model is plotted and its eval split '
                    'feeds --input data')
  p.add_argument('--data_config', default=None, metavar='FILE.py[:ARG]',
                 help='config whose eval split feeds --input data (default: --config, '
                      'else configs/fashion_mnist.py of the checkout)')
  p.add_argument('--skip_gain', default='1.0', help='value for every skip_gain, or "none"')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--num_classes', type=int, default=1000)
  base.add_bool(p, 'jit', True, 'compile the init and each forward pass (--nojit: op by op)')
  p.add_argument('--title', default=None)
  p.add_argument('--checkpoint', default=None,
                 help='a training workdir or an official-format .npz: plot the trained model')
  p.add_argument('--model_config', default=None,
                 help='with --checkpoint FILE.npz: the config (file.py[:arg]) whose model the '
                      'file holds, when it is not an official NFNet variant')
  p.add_argument('--overlay_init', action='store_true',
                 help='with --checkpoint: also plot the same model at initialization')
  p.add_argument('--ema', action='store_true',
                 help='with --checkpoint WORKDIR: use the EMA parameters')
  return p


def main(argv=None):
  p = parser()
  args, pairs = p.parse_with_overrides(argv)
  # JAX and the models: imported after the flags parse (--help stays fast).
  spp_lib = base.library('nfnet_jax.analysis.spp')
  overrides = {k[len('model.'):]: parse_value(v) for k, v in pairs
               if k.startswith('model.')}
  other = [(k, v) for k, v in pairs if not k.startswith('model.')]
  # The experiment config takes every override (its model is plotted as
  # overridden); a separate data config takes the non-model ones. They are
  # checked even when the input is Gaussian, so a misspelled field is never
  # silently ignored.
  exp_cfg = (errors.exit_on_error(config_load.load_config, args.config, pairs)
             if args.config else None)
  data_spec = args.data_config or (None if args.config else DEFAULT_DATA_CONFIG)
  data_cfg = exp_cfg
  if data_spec:
    if not args.data_config and not os.path.exists(config_load.split_spec(data_spec)[0]):
      data_cfg = None   # installed without the checkout's configs/
      if other or args.input == 'data':
        p.error('--input data and --config.a.b=v overrides need --config or --data_config')
    else:
      data_cfg = errors.exit_on_error(config_load.load_config, data_spec, other)
  # 'none' (any case) keeps the init; parse_value reads lowercase 'none' as a word.
  skip_gain = None if args.skip_gain.strip().lower() == 'none' else parse_value(args.skip_gain)
  if skip_gain is not None and not isinstance(skip_gain, (int, float)):
    p.error(f'--skip_gain must be a number or "none", got {args.skip_gain!r}')
  if args.checkpoint:
    return _trained(p, args, overrides, skip_gain, data_cfg, spp_lib)
  args.resolution = args.resolution or 224
  if args.resolution < 1 or args.batch < 2:
    p.error('--resolution must be >= 1 and --batch >= 2 (variances need 2 samples)')

  if args.models is None:
    args.models = '' if exp_cfg is not None else ','.join(spp_lib.DEFAULT_MODELS)
  names = spp_lib.split_models(args.models) if args.models else []
  try:
    configs = {n: spp_lib.apply_overrides(spp_lib.resolve_spec(n), overrides) for n in names}
  except ValueError as e:
    p.error(str(e))
  errors.exit_on_error(spp_lib.check_model_overrides,
                            [spp_lib.resolve_spec(n) for n in names], overrides)
  if exp_cfg is not None:   # its overrides were applied (and checked) by load_config
    configs[args.config] = exp_cfg.model.to_dict()

  if args.input == 'gaussian':
    images = spp_lib.gaussian_batch(args.batch, args.resolution, args.seed)
  elif args.input == 'smooth':
    try:
      images = spp_lib.smooth_gaussian_batch(args.batch, args.resolution, args.cell, args.seed)
    except ValueError as e:
      p.error(str(e))
  else:
    images = spp_lib.data_batch(data_cfg, args.batch, args.resolution)

  os.makedirs(args.out, exist_ok=True)
  results = {}
  for name, cfg in configs.items():
    t0 = time.time()
    results[name] = spp_lib.compute_spp(cfg, images, skip_gain=skip_gain,
                                        num_classes=args.num_classes, seed=args.seed,
                                        jit=args.jit)
    print(f'[spp] {name}: {len(results[name]["avg_var"])} blocks in {time.time() - t0:.1f}s',
          flush=True)
  csv_path = os.path.join(args.out, 'spp.csv')
  n = spp_lib.write_csv(results, csv_path)
  meta = dict(resolution=args.resolution, batch=args.batch, input=args.input,
              cell=args.cell if args.input == 'smooth' else None,
              skip_gain=skip_gain, seed=args.seed, overrides=overrides)
  spp_lib.write_json(results, configs, os.path.join(args.out, 'spp.json'), meta)
  png_path = os.path.join(args.out, 'spp.png')
  title = args.title or (f'Signal propagation at init ({args.input} input, batch {args.batch}, '
                         f'{args.resolution}px, skip_gain={skip_gain})')
  spp_lib.plot_spp(results, png_path, configs, title=title)
  print(spp_lib.summarize(results, configs))
  print(f'[spp] wrote {csv_path} ({n} rows), {png_path}')
  return 0


def _trained(p, args, overrides, skip_gain, data_cfg, spp_lib):
  """--checkpoint: the trained model's SPP, optionally over its init."""
  if overrides:
    p.error('--config.model.* overrides do not apply to --checkpoint (the model is the '
            "checkpoint's)")
  model_cfg = None
  if args.model_config:
    model_cfg = errors.exit_on_error(config_load.load_config,
                                          args.model_config).model.to_dict()
  if not os.path.exists(args.checkpoint):
    p.error(f'--checkpoint {args.checkpoint}: no such file or directory')
  try:
    info = spp_lib.load_trained(args.checkpoint, model_cfg, use_ema=args.ema)
  except ValueError as e:
    p.error(str(e))
  resolution = args.resolution or info['image_size'] or 224
  if resolution < 1 or args.batch < 2:
    p.error('--resolution must be >= 1 and --batch >= 2 (variances need 2 samples)')
  if args.input == 'gaussian':
    images = spp_lib.gaussian_batch(args.batch, resolution, args.seed,
                                    channels=info['channels'])
  else:
    images = spp_lib.data_batch(data_cfg, args.batch, resolution)
  cfg = info['model_cfg']
  t0 = time.time()
  results = {info['label']: spp_lib.compute_spp(
      cfg, images, skip_gain=None, num_classes=info['num_classes'], seed=args.seed,
      jit=args.jit, params=info['params'], model_state=info['model_state'])}
  if args.overlay_init:
    results[f'init (skip_gain={skip_gain})'] = spp_lib.compute_spp(
        cfg, images, skip_gain=skip_gain, num_classes=info['num_classes'], seed=args.seed,
        jit=args.jit)
  print(f'[spp] {args.checkpoint}: {len(results)} curve(s) in {time.time() - t0:.1f}s',
        flush=True)
  configs = {n: cfg for n in results}
  os.makedirs(args.out, exist_ok=True)
  n = spp_lib.write_csv(results, os.path.join(args.out, 'spp.csv'))
  meta = dict(checkpoint=os.path.abspath(args.checkpoint), resolution=resolution,
              batch=args.batch, input=args.input, init_skip_gain=skip_gain, seed=args.seed)
  spp_lib.write_json(results, configs, os.path.join(args.out, 'spp.json'), meta)
  png_path = os.path.join(args.out, 'spp.png')
  title = args.title or (f'Signal propagation of {cfg["name"]} {cfg.get("variant", "")} '
                         f'from {os.path.basename(os.path.normpath(args.checkpoint))} '
                         f'({args.input} input, batch {args.batch}, {resolution}px)')
  spp_lib.plot_spp(results, png_path, configs, title=title)
  print(spp_lib.summarize(results, configs))
  print(f'[spp] wrote {os.path.join(args.out, "spp.csv")} ({n} rows), {png_path}')
  return 0

