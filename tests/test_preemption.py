"""Pre-emption: kill -9 / SIGTERM the real training command and resume it.

The end-to-end test starts ``scripts/train.py`` (the Fashion-MNIST config in
its tiny ``local`` mode, on small idx files written here, 2 fake CPU
devices) as a subprocess and

1. runs it uninterrupted to the end (the reference);
2. runs it again in another workdir, SIGKILLs it once a checkpoint exists
   (while a checkpoint is being written, if the poll catches one), corrupts
   the newest checkpoint and plants a half-written orbax temp directory and a
   half-copied step directory, restarts the same command (which must report
   the unreadable checkpoints and fall back to an older one), SIGTERMs it
   (exit 143 after a final checkpoint at exactly the step reached), and
   restarts it again to the end;

and then requires identical final train states (params, EMA, optimizer
state, counters), identical ``summary.json`` eval/train metrics and identical
deterministic columns of ``metrics.jsonl``.

The checkpoint-level tests below exercise the same guarantees in-process:
half-written temporaries are never listed, corrupt (truncated, missing,
bit-flipped, empty) newest checkpoints are reported, moved aside and the
previous one is used, non-finite states are never written.

A persistent JAX compilation cache shared by the subprocesses keeps the
repeated launches cheap (the first one compiles, the others load).
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nfnet_jax.testing import fake_data
from nfnet_jax.train import checkpoint as ckpt_lib

from conftest import ROOT
from conftest import subprocess_env
TOTAL_STEPS = 40          # 2.5 epochs of the 256-image train split
CKPT_EVERY = 4
TMP_SUFFIX = '.orbax-checkpoint-tmp'


def write_idx_dataset(directory, n_train=256, n_test=64, seed=0):
  """Small Fashion-MNIST-shaped idx files (random pixels, cyclic labels)."""
  return fake_data.write_fake_fashion_mnist(directory, n_train, n_test, seed)


def train_command(workdir, data_dir):
  return [
      sys.executable, os.path.join(ROOT, 'scripts', 'train.py'),
      '--config', os.path.join(ROOT, 'configs', 'fashion_mnist.py') + ':local',
      '--workdir', workdir,
      f'--config.data.data_dir={data_dir}',
      '--config.train.batch_size=16',
      '--config.train.eval_batch_size=32',
      f'--config.train.total_steps={TOTAL_STEPS}',
      f'--config.train.checkpoint_every={CKPT_EVERY}',
      '--config.train.keep_checkpoints=3',
      '--config.train.log_every=2',
      '--config.train.eval_every=12',
      '--config.optimizer.warmup_steps=4',
      # Saves in the background, as on accelerators: kills, SIGTERM and
      # corruption must resume exactly with async writes too.
      '--config.train.async_checkpoints=on',
  ]


class Run:
  """A training subprocess whose output goes to a log file."""

  def __init__(self, cmd, env, log_path):
    self.log_path = log_path
    self._log = open(log_path, 'w')
    self.proc = subprocess.Popen(cmd, env=env, stdout=self._log,
                                 stderr=subprocess.STDOUT, cwd=ROOT)

  def wait(self, timeout):
    try:
      return self.proc.wait(timeout=timeout)
    finally:
      self._log.close()

  def output(self) -> str:
    with open(self.log_path) as f:
      return f.read()

  def kill(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait(timeout=30)
    if not self._log.closed:
      self._log.close()


def finalized_steps(ckpt_dir):
  out = []
  for name in os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []:
    if name.isdigit():
      out.append(int(name))
  return sorted(out)


def tmp_dirs(ckpt_dir):
  if not os.path.isdir(ckpt_dir):
    return []
  return [n for n in os.listdir(ckpt_dir) if TMP_SUFFIX in n]


def wait_for(predicate, run, timeout, poll=0.01):
  """Polls ``predicate()`` until true; fails if the run exits or times out."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = predicate()
    if value:
      return value
    if run.proc.poll() is not None:
      pytest.fail(f'the run exited ({run.proc.returncode}) before the '
                  f'awaited moment:\n{run.output()[-3000:]}')
    time.sleep(poll)
  run.kill()
  pytest.fail(f'timed out after {timeout}s:\n{run.output()[-3000:]}')


