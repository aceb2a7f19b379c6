"""Hyper-parameter sweeps: grid expansion, a resumable runner, results, heatmap.

A sweep is a list of override dicts (``{'model.alpha': 0.2,
'optimizer.clipping': None}``), one per run. It comes from the product of
``--sweep key=v1,v2,...`` flags and/or from a config module's ``get_sweep()``.
Every run trains in its own sub-workdir ``W/<run_name>/`` through a subprocess
``python scripts/train.py --config C --workdir W/<run_name> --config.a.b=v``,
so a crashing or diverging run cannot take the sweep down, and the same
commands can be printed for a cluster scheduler instead. A run whose
``summary.json`` exists is finished and is not re-run (resumable sweeps).

After the runs, :func:`collect_results` reads each run's ``summary.json`` and
``metrics.jsonl`` into one row per grid point, :func:`write_results_csv`
writes ``W/results.csv`` and :func:`plot_heatmap` draws ``W/heatmap.png``.
"""
import concurrent.futures
import csv
import itertools
import json
import math
import os
import re
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
RESULT_COLUMNS = ('run_name', 'status', 'final_train_loss', 'eval_top1', 'diverged',
                  'wall_time_s')
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


def sweep_from_config(config_path: str) -> Optional[List[Overrides]]:
  """Returns the config module's ``get_sweep()`` list, or None if it has none."""
  module = load_config_module(config_path)
  fn = getattr(module, 'get_sweep', None)
  if fn is None:
    return None
  sweep = list(fn())
  for i, p in enumerate(sweep):
    if not isinstance(p, dict):
      raise ValueError(f'get_sweep() in {config_path} must return a list of dicts; item {i} is {p!r}')
  return [{k[len('config.'):] if k.startswith('config.') else k: v for k, v in p.items()}
          for p in sweep]


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


# Messages with which the training loop stops a run that blew up: such a run
# failed deterministically and counts as finished (diverged), not as a crash
# to retry.
DIVERGED_MARKERS = ('training diverged', 'FloatingPointError')


def is_finished(run_workdir: str) -> bool:
  """Finished: the loop wrote summary.json, or the run stopped as diverged."""
  if os.path.exists(os.path.join(run_workdir, 'summary.json')):
    return True
  record = _read_json(os.path.join(run_workdir, RUN_RECORD)) or {}
  return bool(record.get('diverged'))


def _log_tail(path: str, size: int = 20_000) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(max(0, os.path.getsize(path) - size))
      return f.read().decode(errors='replace')
  except OSError:
    return ''


def _run_one(cmd: List[str], run_workdir: str, timeout: Optional[float]) -> Dict[str, Any]:
  os.makedirs(run_workdir, exist_ok=True)
  start = time.time()
  log_path = os.path.join(run_workdir, 'train.log')
  rc = None
  with open(log_path, 'ab') as log:
    log.write(('$ ' + shell_join(cmd) + '\n').encode())
    log.flush()
    try:
      proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                            check=False)
      rc = proc.returncode
    except subprocess.TimeoutExpired:
      rc = 'timeout'
  record = {'returncode': rc, 'wall_time_s': time.time() - start, 'command': cmd}
  if rc != 0:
    tail = _log_tail(log_path)
    record['diverged'] = any(m in tail for m in DIVERGED_MARKERS)
  with open(os.path.join(run_workdir, RUN_RECORD), 'w') as f:
    json.dump(record, f, indent=1)
  return record


def run_sweep(config: str, workdir: str, grid: Sequence[Overrides], *, parallel: int = 1,
              extra_args: Sequence[str] = (), train_cmd: Optional[Sequence[str]] = None,
              timeout: Optional[float] = None, log=print) -> Dict[str, str]:
  """Runs every unfinished grid point, ``parallel`` subprocesses at a time.

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
    run_name -> 'skipped' (already finished), 'ok' or 'failed (rc=...)'.
  """
  if not isinstance(parallel, int) or parallel < 1:
    raise ValueError(f'--parallel must be an integer >= 1, got {parallel!r}')
  os.makedirs(workdir, exist_ok=True)
  status = {}
  todo = []
  for point in grid:
    name = run_name(point)
    rdir = os.path.join(workdir, name)
    if is_finished(rdir):
      status[name] = 'skipped'
      log(f'[sweep] {name}: finished earlier, skipping')
      continue
    todo.append((name, rdir, build_command(config, rdir, point, extra_args, train_cmd)))
  with open(os.path.join(workdir, 'sweep.json'), 'w') as f:
    json.dump({'config': config, 'grid': list(grid), 'extra_args': list(extra_args)}, f,
              indent=1, default=str)

  def _go(item):
    name, rdir, cmd = item
    log(f'[sweep] {name}: start')
    rec = _run_one(cmd, rdir, timeout)
    ok = rec['returncode'] == 0
    outcome = 'ok' if ok else ('DIVERGED' if rec.get('diverged') else 'FAILED')
    log(f"[sweep] {name}: {outcome} rc={rec['returncode']} "
        f"in {rec['wall_time_s']:.0f}s (log: {os.path.join(rdir, 'train.log')})")
    if ok:
      return name, 'ok'
    return name, f"{'diverged' if rec.get('diverged') else 'failed'} (rc={rec['returncode']})"

  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    for name, st in pool.map(_go, todo):
      status[name] = st
  return status


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


def is_diverged(status: str, loss: Optional[float], top1: Optional[float],
                chance_top1: float, summary: Optional[Dict[str, Any]] = None) -> bool:
  """Whether a run diverged.

  A run counts as diverged when it failed or stopped on non-finite values, its
  final train loss is non-finite, or its eval top-1 is no better than
  ``2 * chance_top1`` (a model that blew up and recovered to a constant
  prediction has a finite loss but chance accuracy).
  """
  if status.startswith(('failed', 'diverged')) or status == 'missing':
    return True
  if isinstance(summary, dict) and summary.get('diverged'):
    return True
  if loss is not None and not math.isfinite(loss):
    return True
  if top1 is None or not math.isfinite(top1):
    return True
  return top1 <= 2.0 * chance_top1


