"""The ``local`` launcher (subprocesses here, a few at a time) and ``print``."""
import concurrent.futures
import os
from typing import Any, Dict, List, Optional, Sequence

from nfnet_jax.analysis.sweeps import outcomes
from nfnet_jax.analysis.sweeps import runner
from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.analysis.sweeps.grid import run_name


def run_sweep(config: str, workdir: str, grid: Sequence[Overrides], *, parallel: int = 1,
              extra_args: Sequence[str] = (), train_cmd: Optional[Sequence[str]] = None,
              timeout: Optional[float] = None, log=print) -> Dict[str, Dict[str, Any]]:
  """Runs every unfinished grid point as local subprocesses, ``parallel`` at a time.

  A crashing or diverging run cannot take the sweep down: each is its own
  process (`runner.build_command`).

  Args:
    config: the ``--config`` value passed to each run.
    workdir: the sweep's workdir; run i trains in ``workdir/run_name(grid[i])``.
    grid: override dicts.
    parallel: number of concurrent runs (>= 1).
    extra_args: flags appended to every run's command.
    train_cmd: launcher argv prefix (default: ``python -m nfnet_jax.commands.train``).
    timeout: per-run time limit in seconds (None: no limit).
    log: progress printer.

  Returns:
    run_name -> run record, for the runs launched now (finished ones are
    reused and not listed).
  """
  if not isinstance(parallel, int) or parallel < 1:
    raise ValueError(f'--parallel must be an integer >= 1, got {parallel!r}')
  todo = runner.pending_runs(config, workdir, grid, extra_args, log, 'local')

  def _go(run):
    if runner.wait_while_held(run, log) and outcomes.is_finished(run.workdir):
      log(f'[sweep] {run.name}: finished under the earlier launcher')
      return run.name, outcomes.read_record(run.workdir)
    log(f'[sweep] {run.name}: start')
    cmd = runner.build_command(config, run.workdir, run.point, extra_args, train_cmd)
    rec = runner.run_subprocess(cmd, run.workdir, timeout)
    log(f"[sweep] {run.name}: {outcomes.describe(rec)} ({rec['wall_time_s']:.0f}s, "
        f"log: {os.path.join(run.workdir, 'train.log')})")
    return run.name, rec

  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    return dict(pool.map(_go, todo))


def print_commands(config: str, workdir: str, grid: Sequence[Overrides],
                   extra_args: Sequence[str] = (),
                   train_cmd: Optional[Sequence[str]] = None) -> List[str]:
  """The shell command of every grid point (the ``print`` launcher); runs nothing."""
  return [runner.shell_join(runner.build_command(
      config, os.path.join(workdir, run_name(p)), p, extra_args, train_cmd)) for p in grid]
