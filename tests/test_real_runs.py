"""Real training runs: sweep outcomes, AGC telemetry, profile, SPP.

Four runs of the quickstart NF-ResNet at width 0.25 (32 px, batch 16, 4
steps) on a generated Fashion-MNIST-format data set where every image is the
same grey square of class 3, so that every batch is identical and a run's
loss changes only through learning:

* a normal learning rate learns the class: ``completed``;
* a learning rate of 0 leaves the loss exactly where it started:
  ``not learning``;
* a learning rate of 1e30 overflows the parameters at once; every step is
  skipped and train.py exits with its divergence status: ``diverged``;
* a config file whose ``get_config`` raises: ``failed``, with the error's
  last line.

The runs go through the sweep's in-process launcher (`run_sweep_inproc`:
what `scripts/train.py` calls, in this process), which records each exit
status, and share the session's persistent compilation cache. They train with
AGC (lambda 0.16) and telemetry on and profile steps 1..2, so the completed
run's workdir also checks the telemetry rows, scripts/agc_report.py, the
profiler trace and ``scripts/spp.py --checkpoint WORKDIR``.
"""
import json
import os

import numpy as np
import pytest

from nfnet_jax.analysis import sweeps as sweep_lib
from nfnet_jax.data import fashion_mnist
from nfnet_jax.testing import fake_data
from conftest import load_repo_module

from conftest import ROOT

CONFIG = '''
import importlib.util, os
def get_config(arg=None):
  if arg == 'raise':
    raise RuntimeError('this config raises on purpose')
  spec = importlib.util.spec_from_file_location(
      'fm', os.path.join({root!r}, 'configs', 'fashion_mnist.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config('local')
  c.data.data_dir = {data!r}
  c.data.image_size = 32
  c.data.eval_image_size = 32
  c.data.eval_crop_padding = 0
  c.data.randaugment_layers = 0
  c.data.mixup_alpha = 0.0
  c.data.cutmix = False
  c.data.random_flip = False
  c.data.train_crop = 'none'
  c.data.shuffle_buffer = 16
  c.train.batch_size = 16
  c.train.eval_batch_size = 32
  c.train.total_steps = 4
  c.train.log_every = 1
  c.train.eval_every = 0
  c.train.checkpoint_every = 0
  c.train.max_consecutive_nonfinite = 2
  c.train.compilation_cache_dir = None
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = 'constant'
  c.optimizer.ema_decay = None
  c.optimizer.clipping = 0.16
  c.train.profile_steps = '1,2'
  return c
'''


def _write_constant_dataset(directory):
  os.makedirs(directory, exist_ok=True)
  for split, n in (('train', 64), ('test', 32)):
    img_stem, lbl_stem = fashion_mnist.FILES[split]
    fake_data.write_idx(os.path.join(directory, img_stem),
                            np.full((n, 28, 28), 128, np.uint8))
    fake_data.write_idx(os.path.join(directory, lbl_stem), np.full((n,), 3, np.uint8))


@pytest.fixture(scope='module')
def sweep_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('outcomes')
  data = str(root / 'data')
  _write_constant_dataset(data)
  cfg = root / 'cfg.py'
  cfg.write_text(CONFIG.format(root=ROOT, data=data))
  # The sweep's in-process launcher: each run calls what `nfnet-train` calls
  # (config loading, the loop, each failure's line and exit status) without
  # a new interpreter and its imports (~15 CPU-s a run here);
  # test_sweep_inproc.py shows that it records what the `local` launcher's
  # subprocesses record.
  wd = str(root / 'sweep')
  grid = [{'optimizer.base_lr': lr} for lr in (1.0, 0.0, 1e30)]
  sweep_lib.run_sweep_inproc(str(cfg), wd, grid, log=print)
  rows = sweep_lib.collect_results(wd, grid)
  wd_fail = str(root / 'sweep_fail')
  fail_grid = [{'seed': 0}]
  sweep_lib.run_sweep_inproc(str(cfg) + ':raise', wd_fail, fail_grid, log=print)
  rows += sweep_lib.collect_results(wd_fail, fail_grid)
  for r in rows:
    r['workdir'] = os.path.join(wd if r['run_name'] != 'seed=0' else wd_fail, r['run_name'])
  return rows


