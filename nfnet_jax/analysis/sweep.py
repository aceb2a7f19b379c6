"""Hyper-parameter sweeps: grid expansion, a resumable runner, results, heatmap.

A sweep is a list of override dicts (``{'model.alpha': 0.2,
'optimizer.clipping': None}``), one per run. It comes from the product of
``--sweep key=v1,v2,...`` flags and/or from a config module's ``get_sweep()``.
Every run trains in its own sub-workdir ``W/<run_name>/`` through a subprocess
``python scripts/train.py --config C --workdir W/<run_name> --config.a.b=v``,
so a crashing or diverging run cannot take the sweep down. Launchers
(`LAUNCHERS`): ``local`` runs the subprocesses here (`run_sweep`),
``submitit`` submits them as one SLURM job array through submitit
(`run_sweep_submitit`; its local and debug executors run the same path on
one machine), ``print`` prints the commands. A finished run (``summary.json``
written, or train.py's divergence exit status recorded) is reused, not re-run;
an unfinished one resumes from its checkpoints (resumable sweeps).

After the runs, :func:`collect_results` reads each run's ``summary.json``,
``metrics.jsonl`` and run record into one row per grid point with its outcome
(`classify_run`: completed / diverged / failed / not learning),
:func:`write_results_csv` writes ``W/results.csv`` and :func:`plot_heatmap`
draws ``W/heatmap.png``.
"""
import concurrent.futures
import csv
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

# The one config loader and value parser (shared with every command line).
from nfnet_jax.config.load import load_config
from nfnet_jax.config.load import load_config_module
from nfnet_jax.config.load import parse_value

Overrides = Dict[str, Any]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TRAIN_SCRIPT = os.path.join(REPO_ROOT, 'scripts', 'train.py')

# Columns of results.csv after the swept keys.
RESULT_COLUMNS = ('run_name', 'outcome', 'initial_train_loss', 'final_train_loss',
                  'eval_top1', 'wall_time_s', 'detail')
_LOSS_COLUMNS = ('initial_train_loss', 'final_train_loss', 'eval_top1')
# How a run ends (see classify_run); the sweep table, CSV and heatmap show it.
OUTCOMES = ('completed', 'diverged', 'failed', 'not learning')
# File the runner writes next to summary.json: return code and wall time.
RUN_RECORD = 'sweep_run.json'


# ----------------------------------------------------------------------------
# Values and grids


def format_value(value: Any) -> str:
  """Formats a value the way ml_collections' ``--config.x=v`` flags parse it."""
  if value is None:
    return 'None'
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(format_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def parse_sweep_flag(flag: str) -> Tuple[str, List[Any]]:
  """Parses ``'model.alpha=0.1,0.2,0.4'`` into ``('model.alpha', [0.1, 0.2, 0.4])``.

  Args:
    flag: one ``--sweep`` value, ``key=v1,v2,...``; the key is a dotted
      config path.

  Returns:
    (key, values).

  Raises:
    ValueError: for a missing '=', an empty key or no values.
  """
  if '=' not in flag:
    raise ValueError(f'--sweep must look like key=v1,v2,... (e.g. model.alpha=0.1,0.2), got {flag!r}')
  key, _, vals = flag.partition('=')
  key = key.strip()
  if key.startswith('config.'):
    key = key[len('config.'):]
  if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*', key):
    raise ValueError(f'--sweep key must be a dotted config path like model.alpha, got {key!r}')
  values = [parse_value(v) for v in vals.split(',') if v.strip()]
  if not values:
    raise ValueError(f'--sweep {key} has no values; give key=v1,v2,...')
  return key, values


def expand_grid(axes: Sequence[Tuple[str, Sequence[Any]]],
                base: Optional[Sequence[Overrides]] = None) -> List[Overrides]:
  """The product grid of ``axes`` crossed with the ``base`` override dicts.

  Args:
    axes: (key, values) pairs; the last axis varies fastest.
    base: override dicts to cross with (e.g. from ``get_sweep()``); ``None``
      means one empty dict.

  Returns:
    A list of override dicts, one per run, in a deterministic order.

  Raises:
    ValueError: when a key appears twice, or the grid has duplicate points.
  """
  keys = [k for k, _ in axes]
  if len(set(keys)) != len(keys):
    raise ValueError(f'--sweep keys must be distinct, got {keys}')
  base = list(base) if base is not None else [{}]
  grid = []
  for b in base:
    clash = set(b) & set(keys)
    if clash:
      raise ValueError(f'--sweep keys {sorted(clash)} are already swept by get_sweep()')
    for combo in itertools.product(*[list(v) for _, v in axes]):
      point = dict(b)
      point.update(zip(keys, combo))
      grid.append(point)
  names = [run_name(p) for p in grid]
  if len(set(names)) != len(names):
    dup = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f'the sweep has duplicate grid points: {dup}')
  return grid


