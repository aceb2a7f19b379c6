"""The ``inproc`` sweep launcher (nfnet_jax/analysis/sweeps/inproc.py).

One real comparison: the same tiny grid through ``scripts/sweep.py
--launcher local`` (each run a ``python -m nfnet_jax.commands.train``
subprocess) and ``--launcher inproc`` (every run in the test's process)
gives identical per-run results. The launcher's bookkeeping (a failing run
recorded while the others go on, exit statuses, pre-emption, resumption) is
checked with a stand-in for ``train_and_evaluate``.
"""
import csv
import json
import os

import numpy as np
import pytest

from nfnet_jax.analysis import sweeps as sweep_lib
from nfnet_jax.analysis.sweeps import runner
from nfnet_jax.data import fashion_mnist
from nfnet_jax.testing import fake_data
from nfnet_jax.train import checkpoint as ckpt_lib
from nfnet_jax.train.logs import read_jsonl
from nfnet_jax import errors
from nfnet_jax.train import loop
from nfnet_jax.train import logs
from conftest import ROOT
from conftest import load_repo_module

# configs/fashion_mnist.py:local cut to a few steps of 32x32 images.
CONFIG = '''
import importlib.util, os
def get_config(arg=None):
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
  c.train.total_steps = 3
  c.train.log_every = 1
  c.train.eval_every = 0
  c.train.checkpoint_every = 0
  c.train.max_consecutive_nonfinite = 2
  c.train.compilation_cache_dir = None
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = 'constant'
  c.optimizer.ema_decay = None
  return c
'''


def _write_dataset(directory, rng):
  os.makedirs(directory, exist_ok=True)
  for split, n in (('train', 64), ('test', 32)):
    img_stem, lbl_stem = fashion_mnist.FILES[split]
    fake_data.write_idx(os.path.join(directory, img_stem),
                            rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))
    fake_data.write_idx(os.path.join(directory, lbl_stem),
                            rng.integers(0, 10, (n,)).astype(np.uint8))


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_inproc_and_local_launchers_give_identical_runs(tmp_path, monkeypatch, compilation_cache):
  _write_dataset(str(tmp_path / 'data'), np.random.default_rng(0))
  cfg = tmp_path / 'cfg.py'
  cfg.write_text(CONFIG.format(root=ROOT, data=str(tmp_path / 'data')))
  main = load_repo_module('sweep_script_inproc', 'scripts', 'sweep.py').main
  # lr 0.05 trains; lr 1e30 diverges (non-finite steps: train.py's exit status 3).
  common = ['--config', str(cfg), '--sweep', 'optimizer.base_lr=0.05,1e30',
            '--config.train.total_steps=3']
  # In-process first: its programs go to the compilation cache, which the
  # subprocesses then read (results must not depend on where a program came from).
  assert main(common + ['--workdir', str(tmp_path / 'inproc'), '--launcher', 'inproc']) == 0
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', compilation_cache)
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
  assert main(common + ['--workdir', str(tmp_path / 'local'), '--launcher', 'local',
                        '--parallel', '2']) == 0
  local, inp = _rows(tmp_path / 'local' / 'results.csv'), _rows(tmp_path / 'inproc' / 'results.csv')
  assert [r['outcome'] for r in local] == ['completed', 'diverged'], local
  for a, b in zip(local, inp):
    a.pop('wall_time_s'), b.pop('wall_time_s')
  assert inp == local
  assert local[0]['final_train_loss'] and local[0]['eval_top1']
  assert 'diverged' in local[1]['detail']
  for name, logged in zip((r['run_name'] for r in local), (3, 0)):
    # Every logged train loss, bit for bit (the diverged run logged none).
    metrics = [sweep_lib.train_losses(read_jsonl(str(tmp_path / kind / name / 'metrics.jsonl')))
               for kind in ('local', 'inproc')]
    assert len(metrics[0]) == logged
    np.testing.assert_array_equal(metrics[0], metrics[1])
    records = [json.loads((tmp_path / kind / name / sweep_lib.RUN_RECORD).read_text())
               for kind in ('local', 'inproc')]
    assert records[0]['returncode'] == records[1]['returncode']
    assert records[0]['command'][1:3] == ['-m', 'nfnet_jax.commands.train']
  # The in-process run's console output is in its train.log too.
  assert '[train]' in (tmp_path / 'inproc' / local[0]['run_name'] / 'train.log').read_text()


