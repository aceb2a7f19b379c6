"""The figures of a report: bars with error bars and seed dots, or top-1 against a key."""
from typing import Any, Dict, Optional, Sequence

from nfnet_jax.analysis.report.tables import cell_label
from nfnet_jax.analysis.report.tables import columns
from nfnet_jax.analysis.report.tables import value_text


def plot_cells(cells: Sequence[Dict[str, Any]], path: str, title: Optional[str] = None) -> None:
  """Bar chart of eval top-1 per cell: mean ± std, one dot per seed.

  A cell whose runs diverged, failed or are missing is marked in red with
  its counts; a cell with no finished run has no bar.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  cols = columns(cells) if cells else []
  # Colour by the last shown key (batch size, clipping, ...) to group the bars.
  shade_key = cols[-1] if len(cols) > 1 else None
  shades = []
  for c in cells:
    v = value_text(c, shade_key) if shade_key else ''
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
      shade = f'C{shades.index(value_text(c, shade_key)) % 10}' if shade_key else 'C0'
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

  cols = columns(cells)
  if x_key not in cols:
    raise ValueError(f'--line {x_key!r}: not a column of the table; columns: {cols}')
  series_cols = [k for k in cols if k != x_key]
  series: Dict[str, list] = {}
  for c in cells:
    series.setdefault(' / '.join(value_text(c, k) for k in series_cols) or 'all', []).append(c)
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
      # Runs that did not finish are named beside their cell ("4 of 5
      # diverged"), so that a mean over the survivors is not read as the
      # cell's; a cell without a finished run has no point and is marked
      # with an x at the bottom instead, so that its failure is seen.
      lost_counts = {o: n for o, n in c['counts'].items()
                     if n and o not in ('completed', 'not learning', 'missing')}
      if not lost_counts:
        continue
      total = sum(n for o, n in c['counts'].items() if o != 'missing')
      text = f'{sum(lost_counts.values())} of {total} ' + '/'.join(lost_counts)
      if c['top1']['mean'] is None:
        ax.scatter([x], [0.04], marker='x', s=60, color=f'C{i % 10}',
                   transform=ax.get_xaxis_transform())
        ax.annotate(text, (x, 0.04), xycoords=ax.get_xaxis_transform(), xytext=(6, -3),
                    textcoords='offset points', fontsize=8, color=f'C{i % 10}')
      else:
        ax.annotate(text, (x, 100 * c['top1']['mean']), xytext=(6, 4),
                    textcoords='offset points', fontsize=8, color=f'C{i % 10}')
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
