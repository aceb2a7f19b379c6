"""A lost host, named: 2 processes x 2 fake CPU devices, one SIGKILLed.

The real trainer runs through the README's manual multi-host launch
(``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``).
Process 1 is killed while the second checkpoint is written; the survivor must stop within
``config.train.lost_host_timeout_s`` (plus a margin) with exit status 75 and
one line naming process 1, the last complete checkpoint and the relaunch
command. Relaunching both processes resumes and ends with the same params as
an uninterrupted 2-process run (launched alongside the relaunch).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nfnet_jax import errors
from nfnet_jax.train import lost_host

from conftest import ROOT
from conftest import subprocess_env
TOTAL = 30
CKPT_EVERY = 10
LOST_TIMEOUT = 10.0


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _config(tmp_path, data):
  cfg = tmp_path / 'lost_host_cfg.py'
  cfg.write_text(
      'from nfnet_jax.config import load\n'
      f'fm = load.load_config_module({os.path.join(ROOT, "configs", "fashion_mnist.py")!r})\n'
      'def get_config():\n'
      '  c = fm.get_config("tiny")\n'
      f'  c.data.data_dir = {data!r}\n'
      '  c.model.widths = (8, 8, 8, 8)\n'
      '  c.model.stem_width = 4\n'
      '  c.data.image_size = c.data.eval_image_size = 32\n'
      '  c.train.batch_size = 8\n'
      '  c.train.eval_batch_size = 8\n'
      f'  c.train.total_steps = {TOTAL}\n'
      '  c.optimizer.warmup_steps = 2\n'
      f'  c.train.log_every = {CKPT_EVERY}\n'
      f'  c.train.checkpoint_every = {CKPT_EVERY}\n'
      '  c.train.keep_checkpoints = 20\n'
      '  c.train.compilation_cache_dir = None\n'
      f'  c.train.lost_host_timeout_s = {LOST_TIMEOUT}\n'
      '  c.data.shuffle_buffer = 64\n'
      '  return c\n')
  return str(cfg)


def _data(tmp_path):
  from nfnet_jax.testing import fake_data  # pylint: disable=g-import-not-at-top
  return fake_data.write_fake_fashion_mnist(str(tmp_path / 'idx'), 64, 16)


def _launch(cfg, workdir, port, log_dir, tag):
  procs = []
  for k in range(2):
    env = subprocess_env(devices=2, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                         JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(k))
    env.pop('SLURM_JOB_ID', None)
    log = open(os.path.join(log_dir, f'{tag}{k}.log'), 'w')
    procs.append((subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'scripts', 'train.py'),
         '--config', cfg, '--workdir', workdir],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log))
  return procs


def _wait(procs, timeout):
  deadline = time.time() + timeout
  codes = []
  try:
    for p, _ in procs:
      codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
  finally:
    for p, log in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
      log.close()
  return codes


def _final_params(workdir):
  from nfnet_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  trees, meta = ckpt_lib.load_train_checkpoint(workdir)
  assert meta['step'] == TOTAL
  return trees['params']


def test_relaunch_command_names_every_process():
  env = {'JAX_COORDINATOR_ADDRESS': 'h0:1234', 'JAX_NUM_PROCESSES': '2'}
  cmd = lost_host.relaunch_command(2, ['scripts/train.py', '--config', 'a b.py'],
                                   env)
  assert cmd == (f'JAX_COORDINATOR_ADDRESS=h0:1234 JAX_NUM_PROCESSES=2 '
                 f'JAX_PROCESS_ID=<0..1> {sys.executable} scripts/train.py '
                 "--config 'a b.py' (one per process)")


def test_silent_peer_is_reported_once_with_exit_75(tmp_path):
  exits, released = [], []
  os.makedirs(tmp_path / 'checkpoints' / '20')
  os.makedirs(tmp_path / 'checkpoints' / '30.orbax-checkpoint-tmp-1')
  watch = lost_host.PeerWatch(str(tmp_path), 0, 2, timeout_s=1.0,
                              on_lost=lambda: released.append(1),
                              exit=exits.append, argv=['train.py'])
  peer = lost_host.PeerWatch(str(tmp_path), 1, 2, timeout_s=60.0,
                             exit=lambda c: None)
  time.sleep(1.0)
  assert not exits      # the peer beats
  peer._stop.set()      # pylint: disable=protected-access  # the peer hangs
  deadline = time.time() + 10
  while not exits and time.time() < deadline:
    time.sleep(0.1)
  assert exits == [errors.EXIT_LOST_HOST] and released == [1]
  line = watch.lost_line
  assert line.startswith(f'error: lost process 1 (host {socket.gethostname()}, '
                         f'pid {os.getpid()}): no heartbeat for 3 s'), line
  assert 'process 0 stops, ' in line
  assert f'the last complete checkpoint is {tmp_path}/checkpoints/20;' in line
  assert 'relaunch: ' in line
  watch.close()


def _write_peer_beat(tmp_path, beat):
  info = {'process': 1, 'host': 'another-host', 'pid': 1, 'beat': beat,
          'time': time.time(), 'done': False}
  with open(tmp_path / 'hosts' / 'process_1.json.tmp', 'w') as f:
    json.dump(info, f)
  os.replace(tmp_path / 'hosts' / 'process_1.json.tmp', tmp_path / 'hosts' / 'process_1.json')


def test_a_beat_written_just_before_the_peer_died_is_not_taken_for_life(tmp_path):
  """explain_failure: a peer's last beat, read only after the failure, is the baseline.

  The watcher has seen beat 5; the peer writes beat 6 and dies; the main
  thread's collective fails right after. Beat 6 must not count as "the peer
  beat again since the failure": the lost host is reported (exit 75).
  """
  exits = []
  os.makedirs(tmp_path / 'hosts')
  _write_peer_beat(tmp_path, 5)
  watch = lost_host.PeerWatch(str(tmp_path), 0, 2, timeout_s=1.0,
                              exit=exits.append, argv=['train.py'])
  deadline = time.time() + 10
  while watch._seen.get(1, (None,))[0] != 5 and time.time() < deadline:  # pylint: disable=protected-access
    time.sleep(0.01)
  assert watch._seen[1][0] == 5   # pylint: disable=protected-access
  _write_peer_beat(tmp_path, 6)   # the last beat; then the peer is gone
  watch.explain_failure()         # the main thread's collective just failed
  assert exits == [errors.EXIT_LOST_HOST]
  assert watch.lost_line.startswith('error: lost process 1 (host another-host, pid 1): '
                                    'no heartbeat for 1 s'), watch.lost_line
  watch.close()


def test_explain_failure_after_the_watcher_reported_neither_repeats_nor_hangs(tmp_path):
  """The watcher thread found the lost peer first; then the main thread's collective fails.

  explain_failure must not report a second time, nor wait forever for an
  exit that a test's `exit` never performs (seen in a suite run under load:
  the old code slept an hour when the watcher had won the race).
  """
  exits = []
  os.makedirs(tmp_path / 'hosts')
  _write_peer_beat(tmp_path, 5)   # and never again
  watch = lost_host.PeerWatch(str(tmp_path), 0, 2, timeout_s=0.5,
                              exit=exits.append, argv=['train.py'])
  deadline = time.time() + 10
  while not exits and time.time() < deadline:
    time.sleep(0.01)
  assert exits == [errors.EXIT_LOST_HOST]   # reported by the watcher thread
  t0 = time.time()
  watch.explain_failure()
  assert exits == [errors.EXIT_LOST_HOST] and time.time() - t0 < 5
  watch.close()


def test_explain_failure_returns_while_the_peer_beats(tmp_path):
  exits = []
  watch = lost_host.PeerWatch(str(tmp_path), 0, 2, timeout_s=1.0, exit=exits.append)
  peer = lost_host.PeerWatch(str(tmp_path), 1, 2, timeout_s=1.0, exit=lambda c: None)
  time.sleep(0.5)
  t0 = time.time()
  watch.explain_failure()         # not a lost host: the error is the caller's to raise
  # Back after the peer's next beat (every 0.2 s), not after the 1 s timeout.
  assert not exits and time.time() - t0 < 0.9
  peer.close()
  watch.close()


def test_finished_peer_is_not_lost(tmp_path):
  exits = []
  watch = lost_host.PeerWatch(str(tmp_path), 0, 2, timeout_s=0.6,
                              exit=exits.append)
  peer = lost_host.PeerWatch(str(tmp_path), 1, 2, timeout_s=60.0,
                             exit=lambda c: None)
  peer.close()          # done: writes its last beat with done=True
  time.sleep(2.0)
  assert not exits
  watch.close()


def test_killed_process_is_named_and_relaunch_resumes_exactly(tmp_path):
  data = _data(tmp_path)
  cfg = _config(tmp_path, data)
  logs = str(tmp_path)
  work, ref = str(tmp_path / 'work'), str(tmp_path / 'ref')
  t0 = time.time()
  run = _launch(cfg, work, _free_port(), logs, 'run')
  try:
    deadline = time.time() + 600
    saved = f'saved step {CKPT_EVERY} to'
    while time.time() < deadline and saved not in open(
        os.path.join(logs, 'run0.log')).read():
      assert run[1][0].poll() is None, open(os.path.join(logs, 'run1.log')).read()
      time.sleep(0.05)
    # Kill process 1 while the next checkpoint is being written (the
    # processes meet in the coordination service's barriers then). Killed
    # in the middle of a gloo collective instead, the survivor can be
    # aborted by gloo itself ("terminate called after throwing an instance
    # of 'gloo::EnforceNotMet'") before any Python code runs: see
    # docs/fault_tolerance.md.
    ckpts = os.path.join(work, 'checkpoints')
    nxt = str(2 * CKPT_EVERY)
    while time.time() < deadline and not any(
        n.startswith(nxt) for n in os.listdir(ckpts)):
      time.sleep(0.005)
    run[1][0].send_signal(signal.SIGKILL)
    t_kill = time.time()
    run[1][0].wait()   # reaped, as a shell or srun would
    code0 = _wait(run[:1], 120)[0]
    t_stop = time.time() - t_kill
  finally:
    _wait(run, 5)
  out0 = open(os.path.join(logs, 'run0.log')).read()
  assert code0 == errors.EXIT_LOST_HOST, out0[-3000:]
  assert t_stop < 15, (t_stop, out0[-2000:])   # one beat (2 s) + exit
  # (the line may follow a progress bar's carriage return on the same line)
  lines = re.findall(r'error: .*', out0)
  assert len(lines) == 1, out0[-3000:]
  m = re.match(r'error: lost process 1 \(host \S+, pid (\d+)\): its process is '
               r'gone; process 0 stops, the last complete checkpoint is (\S+)/(\d+); '
               r'relaunch: JAX_COORDINATOR_ADDRESS=127.0.0.1:\d+ '
               r'JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=<0..1> .*scripts/train.py '
               r'--config \S+ --workdir \S+ \(one per process\)$', lines[0])
  assert m, lines[0]
  assert int(m.group(1)) == run[1][0].pid
  last = int(m.group(3))
  assert last in lost_host.finished_steps(os.path.join(work, 'checkpoints'))
  assert 'Traceback' not in out0 and 'Check failure' not in out0, out0[-3000:]
  print(f'\n[lost host] survivor stopped {t_stop:.1f}s after the kill: {lines[0]}')

  # Relaunch both: resumes from a checkpoint and finishes. The uninterrupted
  # reference runs alongside, started only now: its processes load the
  # programs the killed run compiled from the session's compilation cache
  # instead of compiling them a second time at the start.
  again = _launch(cfg, work, _free_port(), logs, 'again')
  reference = _launch(cfg, ref, _free_port(), logs, 'ref')
  assert _wait(again, 600) == [0, 0], open(
      os.path.join(logs, 'again0.log')).read()[-3000:]
  out = open(os.path.join(logs, 'again0.log')).read()
  assert re.search(r'resuming from \S+/checkpoints/\d+', out), out[-2000:]
  assert _wait(reference, 600) == [0, 0], open(
      os.path.join(logs, 'ref0.log')).read()[-3000:]
  a, b = _final_params(work), _final_params(ref)
  import jax  # pylint: disable=g-import-not-at-top
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  print(f'[lost host] test wall time {time.time() - t0:.0f}s')
