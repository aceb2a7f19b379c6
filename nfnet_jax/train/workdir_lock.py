"""One writer per workdir: a lock file with a heartbeat.

``<workdir>/train.lock`` (JSON) names the job that writes the workdir: host,
pid (and the pid's start time, so a recycled pid is not mistaken for the
holder), SLURM job id, start time and a heartbeat that a daemon thread
refreshes every ``min(stale_after_s / 4, 30)`` seconds. A second job that finds it
gets :class:`errors.WorkdirLockedError` (exit status 2) naming the holder,
unless the lock is stale, which is taken over with one line saying why:

* the holder ran on this host and its process is gone;
* the holder ran on another host and its heartbeat is older than
  ``stale_after_s`` (``config.train.lock_stale_after_s``);
* the holder is the same SLURM job (``SLURM_JOB_ID``): a requeued job
  restarts where the old one stopped.

The processes of one multi-host job share the lock: process 0 holds it
(:func:`acquire_for_job` broadcasts the outcome, so every process of a job
that may not write fails the same way).

Creation is atomic (``os.link`` of a private file, which fails when the lock
exists, also on NFS); a takeover replaces the file and reads it back, so of
two jobs taking over the same stale lock at once exactly one keeps it.
"""
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from nfnet_jax import errors
from nfnet_jax.utils.atomic import atomic_write

LOCK_NAME = 'train.lock'
DEFAULT_STALE_AFTER_S = 300.0


def _pid_start_time(pid: int) -> Optional[str]:
  """The start time of process ``pid`` (Linux /proc), None if unknown."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # Field 22 (starttime); the command name (field 2) may hold spaces.
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _pid_alive(pid: int, start: Optional[str]) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass   # exists, another user's
  now = _pid_start_time(pid)
  return start is None or now is None or now == start


def holder_info() -> dict:
  """This process as a lock holder."""
  pid = os.getpid()
  return {
      'host': socket.gethostname(),
      'pid': pid,
      'pid_start': _pid_start_time(pid),
      'job_id': os.environ.get('SLURM_JOB_ID') or None,
      'start_time': time.time(),
      'heartbeat': time.time(),
      'token': uuid.uuid4().hex,
  }


def describe(info: dict) -> str:
  """``pid 123 on host h (SLURM job 7), started 2026-..., heartbeat 3 s ago``."""
  job = f' (SLURM job {info["job_id"]})' if info.get('job_id') else ''
  started = time.strftime('%Y-%m-%d %H:%M:%S',
                          time.localtime(info.get('start_time', 0)))
  age = time.time() - float(info.get('heartbeat', 0))
  return (f'pid {info.get("pid")} on host {info.get("host")}{job}, started '
          f'{started}, heartbeat {age:.0f} s ago')


def read(path: str) -> Optional[dict]:
  """The lock at ``path``; None if absent; {} if unreadable (half written)."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}


def stale_reason(info: dict, stale_after_s: float,
                 me: Optional[dict] = None) -> Optional[str]:
  """Why the lock ``info`` may be taken over, or None (it is held)."""
  me = me or holder_info()
  if not info:
    return 'the lock file is unreadable'
  if info.get('job_id') and info.get('job_id') == me.get('job_id'):
    return f'it is held by this SLURM job ({me["job_id"]}), requeued'
  age = time.time() - float(info.get('heartbeat', 0))
  if info.get('host') == me['host']:
    if not _pid_alive(int(info.get('pid', -1)), info.get('pid_start')):
      return f'its process {info.get("pid")} on this host is gone'
    return None
  if age > stale_after_s:
    return (f'its heartbeat is {age:.0f} s old (> config.train.'
            f'lock_stale_after_s={stale_after_s:g})')
  return None


class WorkdirLock:
  """A held lock; :meth:`release` (or the context manager) gives it back."""

  def __init__(self, path: str, info: dict, interval_s: float,
               log: Callable[[str], None]):
    self.path = path
    self.info = info
    self.log = log
    self.lost = False
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, args=(interval_s,),
                                    name='workdir-lock-heartbeat', daemon=True)
    self._thread.start()

  def _write(self):
    self.info['heartbeat'] = time.time()
    atomic_write(self.path, lambda f: json.dump(self.info, f), binary=False)

  def _beat(self, interval_s: float):
    while not self._stop.wait(interval_s):
      current = read(self.path)
      if current is None or current.get('token') != self.info['token']:
        if current:   # someone else took it over (thought us stale)
          self.lost = True
          self.log(f'[lock] warning: {self.path} was taken over by '
                   f'{describe(current)}; this run no longer holds it')
          return
      try:
        self._write()
      except OSError:
        pass   # a full disk: the next beat tries again

  def release(self):
    self._stop.set()
    self._thread.join(timeout=5)
    current = read(self.path)
    if current and current.get('token') == self.info['token']:
      try:
        os.remove(self.path)
      except OSError:
        pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def acquire(workdir: str, stale_after_s: float = DEFAULT_STALE_AFTER_S,
            log: Callable[[str], None] = print) -> WorkdirLock:
  """Takes ``<workdir>/train.lock`` (see the module docstring).

  Raises:
    errors.WorkdirLockedError: another live job holds it.
  """
  path = os.path.join(workdir, LOCK_NAME)
  info = holder_info()
  mine = f'{path}.{info["token"]}'
  with open(mine, 'w') as f:
    json.dump(info, f)
  try:
    for _ in range(3):
      try:
        os.link(mine, path)   # atomic: fails if the lock exists
        break
      except FileExistsError:
        pass
      holder = read(path)
      if holder is None:
        continue   # released in between: try again
      reason = stale_reason(holder, stale_after_s, info)
      if reason is None:
        raise errors.WorkdirLockedError(
            f'workdir {workdir} is in use by another run: {describe(holder)}',
            hint=(f'wait for it, stop it, or use another --workdir (if that '
                  f'run is gone, delete {path})'))
      os.replace(mine, path)
      time.sleep(0.05)
      if (read(path) or {}).get('token') != info['token']:
        continue   # another job took it over at the same moment
      log(f'[lock] took over the lock of {workdir}: {reason} (was '
          f'{describe(holder)})')
      break
    else:
      raise errors.WorkdirLockedError(
          f'workdir {workdir}: could not take its lock {path} (several runs '
          'are starting on it at once)')
  finally:
    if os.path.exists(mine):
      os.remove(mine)
  return WorkdirLock(path, info, min(30.0, max(0.5, stale_after_s / 4)), log)


def acquire_for_job(workdir: str, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                    log: Callable[[str], None] = print
                    ) -> Optional[WorkdirLock]:
  """:func:`acquire` by process 0 of a (multi-host) job, outcome shared.

  Returns the lock on process 0, None on the others.

  Raises:
    errors.WorkdirLockedError: on every process, when process 0 could not
      take the lock.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return acquire(workdir, stale_after_s, log)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  lock, failure = None, None
  if jax.process_index() == 0:
    try:
      lock = acquire(workdir, stale_after_s, log)
    except errors.WorkdirLockedError as e:
      failure = e
  ok = multihost_utils.broadcast_one_to_all(np.int32(failure is None))
  if failure is not None:
    raise failure
  if not int(ok):
    raise errors.WorkdirLockedError(
        f'workdir {workdir} is in use by another run (named by process 0)')
  return lock