def swept_keys(grid: Sequence[Overrides]) -> List[str]:
  """All keys that appear in the grid, in first-seen order."""
  keys = []
  for p in grid:
    for k in p:
      if k not in keys:
        keys.append(k)
  return keys


def run_name(overrides: Overrides) -> str:
  """A filesystem-safe, readable, unique name for one grid point.

  Uses the last component of each key (``model.alpha`` -> ``alpha``), which
  is unique in practice; the full key is kept when two keys share a leaf.
  """
  if not overrides:
    return 'default'
  leaves = [k.split('.')[-1] for k in overrides]
  parts = []
  for k, leaf in zip(overrides, leaves):
    label = leaf if leaves.count(leaf) == 1 else k
    v = format_value(overrides[k])
    parts.append(f'{label}={v}')
  return re.sub(r'[^A-Za-z0-9_.=,+-]', '_', ','.join(parts))


# ----------------------------------------------------------------------------
# Config modules


def _takes_arg(fn) -> bool:
  import inspect  # pylint: disable=g-import-not-at-top
  try:
    return bool(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    return False


def sweep_from_config(config_path: str) -> Optional[List[Overrides]]:
  """Returns the config module's ``get_sweep()`` list, or None if it has none."""
  module = load_config_module(config_path)
  fn = getattr(module, 'get_sweep', None)
  if fn is None:
    return None
  # A get_sweep(arg) gets the config's ':arg' too (e.g. a study's 'local' grid).
  arg = config_path.split(':', 1)[1] if ':' in config_path else None
  sweep = list(fn(arg) if arg is not None and _takes_arg(fn) else fn())
  for i, p in enumerate(sweep):
    if not isinstance(p, dict):
      raise ValueError(f'get_sweep() in {config_path} must return a list of dicts; item {i} is {p!r}')
  return [{k[len('config.'):] if k.startswith('config.') else k: v for k, v in p.items()}
          for p in sweep]


def repeat_axis(repeats: Optional[int], config_path: Optional[str] = None,
                axes: Sequence[Tuple[str, Sequence[Any]]] = (),
                base: Optional[Sequence[Overrides]] = None) -> List[Tuple[str, List[int]]]:
  """The ``('seed', [0..N-1])`` axis for ``--repeats N`` or a config's ``REPEATS = N``.

  Args:
    repeats: the CLI value (None: take the config module's ``REPEATS``, if any).
    config_path: the ``--config`` value, to read ``REPEATS`` from.
    axes: the ``--sweep`` axes, to refuse a second seed axis.
    base: the ``get_sweep()`` points, likewise.

  Returns:
    ``[]`` (no repeats) or ``[('seed', [0, ..., N-1])]``.

  Raises:
    ValueError: for N < 1, or when seeds are already swept.
  """
  if repeats is None and config_path:
    repeats = getattr(load_config_module(config_path), 'REPEATS', None)
  if repeats is None:
    return []
  if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f'--repeats must be an integer >= 1, got {repeats!r}')
  if any(k == 'seed' for k, _ in axes) or any('seed' in p for p in (base or [])):
    raise ValueError('seeds are swept twice: give either --repeats N or seed values '
                     '(--sweep seed=... / get_sweep()), not both')
  return [('seed', list(range(repeats)))]


# ----------------------------------------------------------------------------
# Commands and the runner


