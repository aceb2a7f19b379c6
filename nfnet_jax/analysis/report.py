"""Study reports: repeats (seeds) aggregated into mean +- std, a table and a figure.

A sweep's ``results.csv`` (:mod:`nfnet_jax.analysis.sweeps`) keeps one row per
run. When the grid repeats each setting over seeds (``--repeats N``,
``--sweep seed=0,1,2`` or a ``seed`` key in ``get_sweep()``), the runs that
differ only in their seed form one *cell*. :func:`aggregate` turns the rows
into cells: the mean and sample standard deviation (``ddof=1``, the spread
the papers quote as "mean +- std of N runs") of the final eval top-1 and
train loss over the cell's runs that finished with a finite loss
(``completed`` and ``not learning``, see ``sweeps.classify_run``: averaged
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

from nfnet_jax.analysis import sweeps as sweep_lib
from nfnet_jax.analysis.sweeps.outcomes import OUTCOMES

# Keys that only repeat a setting; the cell is every other swept key.
SEED_KEYS = ('seed',)
# Swept keys that one 'model' column stands for.
MODEL_KEYS = ('model.name', 'model.norm', 'model.alpha', 'model.bn_cross_replica')
# Outcomes whose final metrics enter the mean.
_AVERAGED = ('completed', 'not learning')
_METRICS = ('initial_train_loss', 'final_train_loss', 'eval_top1', 'train_top1', 'wall_time_s')
# Per-run columns of results.csv; those of earlier versions (status,
# diverged) are still read.
_RUN_COLUMNS = (frozenset(sweep_lib.RESULT_COLUMNS)
                | {'outcome', 'status', 'diverged', 'detail', 'train_top1'})


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

  Uses the ``outcome`` column of ``sweeps.collect_results``. Results of
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


def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta function (modified Lentz)."""
  tiny, eps = 1e-300, 1e-15
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 500):
    m2 = 2 * m
    for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
               -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
      d = 1.0 + aa * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + aa / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < eps:
      break
  return h


def betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b)."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                   + a * math.log(x) + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return front * _betacf(a, b, x) / a
  return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
  """P(|T| >= |t|) for Student's t with ``df`` (real) degrees of freedom."""
  if not math.isfinite(t):
    return 0.0
  return betainc(df / 2.0, 0.5, df / (df + t * t))


def welch(a: Sequence[float], b: Sequence[float]) -> Dict[str, Any]:
  """Welch's unequal-variance t-test of mean(a) - mean(b).

  Returns:
    ``diff`` (mean(a) - mean(b)), ``se`` (sqrt(var_a/n_a + var_b/n_b), sample
    variances), ``t``, ``df`` (Welch-Satterthwaite), ``p`` (two-sided) and
    ``n_a`` / ``n_b``; the statistics are None with fewer than 2 runs on a side.
  """
  a = np.asarray([x for x in a if x is not None and math.isfinite(x)], np.float64)
  b = np.asarray([x for x in b if x is not None and math.isfinite(x)], np.float64)
  out = {'n_a': int(a.size), 'n_b': int(b.size), 'diff': None, 'se': None, 't': None,
         'df': None, 'p': None}
  if a.size and b.size:
    out['diff'] = float(a.mean() - b.mean())
  if a.size < 2 or b.size < 2:
    return out
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  se = math.sqrt(va + vb)
  out['se'] = se
  if se == 0.0:
    return out
  out['t'] = out['diff'] / se
  out['df'] = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
  out['p'] = t_two_sided_p(out['t'], out['df'])
  return out


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
    for plots), ``train_top1`` and ``gap`` (train top-1 on ``data.train_eval_split``
    and train minus test top-1 per run, when results.csv has ``train_top1``) and
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
    cell['train_top1'] = mean_std([r.get('train_top1') for r in ok])
    cell['_train_values'] = [r.get('train_top1') for r in ok if r.get('train_top1') is not None]
    # Per run: train top-1 minus test top-1 (the overfitting gap).
    cell['gap'] = mean_std([r['train_top1'] - r['eval_top1'] for r in ok
                            if r.get('train_top1') is not None and r.get('eval_top1') is not None])
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
  """'ResNet (batchnorm)' / 'NFResNet' when the cell sweeps the model family.

  BatchNorm arms that set ``model.bn_cross_replica`` say where their
  statistics come from: 'ResNet (batchnorm, per device)' / '(batchnorm, synced)'.
  """
  name = cell.get('model.name')
  if name is None:
    return None
  norm = cell.get('model.norm')
  if norm == 'batchnorm' and cell.get('model.bn_cross_replica') is not None:
    norm += ', synced' if cell['model.bn_cross_replica'] else ', per device'
  return f'{name} ({norm})' if norm else str(name)


