"""Asynchronous checkpoint saves, and save failures as one clear line.

A full disk is made real without root tricks: RLIMIT_FSIZE caps the size of
any file this process writes (with SIGXFSZ ignored, a larger write fails with
EFBIG, "File too large"), which orbax's background writer hits exactly as it
would hit ENOSPC.
"""
import contextlib
import resource
import signal

import numpy as np
import pytest

from nfnet_jax.train import checkpoint as ckpt_lib

# After a failed background write, orbax's event loop is closed while a
# callback is still queued; Python reports that as "unraisable". Harmless.
_ORBAX_CLOSED_LOOP = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


def _state(n, seed):
  rng = np.random.default_rng(seed)
  return {'params': {'w': rng.standard_normal(n).astype(np.float32),
                     'b': rng.standard_normal(3).astype(np.float32)},
          'step': np.asarray(seed, np.int32)}


@contextlib.contextmanager
def _file_size_limit(nbytes):
  old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
  old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old_limit[1]))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def _assert_equal(a, b):
  for x, y in zip(sorted(_leaves(a)), sorted(_leaves(b))):
    assert x[0] == y[0]
    np.testing.assert_array_equal(x[1], y[1])


def _leaves(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _leaves(v, f'{prefix}/{k}')
  else:
    yield prefix, np.asarray(tree)


def test_async_saves_restore_exactly(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'ck'), keep=2, async_save=True)
  states = {s: _state(1000, s) for s in (1, 2, 3)}
  for s, st in states.items():
    assert ck.save(s, st)        # returns while the write is in flight
  ck.wait()
  assert ck.steps() == [2, 3]    # keep=2
  restored, meta, step = ck.restore_latest(_state(1000, 0))
  assert step == 3 and meta['step'] == 3
  _assert_equal(restored, states[3])
  ck.close()
  # A fresh reader (e.g. a resumed run) sees the same.
  ck2 = ckpt_lib.Checkpointer(str(tmp_path / 'ck'), keep=2)
  restored, _, step = ck2.restore_latest(_state(1000, 0))
  assert step == 3
  _assert_equal(restored, states[3])
  ck2.close()


@_ORBAX_CLOSED_LOOP
@pytest.mark.parametrize('async_save', [True, False])
def test_failed_save_is_one_line_naming_path_error_and_last_good(tmp_path, async_save):
  d = tmp_path / 'ck'
  ck = ckpt_lib.Checkpointer(str(d), keep=3, async_save=async_save)
  good = _state(100, 1)
  ck.save(1, good)
  ck.wait()
  with _file_size_limit(64 * 1024):
    with pytest.raises(ckpt_lib.CheckpointSaveError) as e:
      ck.save(2, _state(200_000, 2))   # 800 kB > 64 kB
      ck.wait()                        # async: the failure surfaces here
  msg = str(e.value)
  assert '\n' not in msg
  assert f'checkpoint {d}/2 could not be written: File too large (errno 27)' in msg
  assert f'the last good checkpoint is {d}/1 (a rerun resumes from it)' in msg
  ck.close()
  # The previous checkpoint survived and is what a rerun resumes from.
  ck2 = ckpt_lib.Checkpointer(str(d))
  restored, _, step = ck2.restore_latest(_state(100, 0))
  assert step == 1
  _assert_equal(restored, good)
  ck2.close()


@_ORBAX_CLOSED_LOOP
def test_async_failure_is_reported_by_close_and_by_the_next_save(tmp_path):
  d = tmp_path / 'ck'
  ck = ckpt_lib.Checkpointer(str(d), async_save=True)
  with _file_size_limit(64 * 1024):
    ck.save(5, _state(200_000, 5))
    with pytest.raises(ckpt_lib.CheckpointSaveError, match=r'/5 could not be written.*'
                       r'no earlier checkpoint exists'):
      ck.wait()
  # Failure of a background save is reported by whatever waits next: here
  # the next save (it is named after the failed step, not the new one).
  with _file_size_limit(64 * 1024):
    ck.save(6, _state(200_000, 6))
    with pytest.raises(ckpt_lib.CheckpointSaveError, match=r'/6 could not be written'):
      ck.save(7, _state(100, 7))
  ck.save(8, _state(100, 8))
  with contextlib.suppress(ckpt_lib.CheckpointSaveError):
    ck.close()
  ck2 = ckpt_lib.Checkpointer(str(d))
  assert ck2.steps() == [8]
  ck2.close()


