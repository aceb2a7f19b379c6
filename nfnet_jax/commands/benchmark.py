"""nfnet-benchmark: times a model's train step, eval step or input pipeline.

Times the training loop's own steps (nfnet_jax/train/step.py) on one device,
or the input pipeline. One line per measurement (median / min / max ms per
step, images/s, compile time, XLA FLOPs per step, achieved GFLOP/s and % of
a measured f32 matmul peak, XLA's peak-memory estimate and the RSS growth),
plus one JSON record per measurement appended to --json_out. In train mode
the AGC+EMA share is measured by timing, alternately, the same step without
AGC and EMA.

Examples:
  nfnet-benchmark --config configs/nfnet.py:F0 --batch 8 --resolution 128
  nfnet-benchmark --model NFNet --variant F0 --mode eval --batch 8 --resolution 256
  nfnet-benchmark --model NFResNet --variant ResNet50 --batch 8 --resolution 128 --dtype bfloat16 --json_out /tmp/bench.jsonl
  nfnet-benchmark --config configs/nfnet.py:F0 --mode data --steps 20 --config.data.data_dir=/data/tfds
"""
import json
from typing import Optional, Sequence

from nfnet_jax import errors
from nfnet_jax.commands import base
from nfnet_jax.config import load as config_load


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__, config_overrides=True)
  p.add_config(help='experiment config file')
  p.add_argument('--model', default=None,
                 help='model name (NFNet | NFResNet | ResNet) when no --config')
  p.add_argument('--variant', default=None,
                 help="model variant ('F0', 'ResNet50', ...) when no --config")
  p.add_argument('--batch', type=int, default=None,
                 help='batch size (train/eval default 8; data mode default '
                      'config.train.batch_size)')
  p.add_argument('--resolution', type=int, default=None,
                 help='image side length (train/eval default 128; data mode default '
                      'config.data.image_size)')
  base.add_bool(p, 'synthetic', False,
                'data mode: read a synthetic imagenet2012 built locally instead of config.data')
  p.add_argument('--num_classes', type=int, default=1000, help='classifier outputs')
  p.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None,
                 help='compute dtype (default: config.compute_dtype)')
  p.add_argument('--mode', choices=('train', 'eval', 'data'), default='train',
                 help='what to time')
  p.add_argument('--steps', type=int, default=10, help='timed steps')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps after compilation')
  p.add_argument('--conv_impl', choices=('auto', 'xla', 'split'), default=None,
                 help='grouped conv implementation (default: config.model.conv_impl)')
  base.add_bool(p, 'agc_ema_share', True,
                'train mode: also time the step without AGC and EMA (alternating)')
  base.add_bool(p, 'peak', True, 'measure the f32 matmul peak for the %% column')
  p.add_argument('--json_out', default=None,
                 help='append one JSON record per measurement here')
  p.add_argument('--name', default='bench', help='label of the measurement lines')
  return p


def _config(args, overrides, benchmark):
  if args.config:
    cfg = config_load.load_config(args.config)
  else:
    cfg = benchmark.config_for_model(args.model, args.variant)
  config_load.apply_overrides(cfg, overrides)
  if args.conv_impl:
    cfg.model.conv_impl = args.conv_impl
  if args.dtype:
    cfg.compute_dtype = args.dtype
  if args.mode == 'data':
    if args.batch:
      cfg.train.batch_size = args.batch
    if args.resolution:
      cfg.data.image_size = args.resolution
  return cfg


def _print(r, benchmark) -> None:
  if isinstance(r, benchmark.Result):
    print(r.line(), flush=True)
  else:  # data mode: the pipeline's own record
    print(f"{r['name']}: data {r.get('dataset')} b{r.get('batch_size')}@"
          f"{r.get('image_size')} | {r.get('images_per_sec', float('nan')):.1f} img/s "
          f"| {r.get('images_per_cpu_sec', float('nan')):.1f} img/CPU-s "
          f"| decode errors {r.get('decode_errors')} | load {r.get('load_avg')}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  args, overrides = p.parse_with_overrides(argv)
  if not args.config and not args.model:
    p.error('give --config or --model (and --variant)')
  for name in ('batch', 'resolution', 'steps'):
    value = getattr(args, name)
    if value is not None and value < 1:
      p.error(f'--{name} must be >= 1, got {value}')
  if args.warmup < 0:
    p.error(f'--warmup must be >= 0, got {args.warmup}')
  # JAX and the model zoo: imported after the flags parse (--help stays fast).
  benchmark = base.library('nfnet_jax.analysis.benchmark')
  cfg = errors.exit_on_error(_config, args, overrides, benchmark)
  results = benchmark.run_benchmark(
      cfg, mode=args.mode, batch=args.batch or 8, resolution=args.resolution or 128,
      synthetic=args.synthetic, num_classes=args.num_classes, steps=args.steps,
      warmup=args.warmup, agc_ema_share=args.agc_ema_share, measure_peak=args.peak,
      name=args.name)
  for r in results:
    _print(r, benchmark)
  if args.json_out:
    with open(args.json_out, 'a') as f:
      for r in results:
        f.write((r.to_json() if isinstance(r, benchmark.Result) else json.dumps(r)) + '\n')
  return 0
