"""Study reports: repeats (seeds) aggregated into mean +- std, a table and a figure.

A sweep's ``results.csv`` (:mod:`nfnet_jax.analysis.sweep`) keeps one row per
run. When the grid repeats each setting over seeds (``--repeats N``,
``--sweep seed=0,1,2`` or a ``seed`` key in ``get_sweep()``), the runs that
differ only in their seed form one *cell*. :func:`aggregate` turns the rows
into cells: the mean and sample standard deviation (``ddof=1``, the spread
the papers quote as "mean +- std of N runs") of the final eval top-1 and
train loss over the cell's runs that finished with a finite loss
(``completed`` and ``not learning``, see ``sweep.classify_run``: averaged
in, since that is what the setting gives in this budget), ``n`` of them, and
how many runs of each outcome the cell holds. ``diverged`` runs are counted,
never averaged in: they have no meaningful accuracy; nor are ``failed``,
``preempted`` or ``missing`` ones.

:func:`cells_markdown` renders the cells as a Markdown table and
:func:`plot_cells` as a bar chart with error bars and one dot per seed;
``scripts/report.py SWEEP_WORKDIR`` writes both for a finished study.
"""
import csv
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from nfnet_jax.analysis import sweep as sweep_lib

# Keys that only repeat a setting; the cell is every other swept key.
SEED_KEYS = ('seed',)
OUTCOMES = ('completed', 'not learning', 'diverged', 'failed', 'preempted', 'missing')
# Outcomes whose final metrics enter the mean.
_AVERAGED = ('completed', 'not learning')
_METRICS = ('initial_train_loss', 'final_train_loss', 'eval_top1', 'wall_time_s')
# Per-run columns of results.csv; those of earlier versions (status,
# diverged) are still read.
_RUN_COLUMNS = frozenset(sweep_lib.RESULT_COLUMNS) | {'outcome', 'status', 'diverged', 'detail'}


def _float(text: Any) -> Optional[float]:
  if text is None or text == '':
    return None
  try:
    return float(text)
  except (TypeError, ValueError):
    return None


def read_results_csv(path: str) -> List[Dict[str, Any]]:
  """Reads a sweep's results.csv back into rows.

  Swept values are parsed as the sweep parses them (``None``, numbers,
  strings); the metric columns become floats (None when empty).

  Raises:
    ValueError: when the file is missing or lacks the run columns.
  """
  if not os.path.exists(path):
    raise ValueError(f'{path} does not exist; run the sweep first (scripts/sweep.py) or give '
                     'the sweep workdir that holds results.csv')
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    fields = reader.fieldnames or []
    missing = [c for c in ('run_name', 'eval_top1') if c not in fields]
    if 'outcome' not in fields and 'status' not in fields:
      missing.append('outcome')
    if missing:
      raise ValueError(f'{path} is not a sweep results.csv: it lacks the columns {missing}')
    keys = [k for k in fields if k not in _RUN_COLUMNS]
    rows = []
    for rec in reader:
      row = {k: sweep_lib.parse_value(rec[k]) for k in keys}
      for k in fields:
        if k in keys:
          continue
        row[k] = _float(rec[k]) if k in _METRICS else rec[k]
      rows.append(row)
  return rows


def run_outcome(row: Dict[str, Any]) -> str:
  """One of OUTCOMES for a results row.

  Uses the ``outcome`` column of ``sweep.collect_results``. Results of
  earlier sweeps have ``status`` and a ``diverged`` flag instead: there a
  finished run flagged diverged (at most twice chance top-1) is 'not
  learning' when its train loss is finite.
  """
  outcome = str(row.get('outcome') or '').lower()
  if outcome:
    for o in OUTCOMES:
      if outcome.startswith(o):
        return o
    return 'completed' if outcome == 'ok' else 'failed'
  status = str(row.get('status') or 'missing')
  if status == 'missing':
    return 'missing'
  if status.startswith('diverged'):
    return 'diverged'
  if status.startswith(('failed', 'timeout')):
    return 'failed'
  if str(row.get('diverged')) != 'yes':
    return 'completed'
  loss = row.get('final_train_loss')
  loss = _float(loss) if not isinstance(loss, float) else loss
  return 'not learning' if loss is not None and math.isfinite(loss) else 'diverged'


def cell_keys(rows: Sequence[Dict[str, Any]], seed_keys: Sequence[str] = SEED_KEYS
              ) -> List[str]:
  """The swept keys that define a cell: every swept key except the seed."""
  if not rows:
    return []
  return [k for k in rows[0] if k not in _RUN_COLUMNS and k not in seed_keys]