def _logs(rows, root_hint=''):
  return '\n'.join(f"{r['run_name']}: {r['outcome']} {r['detail']}" for r in rows)


def test_completed(sweep_dir):
  row = sweep_dir[0]
  assert row['outcome'] == 'completed', _logs(sweep_dir)
  assert row['final_train_loss'] < row['initial_train_loss']
  assert row['eval_top1'] == pytest.approx(1.0)   # one class, learnt


def test_not_learning_at_zero_learning_rate(sweep_dir):
  row = sweep_dir[1]
  assert row['outcome'] == 'not learning', _logs(sweep_dir)
  assert row['final_train_loss'] == row['initial_train_loss']
  assert row['detail'].startswith('final train loss')


def test_diverged_by_exit_status(sweep_dir):
  row = sweep_dir[2]
  assert row['outcome'] == 'diverged', _logs(sweep_dir)
  assert 'training diverged' in row['detail']
  assert '2 consecutive non-finite steps' in row['detail']


def test_failed_with_the_errors_last_line(sweep_dir):
  row = sweep_dir[3]
  assert row['outcome'] == 'failed', _logs(sweep_dir)
  assert row['detail'] == 'RuntimeError: this config raises on purpose'


def _script_main(name):
  return load_repo_module(f'{name}_script', 'scripts', f'{name}.py').main


def test_agc_telemetry_rows_report_and_profile_trace(sweep_dir):
  wd = sweep_dir[0]['workdir']
  with open(os.path.join(wd, 'metrics.jsonl')) as f:
    rows = [json.loads(l) for l in f]
  agc_rows = [r for r in rows if r['split'] == 'agc']
  assert [r['step'] for r in agc_rows] == [1, 2, 3, 4]          # every log_every=1 steps
  first = agc_rows[0]
  assert first['agc/clipping'] == 0.16
  groups = [k[len('agc/clipped/'):] for k in first if k.startswith('agc/clipped/')]
  assert 'NF_ResNet/~/initial_conv' in groups and len(groups) >= 15
  for g in groups:
    assert 0.0 <= first[f'agc/clipped/{g}'] <= 1.0
    assert 0.0 <= first[f'agc/ratio_median/{g}'] <= first[f'agc/ratio_max/{g}']
  stages = sorted(k for k in first if k.startswith('agc/stage/'))
  assert stages == ['agc/stage/head', 'agc/stage/stage0', 'agc/stage/stage1',
                    'agc/stage/stage2', 'agc/stage/stage3', 'agc/stage/stem']
  with open(os.path.join(wd, 'train.log'), errors='replace') as f:
    assert '[agc] step 4: clipped units stem ' in f.read()
  out = os.path.join(wd, 'report.png')
  assert _script_main('agc_report')([wd, '--out', out]) == 0
  assert os.path.getsize(out) > 10_000
  traces = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(wd, 'profile')) for f in fs]
  assert any(t.endswith('.xplane.pb') for t in traces), traces


def test_spp_of_a_trained_workdir_with_init_overlay(sweep_dir, tmp_path):
  wd = sweep_dir[0]['workdir']
  out = tmp_path / 'spp'
  assert _script_main('spp')(['--checkpoint', wd, '--out', str(out), '--overlay_init',
                              '--batch', '4', '--jit']) == 0
  with open(out / 'spp.json') as f:
    blob = json.load(f)
  assert list(blob['models']) == ['trained, step 4', 'init (skip_gain=1.0)']
  assert blob['meta']['resolution'] == 32
  trained, init = (blob['models'][k]['stats'] for k in blob['models'])
  assert len(trained['avg_var']) == len(init['avg_var']) == 4
  assert trained['avg_var'] != init['avg_var']
  assert (out / 'spp.png').stat().st_size > 10_000