def build_command(config: str, run_workdir: str, overrides: Overrides,
                  extra_args: Sequence[str] = (), train_cmd: Optional[Sequence[str]] = None
                  ) -> List[str]:
  """The argv that trains one grid point.

  Args:
    config: the ``--config`` value (``file.py`` or ``file.py:arg``).
    run_workdir: the run's own workdir.
    overrides: the grid point.
    extra_args: extra flags passed to every run (e.g. fixed overrides).
    train_cmd: the launcher argv prefix; default ``[python, scripts/train.py]``.

  Returns:
    The argv list.
  """
  cmd = list(train_cmd) if train_cmd else [sys.executable, DEFAULT_TRAIN_SCRIPT]
  cmd += ['--config', config, '--workdir', run_workdir]
  cmd += [f'--config.{k}={format_value(v)}' for k, v in overrides.items()]
  cmd += list(extra_args)
  return cmd


def shell_join(argv: Sequence[str]) -> str:
  """One shell-safe command line."""
  import shlex
  return ' '.join(shlex.quote(a) for a in argv)


LAUNCHERS = ('local', 'submitit', 'print')


def _exit_codes():
  """(diverged, preempted) exit statuses of scripts/train.py."""
  from nfnet_jax.train import cli  # pylint: disable=g-import-not-at-top
  return cli.EXIT_DIVERGED, cli.EXIT_PREEMPTED


def is_finished(run_workdir: str) -> bool:
  """Finished: the loop wrote summary.json, or train.py exited as diverged.

  A diverged run stopped deterministically and is not retried; a failed or
  pre-empted one is (it resumes from its checkpoints).
  """
  if os.path.exists(os.path.join(run_workdir, 'summary.json')):
    return True
  record = _read_json(os.path.join(run_workdir, RUN_RECORD)) or {}
  return record.get('returncode') == _exit_codes()[0]


def _log_tail(path: str, size: int = 20_000) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(max(0, os.path.getsize(path) - size))
      return f.read().decode(errors='replace')
  except OSError:
    return ''


def last_error_line(log_text: str) -> str:
  """The line that names a run's error: the last non-empty log line.

  A Python traceback ends with ``ExceptionType: message``; progress-bar
  redraws (carriage returns) are dropped first.
  """
  lines = [l.rsplit('\r', 1)[-1].strip() for l in log_text.splitlines()]
  lines = [l for l in lines if l]
  return lines[-1][:500] if lines else ''