def mean_std(values: Sequence[float]) -> Dict[str, Any]:
  """{'mean', 'std', 'n'}: sample std (ddof=1); std is None for n < 2, mean None for n = 0."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
  n = int(v.size)
  return {'mean': float(v.mean()) if n else None,
          'std': float(v.std(ddof=1)) if n >= 2 else None,
          'n': n}


def aggregate(rows: Sequence[Dict[str, Any]], seed_keys: Sequence[str] = SEED_KEYS
              ) -> List[Dict[str, Any]]:
  """Groups runs that differ only in their seed into cells.

  Args:
    rows: results rows (:func:`read_results_csv` or
      ``sweep.collect_results``).
    seed_keys: the keys that repeat a setting.

  Returns:
    One dict per cell in first-seen order: the cell's key values, then
    ``runs`` (all its runs), ``seeds`` (their seed values), ``counts``
    (outcome -> number of runs), ``top1`` and ``loss`` (mean_std over the
    cell's completed and not-learning runs), ``top1_values`` (those runs' top-1s,
    for plots) and
    ``wall_time_s`` (mean_std over runs that have one).
  """
  keys = cell_keys(rows, seed_keys)
  cells: Dict[tuple, Dict[str, Any]] = {}
  for r in rows:
    ident = tuple(sweep_lib.format_value(r.get(k)) for k in keys)
    if ident not in cells:
      cells[ident] = {k: r.get(k) for k in keys}
      cells[ident]['_rows'] = []
    cells[ident]['_rows'].append(r)
  out = []
  for cell in cells.values():
    runs = cell.pop('_rows')
    outcomes = [run_outcome(r) for r in runs]
    ok = [r for r, o in zip(runs, outcomes) if o in _AVERAGED]
    cell['runs'] = len(runs)
    cell['seeds'] = [tuple(r.get(k) for k in seed_keys if k in r) for r in runs]
    cell['counts'] = {o: outcomes.count(o) for o in OUTCOMES}
    cell['top1'] = mean_std([r.get('eval_top1') for r in ok])
    cell['top1_values'] = [r.get('eval_top1') for r in ok
                           if r.get('eval_top1') is not None]
    cell['loss'] = mean_std([r.get('final_train_loss') for r in ok])
    cell['wall_time_s'] = mean_std([r.get('wall_time_s') for r in runs])
    out.append(cell)
  return out


def display_keys(cells: Sequence[Dict[str, Any]], keys: Sequence[str]) -> List[str]:
  """The keys worth a table column: those not fixed by the other shown keys.

  A study may sweep keys that move together (a batch size with the step
  count that keeps the epochs equal, a model name with its fields); showing
  them all buries the comparison. Walking from the last key to the first,
  a key is dropped when its value is a function of the keys still shown.
  """
  shown = list(keys)
  for k in reversed(list(keys)):
    others = [o for o in shown if o != k]
    if not others:
      break
    seen: Dict[tuple, str] = {}
    determined = True
    for c in cells:
      ident = tuple(sweep_lib.format_value(c.get(o)) for o in others)
      val = sweep_lib.format_value(c.get(k))
      if seen.setdefault(ident, val) != val:
        determined = False
        break
    if determined:
      shown.remove(k)
  return shown


def _model_label(cell: Dict[str, Any]) -> Optional[str]:
  """'ResNet (batchnorm)' / 'NFResNet' when the cell sweeps the model family."""
  name = cell.get('model.name')
  if name is None:
    return None
  norm = cell.get('model.norm')
  return f'{name} ({norm})' if norm else str(name)


def _columns(cells: Sequence[Dict[str, Any]]) -> List[str]:
  keys = cell_keys([{k: v for k, v in cells[0].items()
                     if k not in ('runs', 'seeds', 'counts', 'top1', 'top1_values', 'loss',
                                  'wall_time_s')}]) if cells else []
  model_keys = [k for k in keys if k in ('model.name', 'model.norm', 'model.alpha')]
  if 'model.name' in keys:
    # One 'model' column stands for the family's fields.
    rest = display_keys(cells, [k for k in keys if k not in model_keys])
    return ['model'] + rest
  return display_keys(cells, keys)


def _value(cell: Dict[str, Any], key: str) -> str:
  if key == 'model':
    return _model_label(cell) or '-'
  v = cell.get(key)
  if key.endswith('clipping') and v is None:
    return 'off'
  return sweep_lib.format_value(v)


def _fmt_ms(stats: Dict[str, Any], scale: float, digits: int) -> str:
  if stats['mean'] is None:
    return '-'
  text = f"{scale * stats['mean']:.{digits}f}"
  if stats['std'] is not None:
    text += f" ± {scale * stats['std']:.{digits}f}"
  return text


def _fmt_counts(counts: Dict[str, int]) -> str:
  parts = [f"{counts['completed']} completed"]
  parts += [f'{counts[o]} {o}' for o in OUTCOMES[1:] if counts.get(o)]
  return ', '.join(parts)


def cells_markdown(cells: Sequence[Dict[str, Any]]) -> str:
  """The cells as a Markdown table: mean ± std (n) of top-1 and loss, outcomes."""
  if not cells:
    return '(no runs)\n'
  cols = _columns(cells)
  head = cols + ['eval top-1 (%)', 'n', 'final train loss', 'runs', 'wall time / run (s)']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for c in cells:
    cells_ = [_value(c, k) for k in cols]
    cells_ += [_fmt_ms(c['top1'], 100.0, 2), str(c['top1']['n']), _fmt_ms(c['loss'], 1.0, 3),
               _fmt_counts(c['counts']),
               '-' if c['wall_time_s']['mean'] is None else f"{c['wall_time_s']['mean']:.0f}"]
    lines.append('| ' + ' | '.join(cells_) + ' |')
  return '\n'.join(lines) + '\n'


def cell_label(cell: Dict[str, Any], cols: Sequence[str]) -> str:
  """A short label of a cell for plots: 'model / batch_size=8'."""
  parts = []
  for k in cols:
    v = _value(cell, k)
    parts.append(v if k == 'model' else f"{k.split('.')[-1]}={v}")
  return '\n'.join(parts) if parts else 'all'


def plot_cells(cells: Sequence[Dict[str, Any]], path: str, title: Optional[str] = None) -> None:
  """Bar chart of eval top-1 per cell: mean ± std, one dot per seed.

  A cell whose runs diverged, failed or are missing is marked in red with
  its counts; a cell with no finished run has no bar.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  cols = _columns(cells) if cells else []
  # Colour by the last shown key (batch size, clipping, ...) to group the bars.
  shade_key = cols[-1] if len(cols) > 1 else None
  shades = []
  for c in cells:
    v = _value(c, shade_key) if shade_key else ''
    if v not in shades:
      shades.append(v)
  fig, ax = plt.subplots(figsize=(max(5.0, 1.5 * len(cells) + 2.0), 4.8))
  finite = [100 * v for c in cells for v in c['top1_values']]
  floor = max(0.0, min(finite) - 10.0) if finite else 0.0
  top = max(finite) + 4.0 if finite else 100.0
  for i, c in enumerate(cells):
    m = c['top1']
    if m['mean'] is not None:
      shade = f'C{shades.index(_value(c, shade_key)) % 10}' if shade_key else 'C0'
      ax.bar(i, 100 * m['mean'] - floor, bottom=floor, color=shade, alpha=0.6,
             yerr=None if m['std'] is None else 100 * m['std'], capsize=4)
      ax.scatter([i] * len(c['top1_values']), [100 * v for v in c['top1_values']],
                 color='k', s=12, zorder=3)
      ax.text(i, floor + 0.5, f"n={m['n']}", ha='center', va='bottom', fontsize=8)
    bad = {o: n for o, n in c['counts'].items() if o != 'completed' and n}
    if bad:
      ax.text(i, top - 1.0, '\n'.join(f'{n} {o}' for o, n in bad.items()), ha='center',
              va='top', color='red', fontsize=8)
  ax.set_xticks(range(len(cells)), [cell_label(c, cols) for c in cells], fontsize=7)
  ax.set_xlim(-0.6, len(cells) - 0.4)
  ax.set_ylim(floor, top)
  ax.set_ylabel('final eval top-1 (%)')
  ax.set_title(title or 'mean ± std over seeds (dots: single runs)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def load_rows(workdir: str, collect: bool = False) -> List[Dict[str, Any]]:
  """The rows of a sweep workdir's results.csv, written from its runs when needed.

  Args:
    workdir: the sweep workdir (holds results.csv and/or sweep.json).
    collect: re-read every run's files (via sweep.json's grid) and rewrite
      results.csv first, e.g. for a sweep still in progress.

  Returns:
    The rows, as read back from results.csv (so every reported number is
    one that file holds).
  """
  if not os.path.isdir(workdir):
    raise ValueError(f'sweep workdir {workdir!r} does not exist')
  csv_path = os.path.join(workdir, 'results.csv')
  if collect or not os.path.exists(csv_path):
    spec = sweep_lib._read_json(os.path.join(workdir, 'sweep.json'))  # pylint: disable=protected-access
    if not spec or 'grid' not in spec:
      raise ValueError(f'{workdir} has neither results.csv nor sweep.json; is it a sweep workdir '
                       '(scripts/sweep.py --workdir)?')
    rows = sweep_lib.collect_results(workdir, spec['grid'])
    sweep_lib.write_results_csv(rows, csv_path)
  return read_results_csv(csv_path)


def write_report(workdir: str, out_prefix: Optional[str] = None, collect: bool = False,
                 title: Optional[str] = None) -> Dict[str, str]:
  """Writes ``<prefix>.md`` (the table) and ``<prefix>.png`` for a sweep workdir.

  Args:
    workdir: the sweep workdir.
    out_prefix: output path without extension; default ``workdir/report``.
    collect: re-collect results.csv from the runs first.
    title: figure title.

  Returns:
    {'markdown': path, 'png': path, 'table': the Markdown text}.
  """
  rows = load_rows(workdir, collect=collect)
  cells = aggregate(rows)
  prefix = out_prefix or os.path.join(workdir, 'report')
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  table = cells_markdown(cells)
  n_runs = len(rows)
  counts = {o: sum(c['counts'][o] for c in cells) for o in OUTCOMES}
  header = (f'{n_runs} runs in {len(cells)} cells ({_fmt_counts(counts)}); mean ± sample std '
            f'over the seeds of each cell; n = runs that finished with a finite loss '
            f'(completed or not learning).\n\n')
  with open(prefix + '.md', 'w') as f:
    f.write(header + table)
  plot_cells(cells, prefix + '.png', title=title)
  return {'markdown': prefix + '.md', 'png': prefix + '.png', 'table': header + table}