def _columns(cells: Sequence[Dict[str, Any]]) -> List[str]:
  keys = (cell_keys([{k: v for k, v in cells[0].items()
                     if k not in ('runs', 'seeds', 'counts', 'top1', 'top1_values', 'loss',
                                  'wall_time_s', 'train_top1', 'gap', '_train_values')}])
          if cells else [])
  model_keys = [k for k in keys if k in MODEL_KEYS]
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
  train = any(c.get('train_top1', {}).get('n') for c in cells)
  head = cols + ['eval top-1 (%)', 'n']
  if train:
    head += ['train top-1 (%)', 'train - test gap (points)']
  head += ['final train loss', 'runs', 'wall time / run (s)']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for c in cells:
    cells_ = [_value(c, k) for k in cols]
    cells_ += [_fmt_ms(c['top1'], 100.0, 2), str(c['top1']['n'])]
    if train:
      cells_ += [_fmt_ms(c['train_top1'], 100.0, 2), _fmt_ms(c['gap'], 100.0, 2)]
    cells_ += [_fmt_ms(c['loss'], 1.0, 3), _fmt_counts(c['counts']),
               '-' if c['wall_time_s']['mean'] is None else f"{c['wall_time_s']['mean']:.0f}"]
    lines.append('| ' + ' | '.join(cells_) + ' |')
  return '\n'.join(lines) + '\n'


def parse_baseline(spec: str) -> tuple:
  """``'COLUMN=VALUE'`` -> (column, value); the column as the table names it."""
  if not isinstance(spec, str) or '=' not in spec or not spec.split('=', 1)[0].strip():
    raise ValueError(f'--baseline {spec!r}: expected COLUMN=VALUE, e.g. '
                     "'model=ResNet (batchnorm, per device)' or 'model.drop_rate=0.0'")
  col, value = spec.split('=', 1)
  return col.strip(), value.strip()


def compare(cells: Sequence[Dict[str, Any]], baseline: str, metric: str = 'top1'
            ) -> List[Dict[str, Any]]:
  """Each cell against the baseline cell that differs from it in one column only.

  Args:
    cells: :func:`aggregate`'s cells.
    baseline: ``'COLUMN=VALUE'``: COLUMN is a table column (``model`` or a
      swept key), VALUE its value as the table shows it. Every cell whose
      COLUMN differs is paired with the cell that has COLUMN=VALUE and the
      same values in every other column.
    metric: ``'top1'`` (test) or ``'train_top1'``.

  Returns:
    Rows ``{'cell', 'base', 'test'}`` with ``test`` = :func:`welch` of the
    cell's runs against the baseline's (top-1 as fractions).

  Raises:
    ValueError: an unknown column, or no cell has VALUE.
  """
  col, value = parse_baseline(baseline)
  cols = _columns(cells) if cells else []
  if col not in cols:
    raise ValueError(f'--baseline {baseline!r}: the table has no column {col!r}; columns: {cols}')
  bases = [c for c in cells if _value(c, col) == value]
  if not bases:
    raise ValueError(f'--baseline {baseline!r}: no cell has {col} = {value!r}; values: '
                     f'{sorted({_value(c, col) for c in cells})}')
  others = [k for k in cols if k != col]
  key = lambda c: tuple(_value(c, k) for k in others)
  by_key = {key(b): b for b in bases}
  values = 'top1_values' if metric == 'top1' else None
  out = []
  for c in cells:
    b = by_key.get(key(c))
    if b is None or c is b:
      continue
    if values:
      va, vb = c[values], b[values]
    else:
      va, vb = c['_train_values'], b['_train_values']
    out.append({'cell': c, 'base': b, 'test': welch(va, vb)})
  return out


def _fmt(v, digits):
  return '-' if v is None else f'{v:.{digits}f}'


def _fmt_p(p):
  if p is None:
    return '-'
  return f'{p:.2g}' if p >= 1e-4 else f'{p:.1e}'


