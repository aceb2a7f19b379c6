"""The sweep driver SIGKILLed mid-grid, then rerun: no run twice, none lost.

The runs are a stand-in trainer that takes the real workdir lock
(`nfnet_jax.train.workdir_lock`, as ``nfnet-train`` does), counts its launches
and writes the training loop's ``summary.json``; the first grid point blocks
until the test lets it go. The driver (``scripts/sweep.py``, local launcher)
is killed while that run trains; the run keeps going as an orphan. The rerun
driver must wait for it rather than start it again, then run the rest, and
``results.csv`` must list every point as completed.
"""
import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

from conftest import ROOT
from conftest import subprocess_env
SWEEP = os.path.join(ROOT, 'scripts', 'sweep.py')

FAKE_TRAIN = textwrap.dedent('''
  import json, os, sys, time
  sys.path.insert(0, {root!r})
  from nfnet_jax import errors
  from nfnet_jax.train import workdir_lock
  args = sys.argv[1:]
  wd = args[args.index('--workdir') + 1]
  os.makedirs(wd, exist_ok=True)
  lock = errors.exit_on_error(workdir_lock.acquire, wd)
  with open(os.path.join(os.path.dirname(wd), 'calls.txt'), 'a') as f:
    f.write(os.path.basename(wd) + '\\n')
  ov = dict(a[len('--config.'):].split('=', 1) for a in args if a.startswith('--config.'))
  if ov.get('model.alpha') == '0.1':
    go = os.path.join(os.path.dirname(wd), 'go')
    while not os.path.exists(go):
      time.sleep(0.05)
  with open(os.path.join(wd, 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps({{'step': 1, 'split': 'train', 'train/loss': 2.0}}) + '\\n')
    f.write(json.dumps({{'step': 2, 'split': 'train', 'train/loss': 1.0}}) + '\\n')
  with open(os.path.join(wd, 'summary.json'), 'w') as f:
    json.dump({{'status': 'completed', 'final_eval': {{'top1': 0.5, 'loss': 1.0}},
               'best_eval': {{'top1': 0.5}}, 'wall_time_s': 1.0}}, f)
  lock.release()
''')

CONFIG = textwrap.dedent('''
  import ml_collections
  def get_config(arg=None):
    return ml_collections.ConfigDict({
        'model': {'alpha': 0.2}, 'optimizer': {'clipping': 0.01},
        'train': {'total_steps': 10}, 'seed': 0})
''')


def _wait_for(predicate, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.05)
  raise AssertionError(f'timed out waiting for {what}')


def test_killed_driver_rerun_starts_no_run_twice_and_loses_none(tmp_path):
  fake = tmp_path / 'fake_train.py'
  fake.write_text(FAKE_TRAIN.format(root=ROOT))
  cfg = tmp_path / 'cfg.py'
  cfg.write_text(CONFIG)
  wd = tmp_path / 'sweep'
  argv = [sys.executable, SWEEP, '--config', str(cfg), '--workdir', str(wd),
          '--sweep', 'model.alpha=0.1,0.2,0.3', '--parallel', '1',
          '--train_cmd', f'{sys.executable} {fake}']
  env = subprocess_env()
  first_run = wd / 'alpha=0.1'
  driver = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  orphan_pid = None
  try:
    _wait_for(lambda: (first_run / 'train.lock').exists(), 120,
              'the first run to take its lock')
    driver.send_signal(signal.SIGKILL)   # mid-grid: run 1 of 3 is training
    driver.wait(timeout=30)
    import json  # pylint: disable=g-import-not-at-top
    orphan_pid = json.loads((first_run / 'train.lock').read_text())['pid']
    os.kill(orphan_pid, 0)               # the run outlived its driver

    log = tmp_path / 'rerun.log'
    with open(log, 'w') as f:
      rerun = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=f,
                               stderr=subprocess.STDOUT, text=True)
      _wait_for(lambda: 'already running' in log.read_text(), 120,
                'the rerun to find the run in flight')
      time.sleep(1.0)
      assert rerun.poll() is None        # waiting for it, not starting it
      assert (wd / 'calls.txt').read_text().split() == ['alpha=0.1']
      (wd / 'go').write_text('')         # let the orphan finish
      rerun.wait(timeout=120)
    out = log.read_text()
  finally:
    if driver.poll() is None:
      driver.kill()
    if orphan_pid is not None and not (wd / 'go').exists():
      os.kill(orphan_pid, signal.SIGKILL)
  assert rerun.returncode == 0, out[-3000:]
  assert 'alpha=0.1: already running (pid ' in out, [l for l in out.splitlines() if 'alpha=0.1' in l]
  assert 'alpha=0.1: finished under the earlier launcher' in out, out[-3000:]
  # No run started twice, none lost.
  calls = (wd / 'calls.txt').read_text().split()
  assert sorted(calls) == ['alpha=0.1', 'alpha=0.2', 'alpha=0.3'], calls
  with open(wd / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['model.alpha'] for r in rows] == ['0.1', '0.2', '0.3']
  assert [r['outcome'] for r in rows] == ['completed'] * 3, rows
  assert not any((wd / n / 'train.lock').exists() for n in calls)
