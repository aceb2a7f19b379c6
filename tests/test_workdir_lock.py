"""One writer per workdir: the lock file, its heartbeat, stale takeovers.

Each case builds the holder it needs (a live process, a dead one, another
host, the same SLURM job) and checks who gets the lock and what is said.
"""
import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr

import pytest

from nfnet_jax import errors
from nfnet_jax.train import workdir_lock

from conftest import ROOT


def _plant(workdir, **fields):
  info = workdir_lock.holder_info()
  info.update(fields)
  with open(os.path.join(workdir, workdir_lock.LOCK_NAME), 'w') as f:
    json.dump(info, f)
  return info


def _dead_pid():
  p = subprocess.Popen([sys.executable, '-c', 'pass'])
  p.wait()
  return p.pid


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch):
  monkeypatch.delenv('SLURM_JOB_ID', raising=False)


def test_second_acquire_names_the_holder_and_release_frees_it(tmp_path):
  logs = []
  lock = workdir_lock.acquire(str(tmp_path), log=logs.append)
  info = json.loads((tmp_path / 'train.lock').read_text())
  assert info['pid'] == os.getpid() and info['host'] == socket.gethostname()
  assert {'start_time', 'heartbeat', 'job_id', 'token'} <= set(info)
  with pytest.raises(errors.WorkdirLockedError) as e:
    workdir_lock.acquire(str(tmp_path), log=logs.append)
  assert f'pid {os.getpid()} on host {socket.gethostname()}' in str(e.value)
  assert e.value.exit_code == 2 and 'train.lock' in e.value.hint
  assert not logs
  lock.release()
  assert not (tmp_path / 'train.lock').exists()
  workdir_lock.acquire(str(tmp_path)).release()
  # No private files are left behind.
  assert os.listdir(tmp_path) == []


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
  pid = _dead_pid()
  _plant(str(tmp_path), pid=pid, pid_start=None)
  logs = []
  lock = workdir_lock.acquire(str(tmp_path), log=logs.append)
  assert len(logs) == 1, logs
  assert f'its process {pid} on this host is gone' in logs[0]
  assert json.loads((tmp_path / 'train.lock').read_text())['pid'] == os.getpid()
  lock.release()


def test_recycled_pid_is_not_mistaken_for_the_holder(tmp_path):
  # The holder's pid now belongs to another process (our own here): its
  # start time differs, so the lock is stale.
  _plant(str(tmp_path), pid_start='1')
  logs = []
  workdir_lock.acquire(str(tmp_path), log=logs.append).release()
  assert 'is gone' in logs[0]


def test_other_host_fresh_heartbeat_holds_old_heartbeat_is_stale(tmp_path):
  _plant(str(tmp_path), host='elsewhere-node', pid=1, heartbeat=time.time() - 5)
  with pytest.raises(errors.WorkdirLockedError, match='on host elsewhere-node'):
    workdir_lock.acquire(str(tmp_path), stale_after_s=60)
  _plant(str(tmp_path), host='elsewhere-node', pid=1,
         heartbeat=time.time() - 120)
  logs = []
  workdir_lock.acquire(str(tmp_path), stale_after_s=60,
                       log=logs.append).release()
  assert len(logs) == 1 and 'heartbeat is 120 s old' in logs[0], logs
  assert 'lock_stale_after_s=60' in logs[0]


def test_requeued_slurm_job_takes_over_its_own_lock(tmp_path, monkeypatch):
  monkeypatch.setenv('SLURM_JOB_ID', '4242')
  # The old incarnation of job 4242 on another node, heartbeat fresh.
  _plant(str(tmp_path), host='node-a', pid=1, job_id='4242')
  logs = []
  workdir_lock.acquire(str(tmp_path), log=logs.append).release()
  assert 'this SLURM job (4242), requeued' in logs[0]
  # Another job's lock is not taken.
  _plant(str(tmp_path), host='node-a', pid=1, job_id='17')
  with pytest.raises(errors.WorkdirLockedError, match='SLURM job 17'):
    workdir_lock.acquire(str(tmp_path))


def test_heartbeat_is_refreshed_by_a_thread(tmp_path):
  lock = workdir_lock.acquire(str(tmp_path), stale_after_s=2.0)  # beat 0.5 s
  first = json.loads((tmp_path / 'train.lock').read_text())['heartbeat']
  deadline = time.time() + 10
  while time.time() < deadline:
    time.sleep(0.2)
    beat = json.loads((tmp_path / 'train.lock').read_text())['heartbeat']
    if beat > first:
      break
  assert beat > first
  lock.release()


def test_unreadable_lock_file_is_taken_over(tmp_path):
  (tmp_path / 'train.lock').write_text('{"host": ')   # a half-written file
  logs = []
  workdir_lock.acquire(str(tmp_path), log=logs.append).release()
  assert 'unreadable' in logs[0]


_HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from nfnet_jax.train import workdir_lock
lock = workdir_lock.acquire({workdir!r})
print('held', flush=True)
time.sleep(120)
"""


def test_train_command_on_a_held_workdir_exits_2_naming_the_holder(tmp_path):
  """The second writer: nfnet-train exits 2 before compiling anything."""
  from nfnet_jax.commands import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'work'
  workdir.mkdir()
  holder = subprocess.Popen(
      [sys.executable, '-c', _HOLD.format(root=ROOT, workdir=str(workdir))],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    before = (workdir / 'train.lock').read_bytes()
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as e:
      train.main(['--config',
                os.path.join(ROOT, 'configs', 'fashion_mnist.py:tiny'),
                '--workdir', str(workdir),
                f'--config.data.data_dir={_idx_dir(tmp_path)}',
                '--config.parallel.num_devices=1',
                '--config.train.compilation_cache_dir=None'])
    assert e.value.code == 2
    lines = err.getvalue().strip().splitlines()
    assert lines[0].startswith(f'error: workdir {workdir} is in use by another '
                               f'run: pid {holder.pid} on host '), lines
    assert len(lines) == 2 and lines[1].startswith('hint: '), lines
    assert (workdir / 'train.lock').read_bytes() == before
    assert sorted(os.listdir(workdir)) == ['train.lock']
  finally:
    holder.kill()
    holder.wait()


def _idx_dir(tmp_path):
  from nfnet_jax.testing import fake_data  # pylint: disable=g-import-not-at-top
  return fake_data.write_fake_fashion_mnist(str(tmp_path / 'idx'), 32, 16)
