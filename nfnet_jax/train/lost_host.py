"""A lost host, named: every process of a multi-host job watches the others.

When one process of a job dies (SIGKILL, a crashed host, a lost network),
the others block in their next collective; JAX's coordination service aborts
them only after its heartbeat timeout (100 s) with a C++ check failure.
Instead, each process runs a :class:`PeerWatch`: a daemon thread writes
``<workdir>/hosts/process_<k>.json`` (host, pid, a counter) every
``min(timeout_s / 5, 5)`` seconds and reads the others' files. A peer is
lost when its process is gone (a peer on this host: checked by pid, within
one beat) or when its counter has not changed for ``timeout_s``
(``config.train.lost_host_timeout_s``; 3x that for a live process on this
host), measured on the reader's own monotonic clock, so clock skew between
hosts does not matter, and not counting time this process itself was
starved of the interpreter (a long import). The watcher prints one line naming it, the last
complete checkpoint and the command that relaunches the job, and ends the
process with ``errors.EXIT_LOST_HOST`` (75), whatever the main thread is
blocked in. The workdir must be shared by the hosts (as the checkpoints
already require).

A main thread that fails first (a collective that errors out when its peer
vanishes) calls :meth:`PeerWatch.explain_failure`, which waits for the
verdict (at most ``timeout_s``) and reports the lost host in the same way, or
returns to let the error propagate when every peer is alive.
"""
import json
import os
import shlex
import socket
import sys
import threading
import time
from typing import Callable, Optional

from nfnet_jax import errors
from nfnet_jax.utils.atomic import atomic_write

DEFAULT_TIMEOUT_S = 30.0
HOSTS_DIR = 'hosts'
_LAUNCH_VARS = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES')


def finished_steps(checkpoint_dir: str) -> list[int]:
  """Finalized checkpoint steps (orbax renames a step dir when complete)."""
  try:
    names = os.listdir(checkpoint_dir)
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit() and
                os.path.isdir(os.path.join(checkpoint_dir, n)))


def relaunch_command(num_processes: int, argv=None, env=None) -> str:
  """The command that relaunches every process of the job, as one line."""
  argv = list(sys.argv if argv is None else argv)
  env = os.environ if env is None else env
  if argv and not os.path.isabs(argv[0]) and argv[0].endswith('.py'):
    argv = [sys.executable] + argv
  elif argv and argv[0].endswith('.py'):
    argv = [sys.executable] + argv
  cmd = shlex.join(argv)
  if env.get('JAX_COORDINATOR_ADDRESS'):
    prefix = ' '.join(f'{k}={shlex.quote(env[k])}' for k in _LAUNCH_VARS
                      if env.get(k))
    return (f'{prefix} JAX_PROCESS_ID=<0..{num_processes - 1}> {cmd} '
            f'(one per process)')
  if env.get('SLURM_JOB_ID'):
    return f'srun {cmd} (or resubmit the job)'
  return f'{cmd} (on each of the {num_processes} processes)'