def test_permission_denied_is_described(tmp_path):
  # Running as root, file modes do not refuse writes: the OS error is raised
  # where orbax would raise it.
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'ck'))

  def refuse(*args, **kwargs):
    raise PermissionError(13, 'Permission denied', str(tmp_path / 'ck' / '3'))
  ck._manager.save = refuse  # pylint: disable=protected-access
  with pytest.raises(ckpt_lib.CheckpointSaveError,
                     match=r'/ck/3 could not be written: Permission denied \(errno 13\); '
                           r'no earlier checkpoint exists'):
    ck.save(3, _state(10, 3))
  ck.close()


def test_orbax_wrapped_os_errors_are_described():
  inner = ValueError('RESOURCE_EXHAUSTED: Error writing "000000/0" in OCDBT database: '
                     "Failed to write 553638 bytes to file 11: No space left on device "
                     "[os_error_code='28']")
  assert ckpt_lib.describe_save_error(inner) == 'No space left on device (errno 28)'
  try:
    try:
      raise OSError(28, 'No space left on device')
    except OSError as e:
      raise RuntimeError('wrapper') from e
  except RuntimeError as e:
    assert ckpt_lib.describe_save_error(e) == 'No space left on device (errno 28)'
  assert ckpt_lib.describe_save_error(KeyError('x')).startswith('KeyError')


@_ORBAX_CLOSED_LOOP
def test_command_line_disk_full_ends_with_one_line_and_exit_2(tmp_path, fake_fashion_mnist):
  """The real training command with async saves: the disk 'fills up' after
  the step-5 checkpoint, so the background write of the final (step 10)
  checkpoint fails; the run ends with one line and exit status 2."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import ROOT, subprocess_env  # pylint: disable=g-import-not-at-top
  data_dir = fake_fashion_mnist
  work = tmp_path / 'work'
  argv = ['train.py', '--config', os.path.join(ROOT, 'configs', 'fashion_mnist.py') + ':local',
          '--workdir', str(work), f'--config.data.data_dir={data_dir}',
          '--config.train.batch_size=16', '--config.train.total_steps=10',
          '--config.train.checkpoint_every=5', '--config.optimizer.warmup_steps=2',
          '--config.train.async_checkpoints=on', '--config.train.compilation_cache_dir=None']
  code = f'''
import resource, signal, sys
from nfnet_jax.train import checkpoint as ck
real_save = ck.Checkpointer.save
def save(self, step, state, meta=None):
  if step >= 10:   # the disk is full from here on
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))
  return real_save(self, step, state, meta)
ck.Checkpointer.save = save
from nfnet_jax.commands import entry
entry.run('train', {argv!r}[1:])
'''
  env = subprocess_env(devices=1, cache_dir=str(tmp_path / 'jax_cache'))
  env.pop('JAX_COMPILATION_CACHE_DIR')
  proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                        text=True, timeout=600, cwd=ROOT)
  assert proc.returncode == 2, proc.stderr[-3000:]
  err = proc.stderr
  ckpts = work / 'checkpoints'
  want = (f'error: checkpoint {ckpts}/10 could not be written: File too large (errno 27); '
          f'the last good checkpoint is {ckpts}/5 (a rerun resumes from it)')
  assert want in err, err[-3000:]
  assert 'Traceback' not in err, err[-3000:]
  # The last good step stays; the step whose write failed is not there.
  names = os.listdir(ckpts)
  assert '5' in names and '10' not in names, names