def collect_results(workdir: str, grid: Sequence[Overrides], *, chance_top1: float = 0.1
                    ) -> List[Dict[str, Any]]:
  """One row per grid point, read from each run's files.

  Args:
    workdir: the sweep's workdir.
    grid: the override dicts (one row each, in this order).
    chance_top1: the top-1 of guessing (1 / num_classes); runs at most twice
      that are marked diverged.

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
    if summary is not None:
      status = 'ok'
    elif record:
      status = (f"{'diverged' if record.get('diverged') else 'failed'} "
                f"(rc={record.get('returncode')})")
    else:
      status = 'missing'
    loss = final_train_loss(summary, metrics)
    top1 = final_top1(summary, metrics)
    wall = _as_float(record.get('wall_time_s'))
    if wall is None:
      wall = _find(summary, ('cumulative_wall_time_s', 'wall_time_s'))
    row = {k: point.get(k) for k in keys}
    row.update(run_name=name, status=status, final_train_loss=loss, eval_top1=top1,
               diverged='yes' if is_diverged(status, loss, top1, chance_top1, summary) else 'no',
               wall_time_s=wall)
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
        elif isinstance(v, float) and k in ('final_train_loss', 'eval_top1'):
          out.append(f'{v:.6g}')
        elif isinstance(v, float) and k == 'wall_time_s':
          out.append(f'{v:.1f}')
        else:
          out.append(format_value(v) if k in keys else str(v))
      w.writerow(out)


def results_markdown(rows: Sequence[Dict[str, Any]]) -> str:
  """The results as a Markdown table (for docs)."""
  keys = [k for k in rows[0] if k not in RESULT_COLUMNS]
  head = keys + ['final train loss', 'eval top-1 (%)', 'diverged', 'wall time (s)']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    loss = r['final_train_loss']
    top1 = r['eval_top1']
    cells = [format_value(r[k]) for k in keys]
    cells += ['-' if loss is None else f'{loss:.4f}',
              '-' if top1 is None else f'{100 * top1:.2f}',
              r['diverged'],
              '-' if r['wall_time_s'] is None else f"{r['wall_time_s']:.0f}"]
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


def plot_heatmap(rows: Sequence[Dict[str, Any]], path: str, title: Optional[str] = None) -> None:
  """Draws eval top-1 over (alpha, clipping); diverged cells are hatched with 'x'.

  When more than two keys are swept, each cell shows the best top-1 over the
  other keys. With a single swept key the map has one row.
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
  div = np.zeros((len(yvals), len(xvals)), bool)
  seen = np.zeros((len(yvals), len(xvals)), bool)
  for r in rows:
    i = yvals.index(r[ykey]) if ykey else 0
    j = xvals.index(r[xkey]) if xkey else 0
    t = r['eval_top1']
    diverged = r['diverged'] == 'yes'
    # Best over the other swept keys; a cell is diverged only if all its runs are.
    if t is not None and math.isfinite(t) and not diverged:
      top[i, j] = t if np.isnan(top[i, j]) else max(top[i, j], t)
    div[i, j] = diverged if not seen[i, j] else (div[i, j] and diverged)
    seen[i, j] = True
  fig, ax = plt.subplots(figsize=(1.4 * len(xvals) + 2.5, 0.9 * len(yvals) + 1.8))
  shown = np.ma.masked_invalid(100 * top)
  finite = top[np.isfinite(top)]
  vmin = 100 * finite.min() if finite.size else 0
  vmax = 100 * finite.max() if finite.size else 100
  im = ax.imshow(shown, cmap='viridis', vmin=vmin, vmax=max(vmax, vmin + 1e-6),
                 aspect='auto', origin='lower')
  ax.set_facecolor('0.85')
  for i in range(len(yvals)):
    for j in range(len(xvals)):
      if div[i, j]:
        ax.add_patch(plt.Rectangle((j - .5, i - .5), 1, 1, fill=False, hatch='xx',
                                   edgecolor='red', lw=0))
        ax.text(j, i, 'diverged', ha='center', va='center', color='red', fontsize=8,
                bbox=dict(facecolor='white', alpha=0.8, lw=0))
      elif np.isfinite(top[i, j]):
        ax.text(j, i, f'{100 * top[i, j]:.1f}', ha='center', va='center',
                color='white' if top[i, j] < (top[np.isfinite(top)].mean()) else 'black',
                fontsize=9)
      elif not seen[i, j]:
        ax.text(j, i, 'n/a', ha='center', va='center', fontsize=8)
  fmt = lambda v: 'off' if v is None else format_value(v)
  ax.set_xticks(range(len(xvals)), [fmt(v) for v in xvals])
  ax.set_yticks(range(len(yvals)), [fmt(v) for v in yvals])
  ax.set_xlabel(f'{xkey} (AGC lambda; off = no clipping)' if xkey and xkey.endswith('clipping')
                else (xkey or ''))
  ax.set_ylabel(ykey or '')
  fig.colorbar(im, ax=ax, label='eval top-1 (%)')
  ax.set_title(title or 'Sweep: eval top-1 (red x = diverged)')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def chance_top1_from_config(config_path: str) -> float:
  """1 / num_classes of the config's data set; 0.1 when it cannot be told cheaply."""
  try:
    cfg = load_config(config_path)
    from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
    return 1.0 / data_lib.dataset_info(cfg.data).num_classes
  except Exception:  # pylint: disable=broad-except
    return 0.1
