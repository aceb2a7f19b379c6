#!/usr/bin/env python
"""Step time with and without AGC telemetry (the real train step).

  python benchmarks/agc_telemetry_cost.py [--variant F0 --batch 8 --resolution 128 --steps 10]

Builds nfnet_jax/train/step.py's train step for NFNet-<variant> with the
recipe's optimizer (AGC lambda 0.01) twice, once with the telemetry of
config.train.agc_telemetry (per-module clipped fraction, median and max of
||G_i|| / max(||W_i||, eps)) and once without, on one device; compiles both,
then times them in alternation (so machine load hits both alike) and prints
the medians and their ratio. Writes nothing.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from nfnet_jax import models, optim  # pylint: disable=g-import-not-at-top
from nfnet_jax.analysis import benchmark as bench
from nfnet_jax.train import parallel, state as state_lib, step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--variant', default='F0')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--resolution', type=int, default=128)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--flops_only', action='store_true',
                 help='only count operations (no compile, no timing)')
  args = p.parse_args(argv)
  spec = importlib.util.spec_from_file_location('nfnet_cfg', os.path.join(ROOT, 'configs',
                                                                          'nfnet.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config(args.variant)
  cfg.optimizer.clipping = 0.01
  net = models.create_model(cfg.model, 1000)
  tx, schedule = optim.build_optimizer(cfg.optimizer, args.batch, cfg.train.total_steps)
  shape = (args.resolution, args.resolution, 3)
  host = state_lib.init_train_state(net, tx, cfg, shape)
  par = parallel.Parallel('shard_map', jax.devices()[:1])
  rng = np.random.default_rng(0)
  batch = par.put_batch({
      'images': rng.standard_normal((args.batch,) + shape).astype(np.float32),
      'labels': np.eye(1000, dtype=np.float32)[rng.integers(0, 1000, args.batch)]})
  steps, states, flops = {}, {}, {}
  for name, on in (('off', False), ('on', True)):
    fn = step_lib.make_train_step(net.apply, tx, cfg.optimizer, schedule=schedule,
                                  agc_telemetry=on)
    steps[name] = par.wrap_train_step(fn)
    # Load-independent: XLA's operation count of the (unoptimised) program.
    cost = steps[name].lower(par.put_replicated(host), batch).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops[name] = float((cost or {}).get('flops', float('nan')))
    if args.flops_only:
      continue
    t0 = time.time()
    states[name], m = steps[name](par.put_replicated(host), batch)
    jax.block_until_ready(m)
    print(f'[telemetry {name}] compile + first step {time.time() - t0:.1f}s '
          f'({len(m.get("agc", {}))} telemetry groups)', flush=True)
  print(f'XLA flops per step: {flops["off"]:.4g} without telemetry, {flops["on"]:.4g} with '
        f'(+{100 * (flops["on"] / flops["off"] - 1):.3f}%)', flush=True)
  if args.flops_only:
    return 0
  times = {'off': [], 'on': []}
  for _ in range(args.steps):
    for name in ('off', 'on'):
      t0 = time.perf_counter()
      states[name], m = steps[name](states[name], batch)
      jax.block_until_ready(m)
      times[name].append(1e3 * (time.perf_counter() - t0))
  off, on = statistics.median(times['off']), statistics.median(times['on'])
  print(f'NFNet-{args.variant} b{args.batch}@{args.resolution} {jax.default_backend()}: '
        f'median step {off:.0f} ms without telemetry, {on:.0f} ms with '
        f'(x{on / off:.3f}); {args.steps} alternating steps each; '
        f'load average {bench.load_average()}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