def _fake_train(calls, preempt=(0.5,)):
  """A stand-in for train_and_evaluate: the outcome is picked by model.alpha."""
  def train(config, workdir):
    alpha = config.model.alpha
    calls.append((os.path.basename(workdir), alpha, config.train.total_steps))
    if alpha == 0.3:
      raise RuntimeError('boom at alpha 0.3')
    if alpha == 0.4:
      raise logs.TrainingDiverged('2 consecutive non-finite steps')
    if alpha == 0.45:
      raise ckpt_lib.CheckpointSaveError('disk full')
    os.makedirs(workdir, exist_ok=True)
    status = 'preempted' if alpha in preempt else 'completed'
    if status == 'completed':
      with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
        for loss in (2.0, 1.0 - alpha):
          f.write(json.dumps({'split': 'train', 'train/loss': loss}) + '\n')
        f.write(json.dumps({'split': 'eval', 'eval/top1': alpha}) + '\n')
      with open(os.path.join(workdir, 'summary.json'), 'w') as f:
        json.dump({'status': status, 'final_eval': {'top1': alpha}}, f)
    return {'status': status}
  return train


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
  cfg = tmp_path / 'cfg.py'
  cfg.write_text('import ml_collections\n'
                 'def get_config(arg=None):\n'
                 '  return ml_collections.ConfigDict({"model": {"alpha": 0.2}, '
                 '"train": {"total_steps": 10}})\n')
  calls = []
  monkeypatch.setattr(loop, 'train_and_evaluate', _fake_train(calls))
  grid = [{'model.alpha': a} for a in (0.3, 0.1, 0.4, 0.45, 0.2, 0.5, 0.25)]
  wd = str(tmp_path / 'w')
  recs = sweep_lib.run_sweep_inproc(str(cfg), wd, grid,
                                    extra_args=['--config.train.total_steps=7'], log=print)
  # Every run up to the pre-empted one ran, with the parsed overrides.
  assert calls == [(sweep_lib.run_name({'model.alpha': a}), a, 7)
                   for a in (0.3, 0.1, 0.4, 0.45, 0.2, 0.5)]
  rc = {n: r['returncode'] for n, r in recs.items()}
  assert rc == {'alpha=0.3': 1, 'alpha=0.1': 0, 'alpha=0.4': errors.EXIT_DIVERGED,
                'alpha=0.45': errors.EXIT_BAD_INPUT, 'alpha=0.2': 0,
                'alpha=0.5': errors.EXIT_PREEMPTED}
  rows = {r['run_name']: r for r in sweep_lib.collect_results(wd, grid)}
  assert rows['alpha=0.3']['outcome'] == 'failed'
  assert rows['alpha=0.3']['detail'] == 'RuntimeError: boom at alpha 0.3'
  assert rows['alpha=0.4']['outcome'] == 'diverged'
  assert rows['alpha=0.4']['detail'] == 'error: training diverged: 2 consecutive non-finite steps'
  assert rows['alpha=0.45']['detail'] == 'error: disk full'
  assert rows['alpha=0.1']['outcome'] == 'completed'
  assert rows['alpha=0.1']['eval_top1'] == pytest.approx(0.1)
  assert rows['alpha=0.5']['outcome'] == 'preempted'
  assert rows['alpha=0.25']['outcome'] == 'missing'      # not started after the pre-emption
  log = open(os.path.join(wd, 'alpha=0.3', 'train.log')).read()
  assert 'Traceback' in log and '--config.model.alpha=0.3' in log
  # A re-run trains the unfinished ones only (failed, save-failed, pre-empted:
  # diverged and completed runs are reused), stopping again at the pre-emption.
  calls.clear()
  sweep_lib.run_sweep_inproc(str(cfg), wd, grid, log=print)
  assert [c[0] for c in calls] == ['alpha=0.3', 'alpha=0.45', 'alpha=0.5']
  calls.clear()
  monkeypatch.setattr(loop, 'train_and_evaluate', _fake_train(calls, preempt=()))
  sweep_lib.run_sweep_inproc(str(cfg), wd, grid, log=print)
  assert [c[0] for c in calls] == ['alpha=0.3', 'alpha=0.45', 'alpha=0.5', 'alpha=0.25']
  assert sweep_lib.collect_results(wd, grid)[-1]['outcome'] == 'completed'


def test_inproc_takes_only_config_overrides(tmp_path):
  with pytest.raises(ValueError, match='only --config'):
    sweep_lib.run_sweep_inproc('cfg.py', str(tmp_path), [{}], extra_args=['--foo'])
  assert runner.default_train_cmd()[1:] == ['-m', 'nfnet_jax.commands.train']
