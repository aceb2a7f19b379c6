"""What every launcher shares: the pending runs, a run's command, a subprocess run.

A run trains through the installed trainer, ``python -m
nfnet_jax.commands.train`` (``nfnet-train``) (no source checkout needed), in its own workdir
``W/<run_name>/``; its output goes to ``train.log`` there and the launcher
writes the run record (`outcomes.RUN_RECORD`).
"""
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from nfnet_jax.analysis.sweeps import outcomes
from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.analysis.sweeps.grid import override_flags
from nfnet_jax.analysis.sweeps.grid import run_name
from nfnet_jax.train import workdir_lock

# The trainer's command line (nfnet-train), as a module of the installed package.
TRAIN_MODULE = 'nfnet_jax.commands.train'
Log = Callable[[str], None]


def default_train_cmd() -> List[str]:
  """``[python, -m, nfnet_jax.commands.train]`` with this interpreter."""
  return [sys.executable, '-m', TRAIN_MODULE]


@dataclasses.dataclass
class Run:
  """One grid point to train: its name, workdir and overrides."""
  name: str
  workdir: str
  point: Overrides


def build_command(config: str, run_workdir: str, overrides: Overrides,
                  extra_args: Sequence[str] = (), train_cmd: Optional[Sequence[str]] = None
                  ) -> List[str]:
  """The argv that trains one grid point.

  Args:
    config: the ``--config`` value (``file.py`` or ``file.py:arg``).
    run_workdir: the run's own workdir.
    overrides: the grid point.
    extra_args: extra flags passed to every run (e.g. fixed overrides).
    train_cmd: the launcher argv prefix; default `default_train_cmd`.

  Returns:
    The argv list.
  """
  cmd = list(train_cmd) if train_cmd else default_train_cmd()
  cmd += ['--config', config, '--workdir', run_workdir]
  cmd += override_flags(overrides)
  cmd += list(extra_args)
  return cmd


def shell_join(argv: Sequence[str]) -> str:
  """One shell-safe command line."""
  return ' '.join(shlex.quote(a) for a in argv)


def pending_runs(config: str, workdir: str, grid: Sequence[Overrides],
                 extra_args: Sequence[str] = (), log: Log = print,
                 launcher: str = 'local') -> List[Run]:
  """Every unfinished grid point; writes ``workdir/sweep.json`` (the grid).

  Finished runs (`outcomes.is_finished`) are reused, not re-run; an
  unfinished one resumes from its checkpoints when run again.
  """
  os.makedirs(workdir, exist_ok=True)
  todo = []
  for point in grid:
    name = run_name(point)
    rdir = os.path.join(workdir, name)
    if outcomes.is_finished(rdir):
      log(f'[sweep] {name}: finished earlier, reusing its result')
      continue
    todo.append(Run(name, rdir, dict(point)))
  with open(os.path.join(workdir, 'sweep.json'), 'w') as f:
    json.dump({'config': config, 'grid': list(grid), 'extra_args': list(extra_args),
               'launcher': launcher}, f, indent=1, default=str)
  return todo


def wait_while_held(run: Run, log: Log = print, poll_s: float = 1.0) -> bool:
  """Waits while another live process holds the run's workdir lock.

  A sweep driver killed mid-grid leaves its current run training (an
  orphan that holds ``train.lock``, `nfnet_jax.train.workdir_lock`); the
  rerun waits for it instead of starting the run a second time.

  Returns:
    Whether there was such a holder.
  """
  path = os.path.join(run.workdir, workdir_lock.LOCK_NAME)
  waited = False
  while True:
    holder = workdir_lock.read(path)
    if holder is None or workdir_lock.stale_reason(
        holder, workdir_lock.DEFAULT_STALE_AFTER_S) is not None:
      return waited
    if not waited:
      log(f'[sweep] {run.name}: already running ({workdir_lock.describe(holder)}); '
          'waiting for it instead of starting it again')
      waited = True
    time.sleep(poll_s)


def _log_tail(path: str, size: int = 20_000) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(max(0, os.path.getsize(path) - size))
      return f.read().decode(errors='replace')
  except OSError:
    return ''


def run_subprocess(cmd: List[str], run_workdir: str, timeout: Optional[float],
                   on_start=None, write_record: bool = True,
                   log_name: str = 'train.log') -> Dict[str, Any]:
  """Runs one training command; returns (and writes) its run record.

  Args:
    cmd: the argv (`build_command`).
    run_workdir: the run's workdir; ``train.log`` and the run record go there.
    timeout: seconds before the run is killed (None: no limit).
    on_start: called with the ``subprocess.Popen`` (a launcher that must
      forward signals to it keeps it).
    write_record: whether to write the run record (only task 0 of a
      multi-task job does).
    log_name: the output file in ``run_workdir`` (one per task).

  Returns:
    ``{'returncode', 'wall_time_s', 'command', 'error'}``; ``error`` is the
    log's last line when the run did not complete.
  """
  os.makedirs(run_workdir, exist_ok=True)
  start = time.time()
  log_path = os.path.join(run_workdir, log_name)
  with open(log_path, 'ab') as log:
    log.write(('$ ' + shell_join(cmd) + '\n').encode())
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    if on_start is not None:
      on_start(proc)
    try:
      rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      rc = 'timeout'
  record = {'returncode': rc, 'wall_time_s': time.time() - start, 'command': cmd}
  if rc != 0:
    record['error'] = (f'no result after the --timeout of {timeout}s' if rc == 'timeout'
                       else outcomes.last_error_line(_log_tail(log_path)))
  if write_record:
    outcomes.write_record(run_workdir, record)
  return record
