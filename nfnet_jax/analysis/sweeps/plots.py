"""The sweep heatmap: eval top-1 over two swept keys, with each run's outcome.

Drawn on a bare ``matplotlib.figure.Figure`` (no pyplot, no backend switch:
importing this module changes no process state).
"""
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
import numpy as np

from nfnet_jax.analysis import agc_report
from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.analysis.sweeps.grid import format_value
from nfnet_jax.analysis.sweeps.grid import run_name
from nfnet_jax.analysis.sweeps.outcomes import FINISHED_FINITE
from nfnet_jax.analysis.sweeps.outcomes import OUTCOMES
from nfnet_jax.analysis.sweeps.results import ALL_RESULT_COLUMNS


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


def heatmap_cells(rows: Sequence[Dict[str, Any]], ykey: Optional[str], xkey: Optional[str]):
  """(y values, x values, top-1 [y, x], outcome [y][x]): each cell's best run.

  Best = best outcome (the order of `OUTCOMES`), then best top-1 among the
  runs with that outcome.
  """
  yvals = sorted({r[ykey] for r in rows}, key=_sort_key) if ykey else [None]
  xvals = sorted({r[xkey] for r in rows}, key=_sort_key) if xkey else [None]
  top = np.full((len(yvals), len(xvals)), np.nan)
  outcome = [[None] * len(xvals) for _ in yvals]
  for r in rows:
    i = yvals.index(r[ykey]) if ykey else 0
    j = xvals.index(r[xkey]) if xkey else 0
    t = r['eval_top1']
    o = r['outcome'] if r['outcome'] in OUTCOMES else 'failed'
    cur = outcome[i][j]
    better = cur is None or OUTCOMES.index(o) < OUTCOMES.index(cur)
    if better:
      outcome[i][j] = o
      top[i, j] = np.nan
    if (better or cur == o) and o in FINISHED_FINITE and t is not None and math.isfinite(t):
      top[i, j] = t if np.isnan(top[i, j]) else max(top[i, j], t)
  return yvals, xvals, top, outcome


def _annotate(ax, top, outcome) -> None:
  finite = top[np.isfinite(top)]
  box = dict(facecolor='white', alpha=0.8, lw=0)
  for i in range(top.shape[0]):
    for j in range(top.shape[1]):
      o = outcome[i][j]
      if o == 'diverged':
        ax.add_patch(Rectangle((j - .5, i - .5), 1, 1, fill=False, hatch='xx',
                               edgecolor='red', lw=0))
        ax.text(j, i, 'diverged', ha='center', va='center', color='red', fontsize=8, bbox=box)
      elif o in FINISHED_FINITE and np.isfinite(top[i, j]):
        label = f'{100 * top[i, j]:.1f}'
        if o == 'not learning':
          ax.add_patch(Rectangle((j - .45, i - .45), .9, .9, fill=False,
                                 edgecolor='orange', lw=2))
          label += '\nnot learning'
        ax.text(j, i, label, ha='center', va='center', fontsize=8,
                color='white' if top[i, j] < finite.mean() else 'black')
      elif o is not None and o != 'missing':
        ax.text(j, i, o if o != 'completed' else 'no eval', ha='center', va='center',
                fontsize=8, color='0.2', bbox=box)
      else:
        ax.text(j, i, 'n/a', ha='center', va='center', fontsize=8)


def plot_heatmap(rows: Sequence[Dict[str, Any]], path: str, title: Optional[str] = None) -> None:
  """Draws eval top-1 over (alpha, clipping), with each run's outcome.

  Completed cells show top-1; ``not learning`` cells show top-1 in a orange
  frame; ``diverged`` cells are hatched red; ``failed`` cells are grey. When
  more than two keys are swept, each cell shows its best run (best outcome,
  then best top-1). With a single swept key the map has one row.
  """
  keys = [k for k in rows[0] if k not in ALL_RESULT_COLUMNS]
  ykey, xkey = heatmap_axes(keys)
  yvals, xvals, top, outcome = heatmap_cells(rows, ykey, xkey)
  fig = Figure(figsize=(1.5 * len(xvals) + 2.5, 0.9 * len(yvals) + 1.8))
  ax = fig.subplots()
  finite = top[np.isfinite(top)]
  vmin = 100 * finite.min() if finite.size else 0
  vmax = 100 * finite.max() if finite.size else 100
  im = ax.imshow(np.ma.masked_invalid(100 * top), cmap='viridis', vmin=vmin,
                 vmax=max(vmax, vmin + 1e-6), aspect='auto', origin='lower')
  ax.set_facecolor('0.85')
  _annotate(ax, top, outcome)
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


def write_agc_reports(workdir: str, grid: Sequence[Overrides]) -> List[str]:
  """``agc_report.png`` in every run dir whose run logged AGC telemetry."""
  out = []
  for point in grid:
    path = agc_report.plot_agc_report(os.path.join(workdir, run_name(point)))
    if path:
      out.append(path)
  return out
