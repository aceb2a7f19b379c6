"""scripts/benchmark.py and nfnet_jax.analysis.benchmark on a tiny NFNet (no timed assertions)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax import config as config_lib
from nfnet_jax.analysis import benchmark as bench

from conftest import ROOT
from conftest import subprocess_env


def _tiny_config():
  cfg = config_lib.base_config()
  cfg.model.depths = (1, 1, 1, 1)
  cfg.model.widths = (16, 32, 48, 48)
  cfg.model.stem_widths = (4, 4, 8, 8)
  cfg.model.group_width = 8
  return cfg


def test_matmul_flops_from_cost_analysis():
  # XLA's FLOP count of an m x k x n matmul is 2*m*k*n.
  f = jax.jit(lambda a, b: a @ b)
  a, b = jnp.ones((32, 48)), jnp.ones((48, 16))
  comp = bench.compile_fn(f, a, b)
  assert comp.flops == pytest.approx(2 * 32 * 48 * 16, rel=0.01)
  np.testing.assert_allclose(comp(a, b), np.full((32, 16), 48.0))
  assert bench.measure_matmul_peak(n=128, reps=2) > 0


def test_result_derived_fields():
  r = bench.Result(name='x', mode='train', model='m', batch=8, resolution=32,
                   dtype='float32', conv_impl='auto', median_ms=200.0, min_ms=100.0,
                   max_ms=300.0, steps=3, images_per_s=0.0, flops_per_step=4e9)
  bench.finish_result(r, peak_gflops=40.0)
  assert r.images_per_s == pytest.approx(40.0)        # 8 images / 0.2 s
  assert r.gflops_per_s == pytest.approx(20.0)        # 4 GFLOP / 0.2 s
  assert r.pct_of_matmul_peak == pytest.approx(50.0)
  assert json.loads(r.to_json())['images_per_s'] == pytest.approx(40.0)
  assert '40.00 img/s' in r.line()


def test_train_step_updates_params_and_ema():
  """The benchmark times the loop's own step (one device): params, EMA, step."""
  # The next test's config: the same step program, so with the suite's
  # persistent compilation cache the second of the two compiles is a hit.
  cfg = _tiny_config()
  cfg.optimizer.warmup_steps = 0
  cfg.train.total_steps = 10
  net, params, ms = bench.build_model(cfg, 10, 32, 2)
  images, labels = bench._fake_batch(2, 32, 10)  # pylint: disable=protected-access
  run = bench.compile_train_step(cfg, net, params, ms, images, labels)
  comp = run.compiled
  assert comp.flops and comp.flops > 0
  # Both clocks ran: lowering a train step alone takes well over 50 ms of
  # CPU, even when the compile itself is a cache hit.
  assert comp.compile_s > 0.05 and comp.compile_cpu_s > 0.05
  new_state, metrics = comp(run.state, run.batch)
  assert np.isfinite(float(metrics['loss'])) and float(metrics['finite']) == 1.0
  assert int(new_state.step) == 1
  p0 = params['NFNet/~/linear']['b']
  p1 = new_state.params['NFNet/~/linear']['b']
  assert np.any(np.asarray(p0) != np.asarray(p1))
  # Official EMA warm-up: decay min(0.99999, 1/10) after update 0.
  np.testing.assert_allclose(new_state.ema_params['NFNet/~/linear']['b'],
                             0.1 * p0 + 0.9 * np.asarray(p1), rtol=1e-5, atol=1e-15)


def test_benchmark_step_is_the_training_step():
  """Same params, batch and seed: the benchmark's step and the loop's agree."""
  from nfnet_jax import optim  # pylint: disable=import-outside-toplevel
  from nfnet_jax.train import parallel as parallel_lib  # pylint: disable=import-outside-toplevel
  from nfnet_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from nfnet_jax.train import step as step_lib  # pylint: disable=import-outside-toplevel
  cfg = _tiny_config()
  cfg.optimizer.warmup_steps = 0
  cfg.train.total_steps = 10
  net, params, ms = bench.build_model(cfg, 10, 32, 2)
  images, labels = bench._fake_batch(2, 32, 10)  # pylint: disable=protected-access
  run = bench.compile_train_step(cfg, net, params, ms, images, labels)
  got, got_m = run.compiled(run.state, run.batch)
  # The loop's construction, written out independently.
  par = parallel_lib.Parallel(cfg.parallel.mode, jax.devices()[:1])
  tx, schedule = optim.build_optimizer(cfg.optimizer, 2, 10)
  step = par.wrap_train_step(step_lib.make_train_step(
      net.apply, tx, cfg.optimizer, compute_dtype=cfg.compute_dtype, schedule=schedule))
  host = state_lib.host_state_from(jax.device_get(params), jax.device_get(ms), tx, cfg)
  want, want_m = step(par.put_replicated(host),
                      par.put_batch({'images': np.asarray(images),
                                     'labels': np.asarray(labels)}))
  np.testing.assert_allclose(float(got_m['loss']), float(want_m['loss']), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_run_benchmark_records():
  mode = 'train'  # eval is covered by the script test below
  cfg = _tiny_config()
  cfg.optimizer.warmup_steps = 0   # the step program of the two tests above
  cfg.train.total_steps = 10
  res = bench.run_benchmark(cfg, mode=mode, batch=2, resolution=32, num_classes=10,
                            steps=2, warmup=1, measure_peak=False)
  assert len(res) == 1
  r = res[0]
  assert r.mode == mode and r.steps == 2 and r.batch == 2
  assert r.min_ms <= r.median_ms <= r.max_ms
  assert r.images_per_s == pytest.approx(2 / (r.median_ms * 1e-3))
  assert r.flops_per_step > 0 and r.compile_s > 0
  if mode == 'train':
    assert 'agc_ema_share_pct' in r.extra and 'no_agc_ema_ms' in r.extra


def test_script_writes_json(tmp_path):
  out = tmp_path / 'b.jsonl'
  cfg_file = tmp_path / 'tiny.py'
  cfg_file.write_text(
      'from nfnet_jax import config as c\n'
      'def get_config():\n'
      '  cfg = c.base_config()\n'
      '  cfg.model.depths = (1, 1, 1, 1)\n'
      '  cfg.model.widths = (16, 32, 48, 48)\n'
      '  cfg.model.stem_widths = (4, 4, 8, 8)\n'
      '  cfg.model.group_width = 8\n'
      '  return cfg\n')
  cmd = [sys.executable, os.path.join(ROOT, 'scripts', 'benchmark.py'),
         f'--config={cfg_file}', '--mode=eval', '--batch=2', '--resolution=32',
         '--steps=2', '--warmup=1', '--nopeak', '--num_classes=10',
         '--config.model.conv_impl=xla', f'--json_out={out}']
  env = subprocess_env()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'img/s' in proc.stdout
  rec = json.loads(out.read_text().splitlines()[0])
  assert rec['mode'] == 'eval' and rec['conv_impl'] == 'xla' and rec['batch'] == 2