def _run_one(cmd: List[str], run_workdir: str, timeout: Optional[float],
             on_start=None, write_record: bool = True,
             log_name: str = 'train.log') -> Dict[str, Any]:
  """Runs one training command; returns (and writes) its run record.

  Args:
    cmd: the argv (`build_command`).
    run_workdir: the run's workdir; ``train.log`` and `RUN_RECORD` go there.
    timeout: seconds before the run is killed (None: no limit).
    on_start: called with the ``subprocess.Popen`` (a launcher that must
      forward signals to it keeps it).
    write_record: whether to write `RUN_RECORD` (only task 0 of a multi-task
      job does).
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
                       else last_error_line(_log_tail(log_path)))
  if write_record:
    with open(os.path.join(run_workdir, RUN_RECORD), 'w') as f:
      json.dump(record, f, indent=1)
  return record


def _todo(config, workdir, grid, extra_args, train_cmd, log):
  """(name, run workdir, argv) of every unfinished grid point; writes sweep.json."""
  os.makedirs(workdir, exist_ok=True)
  todo = []
  for point in grid:
    name = run_name(point)
    rdir = os.path.join(workdir, name)
    if is_finished(rdir):
      log(f'[sweep] {name}: finished earlier, reusing its result')
      continue
    todo.append((name, rdir, build_command(config, rdir, point, extra_args, train_cmd)))
  with open(os.path.join(workdir, 'sweep.json'), 'w') as f:
    json.dump({'config': config, 'grid': list(grid), 'extra_args': list(extra_args)}, f,
              indent=1, default=str)
  return todo


def _describe(rec: Dict[str, Any]) -> str:
  rc = rec.get('returncode')
  if rc == 0:
    return 'finished'
  diverged, preempted = _exit_codes()
  if rc == diverged:
    return f'DIVERGED: {rec.get("error", "")}'
  if rc == preempted:
    return 'pre-empted (checkpointed; re-run the sweep to resume)'
  return f'FAILED rc={rc}: {rec.get("error", "")}'


def run_sweep(config: str, workdir: str, grid: Sequence[Overrides], *, parallel: int = 1,
              extra_args: Sequence[str] = (), train_cmd: Optional[Sequence[str]] = None,
              timeout: Optional[float] = None, log=print) -> Dict[str, Dict[str, Any]]:
  """Runs every unfinished grid point as local subprocesses, ``parallel`` at a time.

  Args:
    config: the ``--config`` value passed to each run.
    workdir: the sweep's workdir; run i trains in ``workdir/run_name(grid[i])``.
    grid: override dicts.
    parallel: number of concurrent runs (>= 1).
    extra_args: flags appended to every run's command.
    train_cmd: launcher argv prefix (default: this Python + scripts/train.py).
    timeout: per-run time limit in seconds (None: no limit).
    log: progress printer.

  Returns:
    run_name -> run record, for the runs launched now (finished ones are
    reused and not listed).
  """
  if not isinstance(parallel, int) or parallel < 1:
    raise ValueError(f'--parallel must be an integer >= 1, got {parallel!r}')
  todo = _todo(config, workdir, grid, extra_args, train_cmd, log)

  def _go(item):
    name, rdir, cmd = item
    log(f'[sweep] {name}: start')
    rec = _run_one(cmd, rdir, timeout)
    log(f"[sweep] {name}: {_describe(rec)} ({rec['wall_time_s']:.0f}s, "
        f"log: {os.path.join(rdir, 'train.log')})")
    return name, rec

  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    return dict(pool.map(_go, todo))


# ----------------------------------------------------------------------------
# The submitit launcher (SLURM job arrays; submitit's local/debug executors)


def import_submitit():
  """Imports submitit, or raises ValueError saying how to install it."""
  try:
    import submitit  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError("--launcher submitit needs the submitit package: "
                     "pip install -e '.[cluster]' (or pip install submitit)") from None
  return submitit


class TrainJob:
  """One grid point as a submitit job: runs scripts/train.py in a subprocess.

  Every task of the job (one per node by default) runs the same command, so
  a multi-node run initialises ``jax.distributed`` from SLURM's environment
  exactly as ``train.py`` does when started by ``srun``. Only task 0 writes
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
    return _run_one(self.cmd, self.run_workdir, self.timeout, on_start=keep,
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
  params = {}
  if config_path:
    defaults = getattr(load_config_module(config_path), 'SUBMITIT', None) or {}
    if not isinstance(defaults, dict) or not all(isinstance(k, str) for k in defaults):
      raise ValueError(f'SUBMITIT in {config_path} must be a dict of AutoExecutor parameters, '
                       f'got {defaults!r}')
    params.update(defaults)
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
  history = _read_json(os.path.join(workdir, 'submitit_jobs.json')) or []
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
  todo = _todo(config, workdir, grid, extra_args, train_cmd, log)
  queued = still_queued(workdir, [name for name, _, _ in todo])
  for name in sorted(queued):
    log(f'[sweep] {name}: job {queued[name]} is still queued or running; not submitted again')
  todo = [item for item in todo if item[0] not in queued]
  if not todo:
    log('[sweep] every run finished earlier: nothing to submit')
    return {}
  folder = os.path.join(workdir, 'submitit')
  executor = make_executor(folder, cluster, parameters)
  with executor.batch():
    jobs = [executor.submit(TrainJob(cmd, rdir, timeout)) for _, rdir, cmd in todo]
  ids = {name: str(job.job_id) for (name, _, _), job in zip(todo, jobs)}
  path = os.path.join(workdir, 'submitit_jobs.json')
  history = _read_json(path) or []
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
             'error': last_error_line(str(e)) or type(e).__name__}
      with open(os.path.join(rdir, RUN_RECORD), 'w') as f:
        json.dump(rec, f, indent=1)
    log(f'[sweep] {name}: {_describe(rec)}')
    out[name] = rec
  return out


# ----------------------------------------------------------------------------
# Results


