"""The ``submitit`` launcher: the sweep as one SLURM job array (or submitit's local/debug executors).

Each job runs the same command as the ``local`` launcher
(`runner.build_command`) in a subprocess; ``submitit_jobs.json`` in the sweep
workdir keeps the job ids, so a re-run does not submit a run whose job is
still queued (`still_queued`), and collects the results of the others.
submitit is an optional dependency (``pip install -e '.[cluster]'``): it is
imported only when this launcher is used (`import_submitit`).
"""
import json
import os
import re
import signal
import subprocess
import time
from typing import Any, Dict, Optional, Sequence

from nfnet_jax.analysis.sweeps import hooks
from nfnet_jax.analysis.sweeps import outcomes
from nfnet_jax.analysis.sweeps import runfiles
from nfnet_jax.analysis.sweeps import runner
from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.config.load import parse_value


def import_submitit():
  """Imports submitit, or raises ValueError saying how to install it."""
  try:
    # Lazy: submitit is optional (the cluster extra) and only this launcher needs it.
    import submitit  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError("--launcher submitit needs the submitit package: "
                     "pip install -e '.[cluster]' (or pip install submitit)") from None
  return submitit


class TrainJob:
  """One grid point as a submitit job: runs the trainer in a subprocess.

  Every task of the job (one per node by default) runs the same command, so
  a multi-node run initialises ``jax.distributed`` from SLURM's environment
  exactly as ``nfnet-train`` does when started by ``srun``. Only task 0 writes
  the run record.

  submitit calls `checkpoint` before a time-limit or pre-emption requeue: the
  training process gets SIGTERM (it writes a checkpoint and exits), and the
  requeued job runs the same command, which resumes from that checkpoint.
  submitit only needs the method to exist, so this class does not import it
  at module level.
  """

  def __init__(self, cmd: Sequence[str], run_workdir: str, timeout: Optional[float] = None,
               grace_s: float = 60.0):
    self.cmd = list(cmd)
    self.run_workdir = run_workdir
    self.timeout = timeout
    self.grace_s = grace_s
    self._proc = None

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != '_proc'}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._proc = None

  def _rank(self) -> int:
    try:
      return int(import_submitit().JobEnvironment().global_rank)
    except Exception:  # pylint: disable=broad-except
      return 0  # not inside a submitit job (debug executor, direct call)

  def __call__(self) -> Dict[str, Any]:
    def keep(proc):
      self._proc = proc
    rank = self._rank()
    return runner.run_subprocess(self.cmd, self.run_workdir, self.timeout, on_start=keep,
                    write_record=rank == 0,
                    log_name='train.log' if rank == 0 else f'train.task{rank}.log')

  def checkpoint(self, *args, **kwargs):  # pylint: disable=unused-argument
    """Stops training with a checkpoint; returns the same job for the requeue."""
    proc = self._proc
    if proc is not None and proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
      try:
        proc.wait(timeout=self.grace_s)
      except subprocess.TimeoutExpired:
        pass
    submitit = import_submitit()
    return submitit.helpers.DelayedSubmission(
        TrainJob(self.cmd, self.run_workdir, self.timeout, self.grace_s))


# Sweep flags -> submitit's AutoExecutor parameters (None: leave the default).
SUBMITIT_FLAGS = {
    'partition': 'slurm_partition',
    'timeout_min': 'timeout_min',
    'nodes': 'nodes',
    'gpus_per_node': 'gpus_per_node',
    'tasks_per_node': 'tasks_per_node',
    'cpus_per_task': 'cpus_per_task',
    'mem_gb': 'mem_gb',
    'array_parallelism': 'slurm_array_parallelism',
}


def submitit_parameters(flags: Dict[str, Any], extra: Sequence[str] = (),
                        config_path: Optional[str] = None) -> Dict[str, Any]:
  """AutoExecutor parameters: the config's, then the named flags and extras.

  Args:
    flags: ``{flag name in SUBMITIT_FLAGS: value or None}``.
    extra: ``'key=value'`` strings passed through as AutoExecutor parameters
      (``slurm_account=abc``, ``slurm_constraint=a100``); values are parsed
      like swept values.
    config_path: the ``--config`` file; its module-level ``SUBMITIT`` dict
      (AutoExecutor parameters, e.g. ``{'slurm_partition': 'gpu',
      'gpus_per_node': 8}``), if any, gives the defaults the flags override.

  Returns:
    The keyword arguments for ``executor.update_parameters``.

  Raises:
    ValueError: a malformed extra, or an unknown flag name.
  """
  params = hooks.submitit_defaults(config_path)
  for k, v in flags.items():
    if k not in SUBMITIT_FLAGS:
      raise ValueError(f'unknown submitit flag {k!r}; known: {sorted(SUBMITIT_FLAGS)}')
    if v is not None:
      params[SUBMITIT_FLAGS[k]] = v
  for item in extra:
    key, sep, value = item.partition('=')
    if not sep or not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', key.strip()):
      raise ValueError(f'--submitit must look like key=value (an AutoExecutor parameter such '
                       f'as slurm_account=abc), got {item!r}')
    params[key.strip()] = parse_value(value)
  return params


# SLURM states of a job that will still run (or is running): its grid point
# must not be submitted a second time.
_LIVE_STATES = ('PENDING', 'RUNNING', 'REQUEUED', 'CONFIGURING', 'COMPLETING', 'RESIZING',
                'SUSPENDED', 'REQUEUE_HOLD', 'REQUEUE_FED')


def slurm_job_state(folder: str, job_id: str) -> str:
  """The SLURM state of ``job_id`` (sacct through submitit), 'UNKNOWN' if none."""
  submitit = import_submitit()
  try:
    return str(submitit.SlurmJob(folder=folder, job_id=job_id).state)
  except Exception:  # pylint: disable=broad-except
    return 'UNKNOWN'


