"""How a run ended: the one outcome vocabulary of sweeps, results and reports.

A launcher writes a *run record* (`RUN_RECORD`, next to the run's
``summary.json``): ``{'returncode', 'wall_time_s', 'command', 'error'}``,
``returncode`` being the trainer's exit status (`nfnet_jax.errors`; the
in-process launcher records the status the command line exits with). :func:`classify_run` turns a run's files into one of
`OUTCOMES`; :mod:`nfnet_jax.analysis.report` counts and averages by it.
"""
import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

from nfnet_jax import errors
from nfnet_jax.analysis.sweeps import runfiles

# Every outcome, best first (a heatmap cell holding several runs shows the
# best one): finished runs, then runs that ended without a result, then
# unfinished ones ('preempted': checkpointed, the next sweep resumes it;
# 'missing': not run yet, or running).
OUTCOMES = ('completed', 'not learning', 'diverged', 'failed', 'preempted', 'missing')
# Outcomes of runs that finished training with a finite loss.
FINISHED_FINITE = ('completed', 'not learning')
# File a launcher writes in each run's workdir: return code and wall time.
RUN_RECORD = 'sweep_run.json'

# The trainer's exit statuses (``nfnet-train``, `nfnet_jax.errors`); a
# diverged run stopped deterministically and is an outcome, not a crash.
EXIT_DIVERGED = errors.EXIT_DIVERGED
EXIT_PREEMPTED = errors.EXIT_PREEMPTED


def read_record(run_workdir: str) -> Dict[str, Any]:
  """The run record of ``run_workdir`` ({} when none was written)."""
  return runfiles.read_json(os.path.join(run_workdir, RUN_RECORD)) or {}


def write_record(run_workdir: str, record: Dict[str, Any]) -> None:
  """Writes the run record of ``run_workdir``."""
  os.makedirs(run_workdir, exist_ok=True)
  with open(os.path.join(run_workdir, RUN_RECORD), 'w') as f:
    json.dump(record, f, indent=1, default=str)


def is_finished(run_workdir: str) -> bool:
  """Finished: the loop wrote summary.json, or the trainer exited as diverged.

  A diverged run stopped deterministically and is not retried; a failed or
  pre-empted one is (it resumes from its checkpoints).
  """
  if os.path.exists(os.path.join(run_workdir, 'summary.json')):
    return True
  return read_record(run_workdir).get('returncode') == EXIT_DIVERGED


def last_error_line(log_text: str) -> str:
  """The line that names a run's error: the last non-empty log line.

  A Python traceback ends with ``ExceptionType: message``; progress-bar
  redraws (carriage returns) are dropped first.
  """
  lines = [l.rsplit('\r', 1)[-1].strip() for l in log_text.splitlines()]
  lines = [l for l in lines if l]
  return lines[-1][:500] if lines else ''


def describe(record: Dict[str, Any]) -> str:
  """One progress line for a run record."""
  rc = record.get('returncode')
  if rc == 0:
    return 'finished'
  if rc == EXIT_DIVERGED:
    return f'DIVERGED: {record.get("error", "")}'
  if rc == EXIT_PREEMPTED:
    return 'pre-empted (checkpointed; re-run the sweep to resume)'
  return f'FAILED rc={rc}: {record.get("error", "")}'


def classify_run(summary: Optional[Dict[str, Any]], record: Dict[str, Any],
                 metrics: List[Dict[str, Any]]) -> Tuple[str, str]:
  """A run's outcome (one of `OUTCOMES`) and its reason.

  * ``completed``: the trainer finished and the final train loss is finite
    and lower than the first logged one (or only one window was logged,
    which cannot tell);
  * ``diverged``: the trainer exited with its divergence status (too many
    non-finite steps; `EXIT_DIVERGED`), or finished with a non-finite final
    train loss;
  * ``failed``: any other exit status, with the log's last line;
  * ``not learning``: finished, finite, but the final train loss (mean of
    the last ``log_every`` window) is no lower than the first window's;
  * ``missing`` (not run yet, or running) and ``preempted`` (checkpointed;
    the next sweep resumes it) for unfinished runs.

  Args:
    summary: the run's ``summary.json`` (None when absent).
    record: the launcher's `RUN_RECORD` (empty when absent).
    metrics: the rows of the run's ``metrics.jsonl``.

  Returns:
    ``(outcome, detail)``; detail is the error line or the loss comparison.
  """
  if summary is None:
    if not record:
      return 'missing', ''
    rc = record.get('returncode')
    if rc == EXIT_DIVERGED:
      return 'diverged', record.get('error', '')
    if rc == EXIT_PREEMPTED:
      return 'preempted', 'checkpointed; re-run the sweep to resume'
    return 'failed', record.get('error') or f'exit status {rc}'
  losses = runfiles.train_losses(metrics)
  final = runfiles.final_train_loss(summary, metrics)
  if final is None and not losses:
    return 'completed', 'no train loss logged'
  if final is None or not math.isfinite(final):
    return 'diverged', f'final train loss {final}'
  if len(losses) >= 2 and math.isfinite(losses[0]) and final >= losses[0]:
    return 'not learning', f'final train loss {final:.4g} >= initial {losses[0]:.4g}'
  return 'completed', ''