def read_checkpoint(ckpt_dir, step):
  """The raw flat state (``{'000000': array, ...}``) and metadata of a step."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager(ckpt_dir)
  try:
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return ({k: np.asarray(v) for k, v in out['state'].items()},
            dict(out['meta']))
  finally:
    mngr.close()


def _deterministic_rows(workdir):
  """metrics.jsonl rows without wall-clock columns, keyed by (split, step)."""
  rows = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      r = json.loads(line)
      key = (r['split'], r['step'])
      assert key not in rows, f'duplicate metrics row {key} in {workdir}'
      rows[key] = {k: v for k, v in r.items()
                   if not k.endswith('_per_s') and k != 'time'}
  return rows


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    s = json.load(f)
  return {k: s[k] for k in ('status', 'step', 'final_eval', 'best_eval',
                            'final_train', 'skipped_steps')}


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
  root = tmp_path_factory.mktemp('preempt')
  data_dir = write_idx_dataset(str(root / 'data'))
  cache = str(root / 'jax_cache')
  return root, data_dir, subprocess_env(devices=2, cache_dir=cache)


def _corrupt_newest_and_plant_partials(ckpt_dir):
  """Truncates the newest checkpoint's data; plants half-written dirs.

  Returns (corrupted step, planted step numbers).
  """
  steps = finalized_steps(ckpt_dir)
  assert len(steps) >= 2, steps
  newest = steps[-1]
  files = [f for f in glob.glob(os.path.join(ckpt_dir, str(newest), 'state',
                                             '**'), recursive=True)
           if os.path.isfile(f) and os.sep + 'd' + os.sep in f]
  assert files, os.listdir(os.path.join(ckpt_dir, str(newest), 'state'))
  for f in files:  # every data file cut in half, as by a full disk
    size = os.path.getsize(f)
    with open(f, 'r+b') as fh:
      fh.truncate(size // 2)
  # An orbax temporary directory of a later step, as left by a kill during a
  # save: never finalized, must never be listed or restored.
  tmp = os.path.join(ckpt_dir, f'{newest + 8}{TMP_SUFFIX}-1234567890')
  shutil.copytree(os.path.join(ckpt_dir, str(steps[-2])), tmp)
  # A half-copied step directory (e.g. an interrupted rsync): a plausible
  # name, a metadata file, no arrays.
  half = os.path.join(ckpt_dir, str(newest + 4))
  os.makedirs(os.path.join(half, 'state'))
  shutil.copy(os.path.join(ckpt_dir, str(steps[-2]), '_CHECKPOINT_METADATA'),
              half)
  return newest, (newest + 4, newest + 8)


def test_sigkill_sigterm_and_corruption_resume_exactly(workspace):
  root, data_dir, env = workspace
  t0 = time.time()

  # 1. The reference: never interrupted.
  ref_dir = str(root / 'reference')
  ref = Run(train_command(ref_dir, data_dir), env, str(root / 'ref.log'))
  try:
    assert ref.wait(timeout=600) == 0, ref.output()[-3000:]
  finally:
    ref.kill()
  ref_ckpts = os.path.join(ref_dir, 'checkpoints')
  assert finalized_steps(ref_ckpts)[-1] == TOTAL_STEPS

  # 2a. SIGKILL: preferably while a checkpoint (step >= 12) is being written,
  # else right after one is finalized.
  work = str(root / 'interrupted')
  ckpts = os.path.join(work, 'checkpoints')
  cmd = train_command(work, data_dir)
  run = Run(cmd, env, str(root / 'run1.log'))
  try:
    def moment():
      if any(int(n.split('.')[0]) >= 12 for n in tmp_dirs(ckpts)):
        return 'mid-save'
      if any(s >= 16 for s in finalized_steps(ckpts)):
        return 'after-save'
      return None
    when = wait_for(moment, run, timeout=600, poll=0.005)
    run.proc.send_signal(signal.SIGKILL)
    assert run.wait(timeout=60) == -signal.SIGKILL
  finally:
    run.kill()
  assert not os.path.exists(os.path.join(work, 'summary.json'))
  killed_steps = finalized_steps(ckpts)
  assert killed_steps and killed_steps[-1] < TOTAL_STEPS, killed_steps
  print(f'SIGKILL {when}; finalized checkpoints {killed_steps}, '
        f'temporaries {tmp_dirs(ckpts)}')

  corrupted, planted = _corrupt_newest_and_plant_partials(ckpts)
  fallback = finalized_steps(ckpts)
  fallback = [s for s in fallback if s < corrupted][-1]

  # 2b. Restart: the unreadable checkpoints are reported and set aside, the
  # temporary is ignored, training resumes from the last good one. SIGTERM
  # once it has written a new checkpoint.
  run = Run(cmd, env, str(root / 'run2.log'))
  try:
    wait_for(lambda: any(s > fallback and s not in (corrupted,) + planted
                         for s in finalized_steps(ckpts)), run, timeout=600)
    run.proc.send_signal(signal.SIGTERM)
    rc = run.wait(timeout=300)
  finally:
    run.kill()
  out = run.output()
  assert rc == 143, out[-3000:]
  for step in (corrupted, planted[0]):
    assert re.search(rf'checkpoint \S+/{step} is unreadable', out), out[-3000:]
  assert f'resuming from {ckpts}/{fallback}' in out, out[-3000:]
  m = re.search(r'SIGTERM received: checkpointing step (\d+)', out)
  assert m, out[-3000:]
  term_step = int(m.group(1))
  assert fallback < term_step < TOTAL_STEPS
  assert finalized_steps(ckpts)[-1] == term_step
  state, meta = read_checkpoint(ckpts, term_step)
  assert meta['step'] == term_step
  step_leaf = [k for k, p in zip(sorted(state), meta['paths'])
               if p == '.step' or p.endswith('step')]
  assert int(state[step_leaf[0]]) == term_step
  moved = os.listdir(os.path.join(work, 'corrupt_checkpoints'))
  assert sorted(int(n.split('-')[0]) for n in moved) == sorted(
      [corrupted, planted[0]])
  assert not os.path.exists(os.path.join(work, 'summary.json'))

  # 2c. Restart to the end.
  run = Run(cmd, env, str(root / 'run3.log'))
  try:
    assert run.wait(timeout=600) == 0, run.output()[-3000:]
  finally:
    run.kill()
  assert f'resuming from {ckpts}/{term_step}' in run.output()

  # 3. Identical end state and metrics.
  ref_state, ref_meta = read_checkpoint(ref_ckpts, TOTAL_STEPS)
  got_state, got_meta = read_checkpoint(ckpts, TOTAL_STEPS)
  assert ref_meta['paths'] == got_meta['paths']
  assert set(ref_state) == set(got_state)
  for k, path in zip(sorted(ref_state), ref_meta['paths']):
    np.testing.assert_array_equal(got_state[k], ref_state[k], err_msg=path)
  assert _summary(work) == _summary(ref_dir)
  assert _deterministic_rows(work) == _deterministic_rows(ref_dir)
  print(f'end-to-end pre-emption test: {time.time() - t0:.0f}s wall')


# ---------------------------------------------------------------------------
# Checkpoint-level guarantees (in-process, fast)


def _state(seed=0):
  rng = np.random.default_rng(seed)
  return {'params': {'w': rng.normal(size=(32, 16)).astype(np.float32),
                     'b': rng.normal(size=(16,)).astype(np.float32)},
          'step': np.asarray(seed, np.int32)}


def _assert_state_equal(a, b):
  np.testing.assert_array_equal(a['params']['w'], b['params']['w'])
  np.testing.assert_array_equal(a['params']['b'], b['params']['b'])
  assert int(a['step']) == int(b['step'])


def _data_files(step_dir):
  return sorted((f for f in glob.glob(os.path.join(step_dir, 'state', '**'),
                                      recursive=True)
                 if os.path.isfile(f) and os.sep + 'd' + os.sep in f),
                key=os.path.getsize)


def _truncate(step_dir):
  for f in _data_files(step_dir):
    with open(f, 'r+b') as fh:
      fh.truncate(os.path.getsize(f) // 3)


def _flip_bytes(step_dir):
  # Bit rot in the middle of the largest array file: still a structurally
  # valid file, so only a content check can notice.
  f = _data_files(step_dir)[-1]
  data = bytearray(open(f, 'rb').read())
  mid = len(data) // 2
  for i in range(mid, mid + 16):
    data[i] ^= 0x5A
  with open(f, 'wb') as fh:
    fh.write(bytes(data))


def _remove_state(step_dir):
  shutil.rmtree(os.path.join(step_dir, 'state'))


def _empty_dir(step_dir):
  shutil.rmtree(step_dir)
  os.makedirs(step_dir)


def _garbage_meta(step_dir):
  for f in glob.glob(os.path.join(step_dir, 'meta', '*')):
    if not f.endswith('commit_success.txt'):
      with open(f, 'w') as fh:
        fh.write('{"paths": [tru')


@pytest.mark.parametrize('corrupt', [_truncate, _flip_bytes, _remove_state,
                                     _empty_dir, _garbage_meta],
                         ids=lambda f: f.__name__.strip('_'))
def test_corrupt_newest_checkpoint_is_reported_and_previous_used(
    tmp_path, corrupt):
  logs = []
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'), keep=5,
                             log=logs.append, async_save=True)
  for step in (1, 2, 3):
    assert ck.save(step, _state(step))
  ck.close()   # waits for the background write of step 3
  corrupt(str(tmp_path / 'checkpoints' / '3'))

  ck = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'), keep=5,
                             log=logs.append)
  state, meta, step = ck.restore_latest(_state(0))
  assert step == 2 and meta['step'] == 2
  _assert_state_equal(state, _state(2))
  assert len(logs) == 1 and re.search(r'checkpoint \S+/3 is unreadable',
                                      logs[0]), logs
  assert 'previous' in logs[0]
  # Moved aside for inspection, out of the way of the next save of step 3.
  assert ck.steps() == [1, 2]
  assert [n.split('-')[0] for n in os.listdir(
      tmp_path / 'corrupt_checkpoints')] == ['3']
  assert ck.save(3, _state(3))
  _assert_state_equal(ck.restore_latest(_state(0))[0], _state(3))
  ck.close()


def test_half_written_temporary_checkpoint_is_never_used(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  ck = ckpt_lib.Checkpointer(directory, keep=5)
  assert ck.save(1, _state(1))
  assert ck.save(2, _state(2))
  ck.close()
  # What a kill during the save of step 3 leaves: the temporary directory
  # with some (here: all, even) of the files, never renamed to '3'.
  tmp = os.path.join(directory, f'3{TMP_SUFFIX}-1700000000')
  shutil.copytree(os.path.join(directory, '2'), tmp)
  _truncate(tmp)
  # ... and a stray temporary of an older step.
  os.makedirs(os.path.join(directory, f'1{TMP_SUFFIX}-1600000000', 'state'))

  ck = ckpt_lib.Checkpointer(directory, keep=5)
  assert ck.steps() == [1, 2]
  assert ck.latest_step() == 2
  state, _, step = ck.restore_latest(_state(0))
  assert step == 2
  _assert_state_equal(state, _state(2))
  # Saving step 3 for real is not disturbed by the leftover.
  assert ck.save(3, _state(3))
  _assert_state_equal(ck.restore_latest(_state(0))[0], _state(3))
  ck.close()


def test_all_checkpoints_unreadable_means_fresh_start(tmp_path):
  logs = []
  directory = str(tmp_path / 'checkpoints')
  ck = ckpt_lib.Checkpointer(directory, keep=5, log=logs.append)
  assert ck.save(5, _state(5))
  ck.close()
  _truncate(os.path.join(directory, '5'))
  ck = ckpt_lib.Checkpointer(directory, keep=5, log=logs.append)
  assert ck.restore_latest(_state(0)) is None
  assert len(logs) == 1 and '/5 is unreadable' in logs[0]
  ck.close()


def test_nonfinite_state_is_never_checkpointed(tmp_path):
  logs = []
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'), keep=5,
                             log=logs.append)
  assert ck.save(1, _state(1))
  for bad in (np.nan, np.inf, -np.inf):
    s = _state(2)
    s['params']['b'][3] = bad
    assert ck.save(2, s) is False
  assert ck.steps() == [1]
  assert len(logs) == 3 and all('NOT saving step 2' in l for l in logs)
  ck.close()


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'), keep=5)
  assert ck.save(1, _state(1))
  other = _state(0)
  other['params']['w'] = np.zeros((32, 8), np.float32)
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match=r"\['params'\]\['w'\] has shape \(32, 16\)"):
    ck.restore_latest(other)
  renamed = {'params': {'kernel': other['params']['w']}, 'step': other['step']}
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='fresh --workdir'):
    ck.restore_latest(renamed)
  # A mismatch is not corruption: the checkpoint stays where it is.
  assert ck.steps() == [1]
  ck.close()
