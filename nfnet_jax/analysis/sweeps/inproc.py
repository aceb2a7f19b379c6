"""The ``inproc`` launcher: every run of the sweep in this Python process.

Each run calls what the trainer's command line calls
(``nfnet_jax.train.cli.run``: the same config file, ``--config.k=v`` texts
and parser, the same ``train_and_evaluate``, the same exit statuses), so it
saves the interpreter start and the imports of every run, and shares one
persistent compilation cache (set up by the first run from
``config.train.compilation_cache_dir``, or by the caller). The run's console
output is copied to its ``train.log`` and the run record gets the exit
status the command line exits with, so results, outcomes and resumption are
those of the ``local`` launcher. A run that fails is recorded and the sweep
goes on; a pre-empted run (SIGTERM: checkpoint written) stops the sweep, as
it stops the process of a ``local`` run.
"""
import contextlib
import os
import sys
import time
import traceback
from typing import Any, Dict, Sequence

from nfnet_jax.analysis.sweeps import outcomes
from nfnet_jax.analysis.sweeps import runner
from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.analysis.sweeps.grid import override_flags
from nfnet_jax.config import load as config_load
from nfnet_jax.train import cli as train_cli


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
  """Trains one grid point in this process; returns (and writes) its run record.

  Calls what ``nfnet-train`` calls (``nfnet_jax.train.cli.run``: config
  loading, the loop, each failure's one line and exit status); its
  ``SystemExit`` becomes the record's return code, any other exception (a
  bug) return code 1 with its traceback in the log.
  """
  flags = override_flags(run.point) + list(extra_args)
  os.makedirs(run.workdir, exist_ok=True)
  start = time.time()
  with _output_to(os.path.join(run.workdir, 'train.log')) as log:
    log.write('$ (in process) ' + runner.shell_join(
        ['--config', config, '--workdir', run.workdir] + flags) + '\n')
    log.flush()
    start_of_run = log.tell()
    try:
      _, overrides = config_load.split_overrides(flags)
      train_cli.run(config, run.workdir, overrides)
      rc = 0
    except SystemExit as e:
      rc = e.code if isinstance(e.code, int) else 1
    except Exception:  # pylint: disable=broad-except
      rc = 1
      traceback.print_exc()
  record = {'returncode': rc, 'wall_time_s': time.time() - start,
            'command': ['in-process', '--config', config, '--workdir', run.workdir] + flags}
  if rc != 0:
    with open(os.path.join(run.workdir, 'train.log'), 'rb') as f:
      f.seek(start_of_run)
      record['error'] = outcomes.last_error_line(f.read().decode(errors='replace'))
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
