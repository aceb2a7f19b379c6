"""The Markdown tables of a report: the cells, and differences against a baseline cell."""
from typing import Any, Dict, List, Optional, Sequence

from nfnet_jax.analysis import sweeps as sweep_lib
from nfnet_jax.analysis.report.cells import MODEL_KEYS
from nfnet_jax.analysis.report.cells import cell_keys
from nfnet_jax.analysis.report.cells import display_keys
from nfnet_jax.analysis.report.stats import welch
from nfnet_jax.analysis.sweeps.outcomes import OUTCOMES


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


def columns(cells: Sequence[Dict[str, Any]]) -> List[str]:
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


def value_text(cell: Dict[str, Any], key: str) -> str:
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


def fmt_counts(counts: Dict[str, int]) -> str:
  parts = [f"{counts['completed']} completed"]
  parts += [f'{counts[o]} {o}' for o in OUTCOMES[1:] if counts.get(o)]
  return ', '.join(parts)


def cells_markdown(cells: Sequence[Dict[str, Any]]) -> str:
  """The cells as a Markdown table: mean ± std (n) of top-1 and loss, outcomes."""
  if not cells:
    return '(no runs)\n'
  cols = columns(cells)
  train = any(c.get('train_top1', {}).get('n') for c in cells)
  head = cols + ['eval top-1 (%)', 'n']
  if train:
    head += ['train top-1 (%)', 'train - test gap (points)']
  head += ['final train loss', 'runs', 'wall time / run (s)']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for c in cells:
    cells_ = [value_text(c, k) for k in cols]
    cells_ += [_fmt_ms(c['top1'], 100.0, 2), str(c['top1']['n'])]
    if train:
      cells_ += [_fmt_ms(c['train_top1'], 100.0, 2), _fmt_ms(c['gap'], 100.0, 2)]
    cells_ += [_fmt_ms(c['loss'], 1.0, 3), fmt_counts(c['counts']),
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
  cols = columns(cells) if cells else []
  if col not in cols:
    raise ValueError(f'--baseline {baseline!r}: the table has no column {col!r}; columns: {cols}')
  bases = [c for c in cells if value_text(c, col) == value]
  if not bases:
    raise ValueError(f'--baseline {baseline!r}: no cell has {col} = {value!r}; values: '
                     f'{sorted({value_text(c, col) for c in cells})}')
  others = [k for k in cols if k != col]
  key = lambda c: tuple(value_text(c, k) for k in others)
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
  cols = columns(cells)
  what = 'test' if metric == 'top1' else 'train'
  head = cols + [f'{what} top-1 minus {col} = {value} (points)', 'SE', 'n (cell, baseline)',
                 'Welch t', 'df', 'p (two-sided)']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    t = r['test']
    diff = None if t['diff'] is None else 100 * t['diff']
    se = None if t['se'] is None else 100 * t['se']
    lines.append('| ' + ' | '.join(
        [value_text(r['cell'], k) for k in cols]
        + [_fmt(diff, 2), _fmt(se, 2), f"{t['n_a']}, {t['n_b']}", _fmt(t['t'], 2),
           _fmt(t['df'], 1), _fmt_p(t['p'])]) + ' |')
  return '\n'.join(lines) + '\n'


def cell_label(cell: Dict[str, Any], cols: Sequence[str]) -> str:
  """A short label of a cell for plots: 'model / batch_size=8'."""
  parts = []
  for k in cols:
    v = value_text(cell, k)
    parts.append(v if k == 'model' else f"{k.split('.')[-1]}={v}")
  return '\n'.join(parts) if parts else 'all'
