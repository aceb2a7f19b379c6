r"""Benchmarks a model's train step, eval step or input pipeline on this machine.

Examples:
  python scripts/benchmark.py --config configs/nfnet.py:F0 --batch 8 --resolution 128
  python scripts/benchmark.py --model NFNet --variant F0 --mode eval --batch 8 --resolution 256
  python scripts/benchmark.py --model NFResNet --variant 50 --batch 8 --resolution 128 \
      --dtype bfloat16 --json_out /tmp/bench.jsonl
  python scripts/benchmark.py --config configs/nfnet.py:F0 --mode data --steps 20 \
      --config.data.data_dir=/data/tfds

The steps timed are the training loop's own (nfnet_jax/train/step.py) on one
device. One line per measurement (median / min / max ms per step, images/s,
compile time, XLA FLOPs per step, achieved GFLOP/s and % of a measured f32
matmul peak, XLA's peak-memory estimate and the RSS growth), plus one JSON
record per measurement appended to --json_out. In train mode the AGC+EMA share
is measured by timing, alternately, the same step without AGC and EMA.
--config.a.b=v overrides work as in scripts/train.py (with --model too).
"""
import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top

flags.DEFINE_string('config', None, 'Config file (path.py[:arg]); overrides with '
                    '--config.a.b=v.')
flags.DEFINE_string('model', None, 'Model name (NFNet | NFResNet | ResNet) when no --config.')
flags.DEFINE_string('variant', None,
                    "Model variant ('F0', 'ResNet50', ...) when no --config.")
flags.DEFINE_integer('batch', None, 'Batch size (train/eval default 8; data mode default '
                     'config.train.batch_size).')
flags.DEFINE_integer('resolution', None, 'Image side length (train/eval default 128; data '
                     'mode default config.data.image_size).')
flags.DEFINE_bool('synthetic', False, 'Data mode: read a synthetic imagenet2012 built '
                  'locally instead of config.data.')
flags.DEFINE_integer('num_classes', 1000, 'Classifier outputs (ImageNet: 1000).')
flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'],
                  'Compute dtype (default: config.compute_dtype).')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'data'], 'What to time.')
flags.DEFINE_integer('steps', 10, 'Timed steps.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
flags.DEFINE_string('conv_impl', None, 'Grouped conv implementation (auto | xla | split); '
                    'default: config.model.conv_impl.')
flags.DEFINE_bool('agc_ema_share', True, 'Train mode: also time the step without AGC '
                  'and EMA (alternating) and report their share.')
flags.DEFINE_bool('peak', True, 'Measure the f32 matmul peak for the % column.')
flags.DEFINE_string('json_out', None, 'Append one JSON record per measurement here.')
flags.DEFINE_string('name', 'bench', 'Label of the measurement lines.')

FLAGS = flags.FLAGS


def _config(overrides):
  from nfnet_jax.analysis import benchmark  # pylint: disable=g-import-not-at-top
  if FLAGS.config:
    cfg = config_load.load_config(FLAGS.config)
  elif FLAGS.model:
    cfg = benchmark.config_for_model(FLAGS.model, FLAGS.variant)
  else:
    raise app.UsageError('give --config or --model (and --variant)')
  config_load.apply_overrides(cfg, overrides)
  if FLAGS.conv_impl:
    cfg.model.conv_impl = FLAGS.conv_impl
  if FLAGS.dtype:
    cfg.compute_dtype = FLAGS.dtype
  if FLAGS.mode == 'data':
    if FLAGS.batch:
      cfg.train.batch_size = FLAGS.batch
    if FLAGS.resolution:
      cfg.data.image_size = FLAGS.resolution
  return cfg


def _print(r) -> None:
  from nfnet_jax.analysis import benchmark  # pylint: disable=g-import-not-at-top
  if isinstance(r, benchmark.Result):
    print(r.line(), flush=True)
  else:  # data mode: the pipeline's own record
    print(f"{r['name']}: data {r.get('dataset')} b{r.get('batch_size')}@"
          f"{r.get('image_size')} | {r.get('images_per_sec', float('nan')):.1f} img/s "
          f"| {r.get('images_per_cpu_sec', float('nan')):.1f} img/CPU-s "
          f"| decode errors {r.get('decode_errors')} | load {r.get('load_avg')}", flush=True)


def main(argv, overrides):
  del argv
  cfg = config_load.exit_on_error(_config, overrides)
  from nfnet_jax.analysis import benchmark  # pylint: disable=g-import-not-at-top
  results = benchmark.run_benchmark(
      cfg, mode=FLAGS.mode, batch=FLAGS.batch or 8, resolution=FLAGS.resolution or 128,
      synthetic=FLAGS.synthetic,
      num_classes=FLAGS.num_classes, steps=FLAGS.steps, warmup=FLAGS.warmup,
      agc_ema_share=FLAGS.agc_ema_share, measure_peak=FLAGS.peak, name=FLAGS.name)
  for r in results:
    _print(r)
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'a') as f:
      for r in results:
        f.write((r.to_json() if isinstance(r, benchmark.Result) else json.dumps(r)) + '\n')


if __name__ == '__main__':
  config_load.run_absl(main)