def comparison_markdown(cells: Sequence[Dict[str, Any]], baseline: str,
                        metric: str = 'top1') -> str:
  """:func:`compare` as a Markdown table: difference (points) ± SE, Welch t, df, p."""
  rows = compare(cells, baseline, metric)
  col, value = parse_baseline(baseline)
  cols = _columns(cells)
  what = 'test' if metric == 'top1' else 'train'
  head = cols + [f'{what} top-1 minus {col} = {value} (points)', 'SE', 'n (cell, baseline)',
                 'Welch t', 'df', 'p (two-sided)']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    t = r['test']
    diff = None if t['diff'] is None else 100 * t['diff']
    se = None if t['se'] is None else 100 * t['se']
    lines.append('| ' + ' | '.join(
        [_value(r['cell'], k) for k in cols]
        + [_fmt(diff, 2), _fmt(se, 2), f"{t['n_a']}, {t['n_b']}", _fmt(t['t'], 2),
           _fmt(t['df'], 1), _fmt_p(t['p'])]) + ' |')
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
  # Train top-1 (data.train_eval_split), when the runs have it: open diamonds.
  train = [[100 * v for v in c.get('_train_values', [])] for c in cells]
  finite += [v for t in train for v in t]
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
    if train[i]:
      ax.scatter([i + 0.25] * len(train[i]), train[i], marker='D', facecolors='none',
                 edgecolors='C3', s=22, zorder=3,
                 label='train top-1 (train_eval_split)' if i == 0 else None)
    bad = {o: n for o, n in c['counts'].items() if o != 'completed' and n}
    if bad:
      ax.text(i, top - 1.0, '\n'.join(f'{n} {o}' for o, n in bad.items()), ha='center',
              va='top', color='red', fontsize=8)
  ax.set_xticks(range(len(cells)), [cell_label(c, cols) for c in cells], fontsize=7)
  ax.set_xlim(-0.6, len(cells) - 0.4)
  ax.set_ylim(floor, top)
  ax.set_ylabel('final eval top-1 (%)')
  if any(train):
    ax.set_ylabel('final top-1 (%): bars test, diamonds train')
    ax.legend(fontsize=8, loc='center right')
  ax.set_title(title or 'mean ± std over seeds (dots: single runs)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_lines(cells: Sequence[Dict[str, Any]], path: str, x_key: str, x_scale: float = 1.0,
               x_label: Optional[str] = None, title: Optional[str] = None) -> None:
  """Top-1 (mean ± std, dots: seeds) against a swept number, one line per model.

  Args:
    cells: :func:`aggregate`'s cells.
    path: the PNG to write.
    x_key: the swept key on the x axis (e.g. ``train.batch_size``), log scale.
    x_scale: multiplies the key's value (``0.125``: global batch over 8
      devices = images per device).
    x_label: the axis label (default the key).
    title: figure title.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  cols = _columns(cells)
  if x_key not in cols:
    raise ValueError(f'--line {x_key!r}: not a column of the table; columns: {cols}')
  series_cols = [k for k in cols if k != x_key]
  series: Dict[str, list] = {}
  for c in cells:
    series.setdefault(' / '.join(_value(c, k) for k in series_cols) or 'all', []).append(c)
  fig, ax = plt.subplots(figsize=(7.0, 4.8))
  for i, (label, cs) in enumerate(series.items()):
    cs = sorted(cs, key=lambda c: float(c[x_key]))
    xs = [float(c[x_key]) * x_scale for c in cs]
    ms = [None if c['top1']['mean'] is None else 100 * c['top1']['mean'] for c in cs]
    sd = [0.0 if c['top1']['std'] is None else 100 * c['top1']['std'] for c in cs]
    pts = [(x, m, e) for x, m, e in zip(xs, ms, sd) if m is not None]
    if pts:
      ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                  color=f'C{i % 10}', marker='o', capsize=3, label=label)
    for x, c in zip(xs, cs):
      ax.scatter([x * (1 + 0.03 * (i - len(series) / 2))] * len(c['top1_values']),
                 [100 * v for v in c['top1_values']], color=f'C{i % 10}', s=8, alpha=0.5)
  ax.set_xscale('log', base=2)
  xticks = sorted({float(c[x_key]) * x_scale for c in cells})
  ax.set_xticks(xticks, [f'{x:g}' for x in xticks])
  ax.set_xlabel(x_label or x_key)
  ax.set_ylabel('final eval top-1 (%)')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
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
    spec = sweep_lib.read_json(os.path.join(workdir, 'sweep.json'))
    if not spec or 'grid' not in spec:
      raise ValueError(f'{workdir} has neither results.csv nor sweep.json; is it a sweep workdir '
                       '(scripts/sweep.py --workdir)?')
    rows = sweep_lib.collect_results(workdir, spec['grid'])
    sweep_lib.write_results_csv(rows, csv_path)
  return read_results_csv(csv_path)


def write_report(workdir: str, out_prefix: Optional[str] = None, collect: bool = False,
                 title: Optional[str] = None, baselines: Sequence[str] = (),
                 line: Optional[str] = None, x_scale: float = 1.0,
                 x_label: Optional[str] = None) -> Dict[str, str]:
  """Writes ``<prefix>.md`` (the table) and ``<prefix>.png`` for a sweep workdir.

  Args:
    workdir: the sweep workdir.
    out_prefix: output path without extension; default ``workdir/report``.
    collect: re-collect results.csv from the runs first.
    title: figure title.
    baselines: ``'COLUMN=VALUE'`` specs; each adds a table of every cell's
      test top-1 minus its baseline cell's (:func:`comparison_markdown`),
      and, when the runs have train top-1, the same for train top-1.
    line: plot top-1 against this swept key (:func:`plot_lines`) instead of
      bars; ``x_scale`` and ``x_label`` as there.

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
  for spec in baselines:
    table += (f'\nDifferences against `{spec}` (test top-1; SE = sqrt(s_a^2/n_a + s_b^2/n_b), '
              "Welch's t-test, two-sided):\n\n" + comparison_markdown(cells, spec))
    if any(c['train_top1']['n'] for c in cells):
      table += f'\nThe same for train top-1:\n\n' + comparison_markdown(cells, spec, 'train_top1')
  with open(prefix + '.md', 'w') as f:
    f.write(header + table)
  if line:
    plot_lines(cells, prefix + '.png', line, x_scale=x_scale, x_label=x_label, title=title)
  else:
    plot_cells(cells, prefix + '.png', title=title)
  return {'markdown': prefix + '.md', 'png': prefix + '.png', 'table': header + table}
