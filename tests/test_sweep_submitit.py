"""The submitit launcher of scripts/sweep.py (nfnet_jax/analysis/sweeps/slurm.py).

Sweeps go through submitit's local executor (each job a separate process,
submitted, pickled and collected exactly as on SLURM) and its debug
executor (in this process), with the fake instant trainer of
tests/test_sweep.py. SLURM itself is not available here: the SLURM path is
checked up to the sbatch script submitit would submit, and the requeue hook
(`TrainJob.checkpoint`) is driven directly.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from nfnet_jax.analysis import sweeps as sweep_lib

from conftest import ROOT as REPO
from test_sweep import CONFIG_TEXT, FAKE_TRAIN, SWEEP_SCRIPT, _read_csv, _sweep_main

submitit = pytest.importorskip('submitit')


@pytest.fixture
def setup(tmp_path, monkeypatch):
  (tmp_path / 'fake_train.py').write_text(FAKE_TRAIN)
  (tmp_path / 'cfg.py').write_text(CONFIG_TEXT)
  # The local executor's job processes import nfnet_jax from this tree.
  monkeypatch.setenv('PYTHONPATH', REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return tmp_path, [sys.executable, str(tmp_path / 'fake_train.py')], str(tmp_path / 'cfg.py')


def _argv(cfg, wd, fake, cluster):
  return ['--config', cfg, '--workdir', str(wd), '--launcher', 'submitit',
          '--submitit_cluster', cluster, '--sweep', 'model.alpha=0.1,0.2',
          '--sweep', 'optimizer.clipping=0.01,None', '--train_cmd', ' '.join(fake),
          '--timeout_min', '5', '--config.train.total_steps=3']


def test_2x2_sweep_through_the_local_executor_and_rerun_submits_nothing(setup, capsys):
  tmp, fake, cfg = setup
  wd = tmp / 'sweep'
  main = _sweep_main()
  assert main(_argv(cfg, wd, fake, 'local')) == 0
  assert len((wd / 'calls.txt').read_text().split()) == 4
  rows = _read_csv(wd / 'results.csv')
  assert len(rows) == 4
  assert [r['outcome'] for r in rows] == ['completed', 'completed', 'completed',
                                          'not learning']
  assert float(rows[0]['eval_top1']) == pytest.approx(0.7)
  assert (wd / 'heatmap.png').stat().st_size > 1000
  history = json.loads((wd / 'submitit_jobs.json').read_text())
  assert len(history) == 1 and history[0]['cluster'] == 'local'
  assert sorted(history[0]['jobs']) == sorted(r['run_name'] for r in rows)
  # Each job ran in its own process through submitit: its logs are there.
  assert list((wd / 'submitit').glob('*_result.pkl'))
  assert '--config.train.total_steps=3' in (wd / rows[0]['run_name'] / 'train.log').read_text()

  capsys.readouterr()
  assert main(_argv(cfg, wd, fake, 'local')) == 0
  out = capsys.readouterr().out
  assert 'nothing to submit' in out
  assert len((wd / 'calls.txt').read_text().split()) == 4        # no run was launched
  assert len(json.loads((wd / 'submitit_jobs.json').read_text())) == 1
  assert len(_read_csv(wd / 'results.csv')) == 4


def test_debug_executor_resubmits_only_unfinished_runs(setup):
  tmp, fake, cfg = setup
  wd = tmp / 'sweep'
  argv = _argv(cfg, wd, fake, 'debug')
  argv[argv.index('model.alpha=0.1,0.2')] = 'model.alpha=0.1,0.3,0.5'
  assert _sweep_main()(argv) == 0
  rows = {r['run_name']: r for r in _read_csv(wd / 'results.csv')}
  assert rows['alpha=0.3,clipping=0.01']['outcome'] == 'failed'
  assert rows['alpha=0.3,clipping=0.01']['detail'] == 'ValueError: boom at alpha 0.3'
  assert rows['alpha=0.5,clipping=None']['outcome'] == 'diverged'
  assert len((wd / 'calls.txt').read_text().split()) == 6
  # Re-run: the two failed runs are submitted again; finished and diverged
  # ones are reused.
  assert _sweep_main()(argv) == 0
  calls = (wd / 'calls.txt').read_text().split()
  assert sorted(calls[6:]) == ['alpha=0.3,clipping=0.01', 'alpha=0.3,clipping=None']


def test_slurm_path_up_to_the_sbatch_script(tmp_path, monkeypatch):
  # submitit's SLURM executor only needs `srun` on PATH to be built.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'srun').write_text('#!/bin/sh\nexit 0\n')
  (bin_dir / 'srun').chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  params = sweep_lib.submitit_parameters(
      {'partition': 'gpu', 'nodes': 2, 'gpus_per_node': 8, 'timeout_min': 240,
       'tasks_per_node': None, 'array_parallelism': 4},
      ['slurm_account=abc', 'slurm_constraint=a100'])
  assert params == {'slurm_partition': 'gpu', 'nodes': 2, 'gpus_per_node': 8,
                    'timeout_min': 240, 'slurm_array_parallelism': 4,
                    'slurm_account': 'abc', 'slurm_constraint': 'a100'}
  # A config module's SUBMITIT dict gives defaults; flags and extras win.
  cfg = tmp_path / 'cfg_submitit.py'
  cfg.write_text("SUBMITIT = {'slurm_partition': 'cpu', 'slurm_qos': 'high', 'nodes': 1}\n"
                 'def get_config(arg=None):\n  return None\n')
  assert sweep_lib.submitit_parameters({'partition': 'gpu', 'nodes': None}, [],
                                       str(cfg)) == {'slurm_partition': 'gpu',
                                                     'slurm_qos': 'high', 'nodes': 1}
  ex = sweep_lib.make_executor(str(tmp_path / 'sub'), 'slurm', params)
  text = ex._executor._make_submission_file_text('CMD', 'uid')  # pylint: disable=protected-access
  for line in ('--partition=gpu', '--nodes=2', '--gpus-per-node=8', '--time=240',
               '--ntasks-per-node=1', '--account=abc', '--constraint=a100',
               '--signal=USR2@90'):
    assert f'#SBATCH {line}\n' in text, line
  assert 'srun' in text


def test_train_job_checkpoint_stops_training_and_requeues_the_same_run(tmp_path):
  # A stand-in training process that checkpoints on SIGTERM like train.py.
  script = tmp_path / 'trainer.py'
  script.write_text(textwrap.dedent(f'''
    import signal, sys, time
    def stop(*_):
      open({str(tmp_path / 'checkpointed')!r}, 'w').close()
      sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    open({str(tmp_path / 'started')!r}, 'w').close()
    time.sleep(60)
  '''))
  job = sweep_lib.TrainJob([sys.executable, str(script)], str(tmp_path / 'run'))
  result = {}
  thread = threading.Thread(target=lambda: result.update(job()))
  thread.start()
  deadline = time.time() + 30
  while not (tmp_path / 'started').exists() and time.time() < deadline:
    time.sleep(0.05)
  requeue = job.checkpoint()
  thread.join(30)
  assert (tmp_path / 'checkpointed').exists()
  assert result['returncode'] == 143
  assert isinstance(requeue, submitit.helpers.DelayedSubmission)
  assert isinstance(requeue.function, sweep_lib.TrainJob)
  assert requeue.function.cmd == job.cmd and requeue.function.run_workdir == job.run_workdir
  record = json.loads((tmp_path / 'run' / sweep_lib.RUN_RECORD).read_text())
  assert record['returncode'] == 143
  assert sweep_lib.classify_run(None, record, [])[0] == 'preempted'
  assert not sweep_lib.is_finished(str(tmp_path / 'run'))   # resumed by the next sweep


def _run_script(args, env=None):
  return subprocess.run([sys.executable, SWEEP_SCRIPT] + args, capture_output=True, text=True,
                        cwd=REPO, env=env)


def test_bad_input_is_one_clear_error_each(setup, tmp_path):
  _, fake, cfg = setup
  base = ['--config', cfg, '--workdir', str(tmp_path / 'w'), '--sweep', 'model.alpha=0.1,0.2']
  res = _run_script(base + ['--launcher', 'slurmm'])
  assert res.returncode == 2
  assert "argument --launcher: invalid choice: 'slurmm'" in res.stderr
  res = _run_script(['--config', cfg, '--workdir', str(tmp_path / 'w'),
                     '--sweep', 'model.alpah=0.1,0.2'])
  assert res.returncode == 2
  assert ('error: config.model.alpah is not a field of this config; did you mean '
          'config.model.alpha?') in res.stderr
  res = _run_script(base + ['--config.train.totl_steps=3'])
  assert res.returncode == 2 and 'config.train.totl_steps is not a field' in res.stderr
  res = _run_script(base + ['--launcher', 'submitit', '--submitit', 'oops'])
  assert res.returncode == 2 and '--submitit must look like key=value' in res.stderr
  # submitit missing: a directory shadowing it with a module that fails to import.
  shadow = tmp_path / 'shadow'
  shadow.mkdir()
  (shadow / 'submitit.py').write_text("raise ImportError('No module named submitit')\n")
  env = dict(os.environ, PYTHONPATH=f'{shadow}{os.pathsep}{REPO}')
  res = _run_script(base + ['--launcher', 'submitit'], env=env)
  assert res.returncode == 2
  assert ("--launcher submitit needs the submitit package: pip install -e '.[cluster]'"
          in res.stderr)
  assert not (tmp_path / 'w').exists()          # nothing was launched
  for r in (res,):
    assert len([l for l in r.stderr.splitlines() if 'error' in l]) == 1


def test_rerun_does_not_resubmit_runs_still_queued_on_slurm(tmp_path):
  wd = tmp_path / 'w'
  wd.mkdir()
  (wd / 'submitit_jobs.json').write_text(json.dumps([
      {'time': 0, 'cluster': 'slurm', 'jobs': {'a': '7_0', 'b': '7_1', 'c': '7_2'}},
      {'time': 1, 'cluster': 'slurm', 'jobs': {'c': '9_0'}},
      {'time': 2, 'cluster': 'local', 'jobs': {'d': '123'}}]))
  states = {'7_0': 'RUNNING', '7_1': 'CANCELLED by 42', '7_2': 'PENDING', '9_0': 'PENDING'}
  seen = []

  def state_fn(folder, job_id):
    seen.append((folder, job_id))
    return states[job_id]

  queued = sweep_lib.still_queued(str(wd), ['a', 'b', 'c', 'd', 'e'], state_fn)
  assert queued == {'a': '7_0', 'c': '9_0'}      # b was cancelled: resubmitted
  assert sorted(j for _, j in seen) == ['7_0', '7_1', '9_0']
  assert all(f == str(wd / 'submitit') for f, _ in seen)
