#!/usr/bin/env python
"""Signal Propagation Plots of models at initialization, or of trained models.

  python scripts/spp.py --out docs/figures \
      [--models bn_resnet50_bn_relu_conv,bn_resnet50_relu_bn_conv,resnet50_plain,nf_resnet50] \
      [--resolution 224 --batch 32 --input gaussian|smooth|data --skip_gain 1.0] \
      [--config.model.alpha=0.5] [--config configs/fashion_mnist.py --config.data.data_dir=D]

  python scripts/spp.py --out OUT --checkpoint WORKDIR|F0_haiku.npz [--overlay_init] \
      [--model_config FILE.py[:arg]] [--ema]

With --checkpoint, the trained model of a training workdir (its newest
checkpoint and saved config) or of an official-format file (the NFNet variant
is inferred; other models need --model_config) is plotted with its trained skip
gains (no --skip_gain override), at the run's training resolution by
default; --overlay_init adds the same model at initialization (skip gains
set by --skip_gain) for comparison.

Model specs are short names (nfnet_jax/analysis/spp.py: MODEL_SPECS and the
patterns nf_resnetD, bn_resnetD_{bn_relu_conv,relu_bn_conv}, gn_resnetD,
wsgn_resnetD, resnetD_plain, fixup_resnetD, nfnet_fN, nfnet_l0, eca_nfnet_lN,
nf_regnet_bN) with optional overrides
"name:key=val;key=val". --config.model.k=v applies to every model that has the
field (alpha/se_ratio only to NF models). Every SkipInit gain is set to
--skip_gain (default 1; "none" keeps the init value 0). All models run with
batch statistics (is_training=True) and no stochastic depth or dropout.
Writes OUT/spp.csv, OUT/spp.json (with expected variance and transitions)
and OUT/spp.png.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.analysis import spp as spp_lib  # pylint: disable=g-import-not-at-top
from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top
from nfnet_jax.config.load import parse_value  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', default=','.join(spp_lib.DEFAULT_MODELS),
                 help='comma-separated model specs')
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--resolution', type=int, default=None,
                 help='input size (default 224; with --checkpoint the training resolution)')
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--input', choices=('gaussian', 'smooth', 'data'), default='gaussian',
                 help='gaussian: white noise; smooth: Gaussian values constant over '
                      '--cell x --cell squares (NF-RegNets/NFNets average-pool at '
                      'transitions); data: real images')
  p.add_argument('--cell', type=int, default=32, help='cell size of --input smooth (px)')
  p.add_argument('--config', '--data_config', dest='data_config',
                 default=os.path.join(REPO, 'configs', 'fashion_mnist.py'),
                 help='config whose eval split feeds --input data (file.py[:arg]); '
                      '--config.model.k=v overrides go to every model, other '
                      '--config.a.b=v overrides to this config')
  p.add_argument('--skip_gain', default='1.0', help='value for every skip_gain, or "none"')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--num_classes', type=int, default=1000)
  p.add_argument('--jit', action='store_true', help='compile each forward pass')
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
  args, extra = p.parse_known_args(argv)
  extra, pairs = config_load.exit_on_error(config_load.split_overrides, extra)
  if extra:
    p.error(f'unknown arguments {extra}; overrides look like --config.model.alpha=0.5')
  overrides = {k[len('model.'):]: parse_value(v) for k, v in pairs
               if k.startswith('model.')}
  # The other overrides configure the data config (checked even when the
  # input is Gaussian, so a misspelled field is never silently ignored).
  data_cfg = config_load.exit_on_error(
      config_load.load_config, args.data_config,
      [(k, v) for k, v in pairs if not k.startswith('model.')])
  skip_gain = parse_value(args.skip_gain)
  if skip_gain is not None and not isinstance(skip_gain, (int, float)):
    p.error(f'--skip_gain must be a number or "none", got {args.skip_gain!r}')
  if args.checkpoint:
    return _trained(p, args, overrides, skip_gain, data_cfg)
  args.resolution = args.resolution or 224
  if args.resolution < 1 or args.batch < 2:
    p.error('--resolution must be >= 1 and --batch >= 2 (variances need 2 samples)')

  names = spp_lib.split_models(args.models)
  try:
    configs = {n: spp_lib.apply_overrides(spp_lib.resolve_spec(n), overrides) for n in names}
  except ValueError as e:
    p.error(str(e))
  config_load.exit_on_error(spp_lib.check_model_overrides,
                            [spp_lib.resolve_spec(n) for n in names], overrides)

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


def _trained(p, args, overrides, skip_gain, data_cfg):
  """--checkpoint: the trained model's SPP, optionally over its init."""
  if overrides:
    p.error('--config.model.* overrides do not apply to --checkpoint (the model is the '
            "checkpoint's)")
  model_cfg = None
  if args.model_config:
    model_cfg = config_load.exit_on_error(config_load.load_config,
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


if __name__ == '__main__':
  sys.exit(main())
