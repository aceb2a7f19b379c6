r"""Compile cost of a small train step: lowering + XLA compile, CPU and wall.

  XLA_FLAGS='--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0' \
      python benchmarks/compile_time.py [--dtype float32|bfloat16] [--repeats 2]

The step is the loop's own (`nfnet_jax.analysis.benchmark.compile_train_step`:
`nfnet_jax.train.step` wrapped by `Parallel`, AGC and EMA on, AOT-compiled)
for the tiny NFNet-F0 of `benchmarks/gpu_check.py --tiny` (depths 1-1-1-1,
widths 16-48, batch 4 at 32 px): the kind of program the test suite and
short CPU runs compile over and over. CPU seconds are this process's
(`time.process_time`): XLA compiles on several threads, so a busy machine
pays the CPU figure even where the wall figure looks small. Each repeat
rebuilds the step from scratch, so nothing is served from JAX's caches (no
persistent cache is set). Compare XLA flags by running this once per
`XLA_FLAGS` value (docs/performance.md, "Compile time of small train steps").
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import gpu_check  # pylint: disable=g-import-not-at-top,wrong-import-position
from nfnet_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from nfnet_jax.analysis import benchmark as bench  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCH, RES, NUM_CLASSES = 4, 32, 10


def measure(dtype: str) -> bench.Compiled:
  """AOT-compiles the tiny F0 train step (``bench.compile_train_step``) anew."""
  case = [c for c in gpu_check.CASES if c.key == 'f0_train_b128_192'][0]
  cfg = gpu_check.our_config(case, 'xla', tiny=True)
  cfg.train.batch_size = BATCH
  cfg.compute_dtype = dtype
  _, params, model_state = bench.build_model(cfg, NUM_CLASSES, RES, 1)
  net = models.create_model(cfg.model, NUM_CLASSES)
  images, labels = bench._fake_batch(BATCH, RES, NUM_CLASSES)  # pylint: disable=protected-access
  return bench.compile_train_step(cfg, net, params, model_state, images, labels).compiled


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
  p.add_argument('--repeats', type=int, default=2)
  a = p.parse_args(argv)
  if a.repeats < 1:
    p.error('--repeats must be >= 1')
  print(f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}; jax {jax.__version__}; '
        f'tiny F0 train step, batch {BATCH} at {RES} px, {a.dtype}')
  for i in range(a.repeats):
    c = measure(a.dtype)
    print(f'  repeat {i + 1}: lower + compile {c.compile_cpu_s:.2f} CPU-s '
          f'({c.compile_s:.2f} s wall)', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