def still_queued(workdir: str, names: Sequence[str], state_fn=None) -> Dict[str, str]:
  """Unfinished runs whose last SLURM job is still pending or running.

  A sweep re-run (after ``--no_wait``, or while an array is still running)
  must not submit them again; runs whose job was cancelled, pre-empted for
  good, failed or timed out are submitted again and resume from their
  checkpoints.

  Args:
    workdir: the sweep's workdir (``submitit_jobs.json`` there).
    names: the unfinished runs.
    state_fn: ``(folder, job_id) -> state`` (default `slurm_job_state`).

  Returns:
    ``{run_name: job_id}`` of the runs not to submit.
  """
  history = runfiles.read_json(os.path.join(workdir, 'submitit_jobs.json')) or []
  last = {}
  for entry in history:
    if entry.get('cluster') == 'slurm':
      last.update(entry.get('jobs', {}))
    else:  # local/debug jobs end with the sweep that started them
      for name in entry.get('jobs', {}):
        last.pop(name, None)
  state_fn = state_fn or slurm_job_state
  folder = os.path.join(workdir, 'submitit')
  out = {}
  for name in names:
    if name in last:
      state = state_fn(folder, last[name]).split()[0].upper()
      if state in _LIVE_STATES:
        out[name] = last[name]
  return out


def make_executor(folder: str, cluster: Optional[str] = None,
                  parameters: Optional[Dict[str, Any]] = None):
  """A submitit AutoExecutor with the sweep's defaults and ``parameters``.

  Defaults: job name ``nfnet_sweep``, a 24 h limit, one task per node (one
  JAX process sees all of a node's GPUs; ``jax.distributed`` joins the
  nodes).

  Raises:
    ValueError: submitit missing, or parameters the executor rejects.
  """
  submitit = import_submitit()
  try:
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  except RuntimeError as e:  # e.g. 'Could not detect "srun"'
    raise ValueError(f'submitit cannot use the {cluster} executor here ({e}); on one '
                     'machine use --submitit_cluster local') from None
  params = dict(name='nfnet_sweep', timeout_min=60 * 24, tasks_per_node=1)
  params.update(parameters or {})
  try:
    executor.update_parameters(**params)
  except (ValueError, TypeError, NameError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f'submitit ({executor.cluster}) rejects the parameters {params}: '
                     f'{first}') from None
  return executor


def run_sweep_submitit(config: str, workdir: str, grid: Sequence[Overrides], *,
                       parameters: Optional[Dict[str, Any]] = None,
                       cluster: Optional[str] = None, extra_args: Sequence[str] = (),
                       train_cmd: Optional[Sequence[str]] = None,
                       timeout: Optional[float] = None, wait: bool = True,
                       log=print) -> Dict[str, Dict[str, Any]]:
  """Submits every unfinished grid point as one submitit job array.

  Args:
    config, workdir, grid, extra_args, train_cmd, timeout: as for `run_sweep`.
    parameters: ``executor.update_parameters`` keywords
      (`submitit_parameters`).
    cluster: submitit's executor: ``'slurm'``, ``'local'`` (local processes
      through the same submission path), ``'debug'`` (in this process), or
      None (SLURM where ``sbatch`` exists, else local).
    wait: wait for the jobs (else return after submitting; re-run the sweep
      later to collect).
    log: progress printer.

  Returns:
    run_name -> run record for the jobs submitted now (empty when every
    run was finished already; without ``wait``, ``{'job_id': ...}``).

  Raises:
    ValueError: submitit missing, or parameters the executor rejects.
  """
  import_submitit()
  runs = runner.pending_runs(config, workdir, grid, extra_args, log, 'submitit')
  queued = still_queued(workdir, [run.name for run in runs])
  for name in sorted(queued):
    log(f'[sweep] {name}: job {queued[name]} is still queued or running; not submitted again')
  todo = [(run.name, run.workdir,
           runner.build_command(config, run.workdir, run.point, extra_args, train_cmd))
          for run in runs if run.name not in queued]
  if not todo:
    log('[sweep] every run finished earlier: nothing to submit')
    return {}
  folder = os.path.join(workdir, 'submitit')
  executor = make_executor(folder, cluster, parameters)
  with executor.batch():
    jobs = [executor.submit(TrainJob(cmd, rdir, timeout)) for _, rdir, cmd in todo]
  ids = {name: str(job.job_id) for (name, _, _), job in zip(todo, jobs)}
  path = os.path.join(workdir, 'submitit_jobs.json')
  history = runfiles.read_json(path) or []
  history.append({'time': time.time(), 'cluster': executor.cluster, 'jobs': ids})
  with open(path, 'w') as f:
    json.dump(history, f, indent=1)
  log(f'[sweep] submitted {len(jobs)} job(s) to {executor.cluster}: '
      f'{sorted(set(i.split("_")[0] for i in ids.values()))} (submitit logs: {folder})')
  if not wait:
    return {name: {'job_id': i} for name, i in ids.items()}
  out = {}
  for (name, rdir, cmd), job in zip(todo, jobs):
    try:
      rec = job.result()
    except Exception as e:  # pylint: disable=broad-except
      # The job itself died (node failure, scancel, OOM kill): no record.
      rec = {'returncode': 'job failed', 'wall_time_s': None, 'command': cmd,
             'error': outcomes.last_error_line(str(e)) or type(e).__name__}
      outcomes.write_record(rdir, rec)
    log(f'[sweep] {name}: {outcomes.describe(rec)}')
    out[name] = rec
  return out
