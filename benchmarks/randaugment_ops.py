r"""CPU time of each RandAugment op per image: op by op in TensorFlow vs compiled.

  python benchmarks/randaugment_ops.py [--size 224] [--images 1024] [--magnitude 15]

Each op runs on `--images` random uint8 images of `--size` px inside a
tf.data map with one thread (as the input pipeline runs it), twice:

  * `tf`: `randaugment.apply_op` in the map's graph, TensorFlow kernel by
    kernel (how the pipeline ran RandAugment before session 39);
  * `xla`: the same op through one XLA-compiled call, its draws taken in
    TensorFlow, as `make_randaugment` runs each layer.

The last rows are the whole `make_randaugment(2, magnitude)` (compiled, what
the pipeline runs now) and the same two layers through `apply_op` (TF).
Figures are CPU milliseconds per image (user + system of this process)
with the cost of the map with no op (`identity`) subtracted; the machine's
load average is printed with them.
"""
import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nfnet_jax.analysis.benchmark import cpu_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position
from nfnet_jax.data import preprocess as pp  # pylint: disable=g-import-not-at-top,wrong-import-position
from nfnet_jax.data import randaugment as ra  # pylint: disable=g-import-not-at-top,wrong-import-position

POOL = 64         # distinct images the map cycles through


def cpu_ms_per_image(fn, images, n: int) -> float:
  """CPU ms per image of `fn(image, index)` in a one-thread tf.data map."""
  ds = tf.data.Dataset.range(n).map(lambda i: (tf.gather(images, i % POOL), i))
  ds = ds.map(fn, num_parallel_calls=1, deterministic=True).batch(POOL)
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  ds = ds.with_options(options)
  for _ in ds.take(2):        # trace and compile outside the timing
    pass
  start = cpu_seconds()
  for _ in ds:
    pass
  return 1e3 * (cpu_seconds() - start) / n


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--images', type=int, default=1024)
  p.add_argument('--magnitude', type=float, default=15.0)
  p.add_argument('--mode', default='official', choices=ra.MODES)
  a = p.parse_args(argv)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.integers(0, 256, (POOL, a.size, a.size, 3),
                                    dtype=np.uint8))
  key = pp.make_key(1, 2)
  example_key = lambda i: pp.fold_in(key, tf.cast(i, tf.int32))
  m, mode = a.magnitude, a.mode
  base = cpu_ms_per_image(lambda x, i: x, images, a.images)
  print(f'{a.size} px uint8 images, magnitude {m:g}, mode {mode}, one '
        f'thread; identity map {base:.3f} ms/image; load '
        f'{os.getloadavg()[0]:.2f}', flush=True)
  print('| op | TF op by op (ms CPU/image) | compiled | ratio |')
  print('|---|---|---|---|')
  rows = []
  for index, name in enumerate(ra.OP_NAMES):
    def by_tf(x, i, index=index):
      return ra.apply_op(tf.constant(index), x, example_key(i), m, mode)

    compiled = tf.function(
        lambda x, neg, c, index=index: ra.apply_op_with_draws(
            tf.constant(index), x, m, ra.Draws(negate=neg, center=c), mode),
        jit_compile=True, autograph=False)

    def by_xla(x, i, compiled=compiled):
      draws = ra.sample_draws(example_key(i), x)
      return compiled(x, draws.negate, draws.center)

    t = cpu_ms_per_image(by_tf, images, a.images) - base
    x = cpu_ms_per_image(by_xla, images, a.images) - base
    rows.append((t, x))
    print(f'| {name} | {t:.3f} | {x:.3f} | {t / max(x, 1e-9):.1f}x |',
          flush=True)
  fn = ra.make_randaugment(2, m, mode)

  def two_layers_tf(x, i):
    k = example_key(i)
    for layer in range(2):
      layer_key = pp.fold_in(k, layer)
      op = tf.random.stateless_uniform([], layer_key, 0, len(ra.OP_NAMES),
                                       tf.int32)
      x = ra.apply_op(op, x, pp.fold_in(layer_key, 1), m, mode)
    return x

  t = cpu_ms_per_image(two_layers_tf, images, a.images) - base
  x = cpu_ms_per_image(lambda im, i: fn(im, example_key(i)), images,
                       a.images) - base
  print(f'| mean of the 16 ops | {np.mean([r[0] for r in rows]):.3f} | '
        f'{np.mean([r[1] for r in rows]):.3f} | |')
  print(f'| RandAugment 2 layers (make_randaugment) | {t:.3f} | {x:.3f} | '
        f'{t / max(x, 1e-9):.1f}x |')
  print(f'load {os.getloadavg()[0]:.2f} at the end; {time.strftime("%F %T")}')


if __name__ == '__main__':
  main()