def _pid_alive(pid: int) -> bool:
  """Whether process ``pid`` of this host runs (a zombie does not)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):
    return True


class PeerWatch:
  """Heartbeats of the processes of one job, through the shared workdir.

  Args:
    workdir: the run's (shared) workdir.
    process_index, process_count: this process and the job size.
    timeout_s: a peer silent this long is lost.
    checkpoint_dir: where the finished checkpoints are (named in the line).
    on_lost: called before the process exits (e.g. release the lock).
    exit: how the process ends (``os._exit``; tests replace it).
  """

  def __init__(self, workdir: str, process_index: int, process_count: int,
               timeout_s: float = DEFAULT_TIMEOUT_S,
               checkpoint_dir: Optional[str] = None,
               on_lost: Optional[Callable[[], None]] = None,
               exit: Callable[[int], None] = os._exit, argv=None):  # pylint: disable=redefined-builtin,protected-access
    self.dir = os.path.join(workdir, HOSTS_DIR)
    self.index = process_index
    self.count = process_count
    self.timeout_s = float(timeout_s)
    self.checkpoint_dir = checkpoint_dir or os.path.join(workdir, 'checkpoints')
    self.on_lost = on_lost
    self._exit = exit
    self._argv = argv
    self.interval_s = max(0.2, min(self.timeout_s / 5, 5.0))
    self._beat = 0
    self._seen = {}   # peer -> (counter, monotonic time it last changed)
    self._info = {}   # peer -> its last file contents
    self._start = time.monotonic()
    self._last_look = self._start
    self._host = socket.gethostname()
    self._gone = {}   # peers on this host whose process is gone
    self._start_wall = time.time()
    self._stop = threading.Event()
    # The watcher thread and explain_failure (main thread) both read the
    # peers' beats; the lock makes each read-and-decide atomic, so exactly
    # one of them reports a lost peer.
    self._lock = threading.Lock()
    self.lost_line: Optional[str] = None
    os.makedirs(self.dir, exist_ok=True)
    self._write()
    self._thread = threading.Thread(target=self._run, name='peer-watch',
                                    daemon=True)
    self._thread.start()

  def _path(self, k: int) -> str:
    return os.path.join(self.dir, f'process_{k}.json')

  def _write(self, done: bool = False):
    self._beat += 1
    info = {'process': self.index, 'host': socket.gethostname(),
            'pid': os.getpid(), 'beat': self._beat, 'time': time.time(),
            'done': done}
    atomic_write(self._path(self.index), lambda f: json.dump(info, f), binary=False)

  def _silent_peers(self) -> list[int]:
    now = time.monotonic()
    if now - self._last_look > 3 * self.interval_s:
      # This process was starved (a long import or compile held the
      # interpreter): what the peers did meanwhile was not watched.
      self._seen = {k: (v[0], now) for k, v in self._seen.items()}
    self._last_look = now
    out = []
    for k in range(self.count):
      if k == self.index:
        continue
      try:
        with open(self._path(k)) as f:
          info = json.load(f)
      except (OSError, ValueError):
        info = None
      beat = info.get('beat') if info else None
      if info:
        self._info[k] = info
        if info.get('done') and info.get('time', 0) >= self._start_wall - 5:
          continue   # it finished this run normally
      if info and info.get('host') == self._host and not _pid_alive(
          int(info.get('pid', -1))):
        self._gone[k] = True   # on this host: the process is gone, for sure
        out.append(k)
        continue
      prev = self._seen.get(k)
      if prev is None or prev[0] != beat:
        self._seen[k] = (beat, now)
      elif now - prev[1] > self.timeout_s * (
          3 if info and info.get('host') == self._host else 1):
        # A live process of this host that stopped beating is given longer
        # (a starved interpreter is likelier than a hung one).
        out.append(k)
    return out

  def _line(self, lost: list[int]) -> str:
    names = ', '.join(
        f'process {k}' + (f' (host {self._info[k]["host"]}, pid '
                          f'{self._info[k]["pid"]})' if k in self._info else '')
        for k in lost)
    steps = finished_steps(self.checkpoint_dir)
    last = (f'the last complete checkpoint is {self.checkpoint_dir}/{steps[-1]}'
            if steps else 'no checkpoint was completed (a relaunch starts '
            'from step 0)')
    same = all(self._info.get(k, {}).get('host') == self._host for k in lost)
    why = ('its process is gone' if all(k in self._gone for k in lost) else
           f'no heartbeat for {self.timeout_s * (3 if same else 1):g} s '
           '(config.train.lost_host_timeout_s' + (' x 3 on one host)' if same else ')'))
    return (f'error: lost {names}: {why}; process {self.index} stops, '
            f'{last}; relaunch: {relaunch_command(self.count, self._argv)}')

  def _check(self, watcher: bool = False) -> bool:
    """Reads the peers' beats; True once a lost peer is (being) reported.

    The thread whose read finds the lost peer reports it and ends the
    process; a later call from either thread only returns True.
    """
    with self._lock:
      if self.lost_line is not None:
        return True
      if watcher and self._stop.is_set():
        return False   # closed (or explain_failure decided) meanwhile
      lost = self._silent_peers()
      if not lost:
        return False
      self._stop.set()
      self.lost_line = self._line(lost)
    try:
      if self.on_lost is not None:
        self.on_lost()
    finally:
      sys.stdout.flush()
      print(self.lost_line, file=sys.stderr, flush=True)
      self._exit(errors.EXIT_LOST_HOST)
    return True

  def _run(self):
    while not self._stop.wait(self.interval_s):
      try:
        self._write()
      except OSError:
        pass
      if self._check(watcher=True):
        return

  def _lost_reported(self) -> None:
    """Waits for the watcher thread, which may be the one ending the process."""
    if threading.current_thread() is not self._thread:
      self._thread.join()

  def explain_failure(self) -> None:
    """After the main thread failed: report a lost peer, if one is.

    Waits until every peer beat again since now, or one has been silent for
    ``timeout_s``; returns (the failure is not a lost host) in the first case.
    """
    t0 = time.monotonic()
    # The baseline is a fresh read, not the watcher's last one (up to one
    # interval old): a beat the peer wrote just before it died would
    # otherwise look like a beat after the failure, and a lost host like a
    # live one (seen in CI: a peer SIGKILLed during a checkpoint save, the
    # survivor's gloo error reported as a failed save, exit 2, not 75).
    if self._check():
      self._lost_reported()
      return
    with self._lock:
      first = {k: v[0] for k, v in self._seen.items()}
    while time.monotonic() - t0 < self.timeout_s + 2 * self.interval_s:
      if self._check():
        # Reported by this thread (the process has ended, unless a test
        # replaced `exit`) or by the watcher thread (joined: it ends it).
        self._lost_reported()
        return
      with self._lock:
        beat_again = all(k in self._seen and self._seen[k][0] != first.get(k)
                         for k in range(self.count) if k != self.index)
      if beat_again:
        return
      time.sleep(self.interval_s / 2)

  def close(self):
    """Stops watching; marks this process done (peers stop watching it)."""
    self._stop.set()
    self._thread.join(timeout=5)
    try:
      self._write(done=True)
    except OSError:
      pass


def start(workdir: str, timeout_s: float, checkpoint_dir: str,
          on_lost: Optional[Callable[[], None]] = None) -> Optional[PeerWatch]:
  """A :class:`PeerWatch` for a multi-process job; None for one process."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return None
  return PeerWatch(workdir, jax.process_index(), jax.process_count(),
                   timeout_s, checkpoint_dir, on_lost)
