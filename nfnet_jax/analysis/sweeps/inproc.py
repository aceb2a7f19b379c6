"""The ``inproc`` launcher: every run of the sweep in this Python process.

Each run calls the trainer's own ``train_and_evaluate`` on the config its
command line would build (same config file, same ``--config.k=v`` texts,
same parser), so it saves the interpreter start, the imports and, through
JAX's persistent compilation cache (one per process, set by the first run:
``config.train.compilation_cache_dir``) and JAX's in-memory caches, most of
the compilation of every run after the first. The run's console output is
copied to its ``train.log`` and the run record gets the exit status the
command line would have exited with (`exit_status`), so results, outcomes
and resumption are those of the ``local`` launcher. A run that raises is
recorded and the sweep goes on; a pre-empted run (SIGTERM: checkpoint
written) stops the sweep, as it stops the process of a ``local`` run.
"""
import contextlib
import os
import sys
import time
import traceback
from typing import Any, Dict, Optional, Sequence, Tuple

from nfnet_jax.analysis.sweeps import outcomes
from nfnet_jax.analysis.sweeps import runner
from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.analysis.sweeps.grid import override_flags
from nfnet_jax.config import load as config_load
from nfnet_jax.train import checkpoint as ckpt_lib
from nfnet_jax.train import cli as train_cli
from nfnet_jax.train import loop
from nfnet_jax.train import steplog


def exit_status(exc: BaseException) -> Tuple[int, Optional[str]]:
  """(exit status, the error line printed) of ``nfnet-train`` for an exception.

  The same mapping as ``nfnet_jax.train.cli``: a checkpoint that cannot be
  written, a bad config, a diverged run, anything else (None: the traceback
  is the message).
  """
  if isinstance(exc, ckpt_lib.CheckpointSaveError):
    return train_cli.EXIT_SAVE_FAILED, f'error: {exc}'
  if isinstance(exc, ValueError) and 'config.' in str(exc):
    return train_cli.EXIT_BAD_CONFIG, f'error: {exc}'
  if isinstance(exc, (steplog.TrainingDiverged, FloatingPointError)):
    return train_cli.EXIT_DIVERGED, f'error: training diverged: {exc}'
  return 1, None


class _Tee:
  """A text stream writing to two streams (the console and the run's log)."""

  def __init__(self, *streams):
    self._streams = streams

  def write(self, text):
    for s in self._streams:
      s.write(text)
    return len(text)

  def flush(self):
    for s in self._streams:
      s.flush()

  def isatty(self):
    return False   # as a subprocess writing to train.log: no progress-bar redraws

  def __getattr__(self, name):   # encoding, errors, ...: the console's
    return getattr(self._streams[0], name)


@contextlib.contextmanager
def _output_to(log_path: str):
  with open(log_path, 'a') as log, \
      contextlib.redirect_stdout(_Tee(sys.stdout, log)), \
      contextlib.redirect_stderr(_Tee(sys.stderr, log)):
    yield log


def train_one(config: str, run: runner.Run, extra_args: Sequence[str] = ()) -> Dict[str, Any]:
  """Trains one grid point in this process; returns (and writes) its run record."""
  flags = override_flags(run.point) + list(extra_args)
  os.makedirs(run.workdir, exist_ok=True)
  log_path = os.path.join(run.workdir, 'train.log')
  start = time.time()
  rc, error = 0, None
  with _output_to(log_path) as log:
    log.write('$ (in process) ' + runner.shell_join(
        ['--config', config, '--workdir', run.workdir] + flags) + '\n')
    try:
      _, overrides = config_load.split_overrides(flags)
      cfg = config_load.load_config(config, overrides)
      cfg.lock()   # as the command line does: the loop reads, never adds
      summary = loop.train_and_evaluate(cfg, run.workdir)
      if summary.get('status') == 'preempted':
        rc = train_cli.EXIT_PREEMPTED
    except Exception as e:  # pylint: disable=broad-except
      rc, line = exit_status(e)
      text = line + '\n' if line else ''.join(traceback.format_exception(e))
      sys.stderr.write(text)
      error = outcomes.last_error_line(text)
  record = {'returncode': rc, 'wall_time_s': time.time() - start,
            'command': ['in-process', '--config', config, '--workdir', run.workdir] + flags}
  if error is not None:
    record['error'] = error
  outcomes.write_record(run.workdir, record)
  return record


def run_sweep_inproc(config: str, workdir: str, grid: Sequence[Overrides], *,
                     extra_args: Sequence[str] = (), log=print) -> Dict[str, Dict[str, Any]]:
  """Trains every unfinished grid point in this process, one after another.

  Args:
    config: the ``--config`` value of every run.
    workdir: the sweep's workdir; run i trains in ``workdir/run_name(grid[i])``.
    grid: override dicts.
    extra_args: ``--config.k=v`` flags applied to every run after its point.
    log: progress printer.

  Returns:
    run_name -> run record, for the runs trained now.
  """
  bad = [a for a in extra_args if not a.startswith(config_load.OVERRIDE_PREFIX)]
  if bad:
    raise ValueError(f'--launcher inproc passes only --config.a.b=v flags to its runs, got {bad}')
  out = {}
  for run in runner.pending_runs(config, workdir, grid, extra_args, log, 'inproc'):
    log(f'[sweep] {run.name}: start (in process)')
    rec = train_one(config, run, extra_args)
    log(f"[sweep] {run.name}: {outcomes.describe(rec)} ({rec['wall_time_s']:.0f}s, "
        f"log: {os.path.join(run.workdir, 'train.log')})")
    out[run.name] = rec
    if rec['returncode'] == outcomes.EXIT_PREEMPTED:
      log('[sweep] pre-empted: stopping here; re-run the sweep to resume')
      break
  return out