def _read_json(path: str) -> Optional[Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _read_jsonl(path: str) -> List[Dict[str, Any]]:
  rows = []
  try:
    with open(path) as f:
      for line in f:
        line = line.strip()
        if line:
          try:
            rows.append(json.loads(line))
          except ValueError:
            pass  # a line cut by a pre-emption
  except OSError:
    pass
  return rows


def _as_float(v: Any) -> Optional[float]:
  if isinstance(v, bool) or v is None:
    return None
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


def _find(d: Any, names: Sequence[str], subs: Sequence[str] = ()) -> Optional[float]:
  """First numeric value under any of ``names`` in ``d``, else in ``d[sub]``."""
  if not isinstance(d, dict):
    return None
  for n in names:
    if n in d and _as_float(d[n]) is not None:
      return _as_float(d[n])
  for sub in subs:
    v = _find(d.get(sub), names)
    if v is not None:
      return v
  return None


def final_train_loss(summary: Optional[Dict[str, Any]], metrics: List[Dict[str, Any]]
                     ) -> Optional[float]:
  """The last logged training loss (summary.json first, else metrics.jsonl)."""
  # summary.json of nfnet_jax.train: 'final_train_loss' and 'final_train'.
  v = _find(summary, ('final_train_loss', 'train_loss', 'train/loss'),
            subs=('final_train',))
  if v is None and isinstance(summary, dict):
    v = _find(summary.get('final_train'), ('loss',))
  if v is not None:
    return v
  for rec in reversed(metrics):
    if rec.get('split', 'train') != 'train':
      continue
    for k in ('train/loss', 'train_loss', 'loss'):
      if k in rec and _as_float(rec[k]) is not None:
        return _as_float(rec[k])
  return None


def final_top1(summary: Optional[Dict[str, Any]], metrics: List[Dict[str, Any]]
               ) -> Optional[float]:
  """The final (not best) eval top-1 as a fraction in [0, 1]."""
  v = _find(summary, ('eval_top1', 'eval/top1'), subs=('final_eval',))
  if v is None and isinstance(summary, dict):
    v = _find(summary.get('final_eval'), ('top1',))
  if v is None:
    for rec in reversed(metrics):
      if 'eval/top1' in rec and _as_float(rec['eval/top1']) is not None:
        v = _as_float(rec['eval/top1'])
        break
  if v is not None and v > 1.0:  # given in percent
    v /= 100.0
  return v


def train_losses(metrics: List[Dict[str, Any]]) -> List[float]:
  """The logged train losses (one per ``log_every`` window), in step order."""
  out = []
  for rec in metrics:
    if rec.get('split', 'train') != 'train':
      continue
    for k in ('train/loss', 'train_loss'):
      if k in rec:
        v = _as_float(rec[k])
        out.append(float('nan') if v is None else v)
        break
  return out


def classify_run(summary: Optional[Dict[str, Any]], record: Dict[str, Any],
                 metrics: List[Dict[str, Any]]) -> Tuple[str, str]:
  """A run's outcome (one of `OUTCOMES`, or unfinished) and its reason.

  * ``completed``: train.py finished and the final train loss is finite and
    lower than the first logged one (or only one window was logged, which
    cannot tell);
  * ``diverged``: train.py exited with its divergence status (too many
    non-finite steps; ``cli.EXIT_DIVERGED``), or finished with a non-finite
    final train loss;
  * ``failed``: any other exit status, with the log's last line;
  * ``not learning``: finished, finite, but the final train loss (mean of
    the last ``log_every`` window) is no lower than the first window's.

  Unfinished runs are ``missing`` (not run yet, or running) or
  ``preempted`` (checkpointed; the next sweep resumes it).

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
    diverged, preempted = _exit_codes()
    if rc == diverged:
      return 'diverged', record.get('error', '')
    if rc == preempted:
      return 'preempted', 'checkpointed; re-run the sweep to resume'
    return 'failed', record.get('error') or f'exit status {rc}'
  losses = train_losses(metrics)
  final = final_train_loss(summary, metrics)
  if final is None and not losses:
    return 'completed', 'no train loss logged'
  if final is None or not math.isfinite(final):
    return 'diverged', f'final train loss {final}'
  if len(losses) >= 2 and math.isfinite(losses[0]) and final >= losses[0]:
    return 'not learning', f'final train loss {final:.4g} >= initial {losses[0]:.4g}'
  return 'completed', ''


def collect_results(workdir: str, grid: Sequence[Overrides]) -> List[Dict[str, Any]]:
  """One row per grid point, read from each run's files.

  Args:
    workdir: the sweep's workdir.
    grid: the override dicts (one row each, in this order).

  Returns:
    Rows: the swept values plus RESULT_COLUMNS.
  """
  keys = swept_keys(grid)
  rows = []
  for point in grid:
    name = run_name(point)
    rdir = os.path.join(workdir, name)
    summary = _read_json(os.path.join(rdir, 'summary.json'))
    record = _read_json(os.path.join(rdir, RUN_RECORD)) or {}
    metrics = _read_jsonl(os.path.join(rdir, 'metrics.jsonl'))
    outcome, detail = classify_run(summary, record, metrics)
    losses = train_losses(metrics)
    wall = _as_float(record.get('wall_time_s'))
    if wall is None:
      wall = _find(summary, ('cumulative_wall_time_s', 'wall_time_s'))
    row = {k: point.get(k) for k in keys}
    row.update(run_name=name, outcome=outcome,
               initial_train_loss=losses[0] if len(losses) >= 2 else None,
               final_train_loss=final_train_loss(summary, metrics),
               eval_top1=final_top1(summary, metrics), wall_time_s=wall, detail=detail)
    rows.append(row)
  return rows


def write_results_csv(rows: Sequence[Dict[str, Any]], path: str) -> None:
  """Writes the rows (swept keys first, then RESULT_COLUMNS) as CSV."""
  if not rows:
    raise ValueError('no results to write')
  keys = [k for k in rows[0] if k not in RESULT_COLUMNS]
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(keys + list(RESULT_COLUMNS))
    for r in rows:
      out = []
      for k in keys + list(RESULT_COLUMNS):
        v = r.get(k)
        if v is None:
          out.append('None' if k in keys else '')
        elif isinstance(v, float) and k in _LOSS_COLUMNS:
          out.append(f'{v:.6g}')
        elif isinstance(v, float) and k == 'wall_time_s':
          out.append(f'{v:.1f}')
        else:
          out.append(format_value(v) if k in keys else str(v))
      w.writerow(out)


def results_markdown(rows: Sequence[Dict[str, Any]]) -> str:
  """The results as a Markdown table (for docs)."""
  keys = [k for k in rows[0] if k not in RESULT_COLUMNS]
  head = keys + ['outcome', 'final train loss', 'eval top-1 (%)', 'wall time (s)', 'detail']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    loss = r['final_train_loss']
    top1 = r['eval_top1']
    cells = [format_value(r[k]) for k in keys]
    cells += [r['outcome'],
              '-' if loss is None else f'{loss:.4f}',
              '-' if top1 is None else f'{100 * top1:.2f}',
              '-' if r['wall_time_s'] is None else f"{r['wall_time_s']:.0f}",
              (r.get('detail') or '').replace('|', '/')[:120]]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _sort_key(v: Any):
  # None (e.g. clipping off) goes last; numbers ascending; strings after numbers.
  if v is None:
    return (2, 0, '')
  if isinstance(v, (int, float)) and not isinstance(v, bool):
    return (0, float(v), '')
  return (1, 0, str(v))


def heatmap_axes(keys: Sequence[str]) -> Tuple[Optional[str], Optional[str]]:
  """Picks (row key, column key): alpha x clipping when swept, else the first two."""
  keys = list(keys)
  y = next((k for k in keys if k.endswith('alpha')), None)
  x = next((k for k in keys if k.endswith('clipping')), None)
  rest = [k for k in keys if k not in (x, y)]
  if y is None and rest:
    y = rest.pop(0)
  if x is None and rest:
    x = rest.pop(0)
  return y, x


# Which outcome a heatmap cell shows when several runs share it (other swept
# keys): the best one.
_CELL_PRIORITY = ('completed', 'not learning', 'diverged', 'failed', 'preempted', 'missing')


def plot_heatmap(rows: Sequence[Dict[str, Any]], path: str, title: Optional[str] = None) -> None:
  """Draws eval top-1 over (alpha, clipping), with each run's outcome.

  Completed cells show top-1; ``not learning`` cells show top-1 in a orange
  frame; ``diverged`` cells are hatched red; ``failed`` cells are grey. When
  more than two keys are swept, each cell shows its best run (best outcome,
  then best top-1). With a single swept key the map has one row.
  """
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np

  keys = [k for k in rows[0] if k not in RESULT_COLUMNS]
  ykey, xkey = heatmap_axes(keys)
  yvals = sorted({r[ykey] for r in rows}, key=_sort_key) if ykey else [None]
  xvals = sorted({r[xkey] for r in rows}, key=_sort_key) if xkey else [None]
  top = np.full((len(yvals), len(xvals)), np.nan)
  outcome = [[None] * len(xvals) for _ in yvals]
  for r in rows:
    i = yvals.index(r[ykey]) if ykey else 0
    j = xvals.index(r[xkey]) if xkey else 0
    t = r['eval_top1']
    o = r['outcome'] if r['outcome'] in _CELL_PRIORITY else 'failed'
    cur = outcome[i][j]
    better = cur is None or _CELL_PRIORITY.index(o) < _CELL_PRIORITY.index(cur)
    same = cur == o
    if better:
      outcome[i][j] = o
      top[i, j] = np.nan
    if (better or same) and o in ('completed', 'not learning') and t is not None \
        and math.isfinite(t):
      top[i, j] = t if np.isnan(top[i, j]) else max(top[i, j], t)
  fig, ax = plt.subplots(figsize=(1.5 * len(xvals) + 2.5, 0.9 * len(yvals) + 1.8))
  shown = np.ma.masked_invalid(100 * top)
  finite = top[np.isfinite(top)]
  vmin = 100 * finite.min() if finite.size else 0
  vmax = 100 * finite.max() if finite.size else 100
  im = ax.imshow(shown, cmap='viridis', vmin=vmin, vmax=max(vmax, vmin + 1e-6),
                 aspect='auto', origin='lower')
  ax.set_facecolor('0.85')
  box = dict(facecolor='white', alpha=0.8, lw=0)
  for i in range(len(yvals)):
    for j in range(len(xvals)):
      o = outcome[i][j]
      if o == 'diverged':
        ax.add_patch(plt.Rectangle((j - .5, i - .5), 1, 1, fill=False, hatch='xx',
                                   edgecolor='red', lw=0))
        ax.text(j, i, 'diverged', ha='center', va='center', color='red', fontsize=8, bbox=box)
      elif o in ('completed', 'not learning') and np.isfinite(top[i, j]):
        label = f'{100 * top[i, j]:.1f}'
        if o == 'not learning':
          ax.add_patch(plt.Rectangle((j - .45, i - .45), .9, .9, fill=False,
                                     edgecolor='orange', lw=2))
          label += '\nnot learning'
        ax.text(j, i, label, ha='center', va='center', fontsize=8,
                color='white' if top[i, j] < finite.mean() else 'black')
      elif o is not None and o != 'missing':
        ax.text(j, i, o if o != 'completed' else 'no eval', ha='center', va='center',
                fontsize=8, color='0.2', bbox=box)
      else:
        ax.text(j, i, 'n/a', ha='center', va='center', fontsize=8)
  fmt = lambda v: 'off' if v is None else format_value(v)
  # A single swept key leaves one axis without values: no tick label there.
  ax.set_xticks(range(len(xvals)), [fmt(v) for v in xvals] if xkey else [''])
  ax.set_yticks(range(len(yvals)), [fmt(v) for v in yvals] if ykey else [''])
  ax.set_xlabel(f'{xkey} (AGC lambda; off = no clipping)' if xkey and xkey.endswith('clipping')
                else (xkey or ''))
  ax.set_ylabel(ykey or '')
  fig.colorbar(im, ax=ax, label='eval top-1 (%)')
  ax.set_title(title or 'Sweep: eval top-1 and run outcome')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_agc_reports(workdir: str, grid: Sequence[Overrides]) -> List[str]:
  """``agc_report.png`` in every run dir whose run logged AGC telemetry."""
  from nfnet_jax.analysis import agc_report  # pylint: disable=g-import-not-at-top
  out = []
  for point in grid:
    path = agc_report.plot_agc_report(os.path.join(workdir, run_name(point)))
    if path:
      out.append(path)
  return out
