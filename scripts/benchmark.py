r"""Benchmarks a model's train step, eval step or input pipeline on this machine.

Examples:
  python scripts/benchmark.py --config configs/nfnet.py:F0 --batch 8 --resolution 128
  python scripts/benchmark.py --model NFNet --variant F0 --mode eval --batch 8 --resolution 256
  python scripts/benchmark.py --model NFResNet --variant 50 --batch 8 --resolution 128 \
      --dtype bfloat16 --json_out /tmp/bench.jsonl
  python scripts/benchmark.py --config configs/nfnet.py:F0 --mode data --steps 20

One line per measurement (median / min / max ms per step, images/s, compile
time, XLA FLOPs per step, achieved GFLOP/s and % of a measured f32 matmul
peak, XLA's peak-memory estimate and the RSS growth), plus one JSON record per
measurement appended to --json_out. In train mode the AGC+EMA share is measured
by timing, alternately, the same step without AGC and EMA.
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'ml_collections config file (path:arg); overrides with --config.a.b=v.',
    lock_config=False)
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
flags.DEFINE_bool('donate', True, 'Donate the train state buffers to the step.')
flags.DEFINE_bool('peak', True, 'Measure the f32 matmul peak for the % column.')
flags.DEFINE_string('json_out', None, 'Append one JSON record per measurement here.')
flags.DEFINE_string('name', 'bench', 'Label of the measurement lines.')

FLAGS = flags.FLAGS


def _config():
  from nfnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = _CONFIG.value
  if cfg is None:
    if not FLAGS.model:
      raise app.UsageError('give --config or --model (and --variant)')
    cfg = config_lib.base_config()
    cfg.model.name = FLAGS.model
    if FLAGS.model != 'NFNet':
      # Only the fields every model takes; the rest are the constructor's defaults.
      keep = {'name', 'variant', 'conv_impl'}
      for k in list(cfg.model.keys()):
        if k not in keep:
          del cfg.model[k]
    if FLAGS.variant:
      cfg.model.variant = FLAGS.variant
  if FLAGS.conv_impl:
    cfg.model.conv_impl = FLAGS.conv_impl
  if FLAGS.dtype:
    cfg.compute_dtype = FLAGS.dtype
  return cfg


def main(argv):
  del argv
  cfg = _config()
  from nfnet_jax import bench  # pylint: disable=g-import-not-at-top
  if FLAGS.mode == 'data':
    if FLAGS.batch:
      cfg.train.batch_size = FLAGS.batch
    if FLAGS.resolution:
      cfg.data.image_size = FLAGS.resolution
  results = bench.run_benchmark(
      cfg, mode=FLAGS.mode, batch=FLAGS.batch or 8, resolution=FLAGS.resolution or 128,
      synthetic=FLAGS.synthetic,
      num_classes=FLAGS.num_classes, steps=FLAGS.steps, warmup=FLAGS.warmup,
      agc_ema_share=FLAGS.agc_ema_share, donate=FLAGS.donate, measure_peak=FLAGS.peak,
      name=FLAGS.name)
  for r in results:
    if isinstance(r, bench.Result):
      print(r.line(), flush=True)
    else:  # data mode: the pipeline's own record
      print(f"{r['name']}: data {r.get('dataset')} b{r.get('batch_size')}@"
            f"{r.get('image_size')} | {r.get('images_per_sec', float('nan')):.1f} img/s "
            f"| {r.get('images_per_cpu_sec', float('nan')):.1f} img/CPU-s "
            f"| decode errors {r.get('decode_errors')} | load {r.get('load_avg')}", flush=True)
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'a') as f:
      for r in results:
        f.write((r.to_json() if isinstance(r, bench.Result) else
                 __import__('json').dumps(r)) + '\n')


if __name__ == '__main__':
  app.run(main)
