"""Where and how hard AGC clipped during a run: a figure from metrics.jsonl.

Reads the ``'agc'`` rows the training loop writes with AGC telemetry on
(`nfnet_jax.train.logs.AGCLog`) and draws

* left: the fraction of clipped units per parameter group (network depth,
  input at the top) x training step;
* right: the distribution of ``||G_i|| / max(||W_i||, eps)`` per group: the
  per-window median (dots) and max (crosses) ratios at the first and the
  last logged step, against lambda (dashed line). Units above the line are
  clipped.
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from nfnet_jax.optim import agc as agc_lib
from nfnet_jax.train.logs import read_jsonl

CLIPPED = 'agc/clipped/'
MEDIAN = 'agc/ratio_median/'
MAX = 'agc/ratio_max/'


def read_agc_rows(workdir: str) -> List[Dict[str, Any]]:
  """The ``'agc'`` rows of ``<workdir>/metrics.jsonl``, in step order."""
  rows = [r for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if r.get('split') == 'agc']
  return sorted(rows, key=lambda r: r['step'])


def agc_table(rows: List[Dict[str, Any]]
              ) -> Tuple[List[str], np.ndarray, Dict[str, np.ndarray]]:
  """(groups in depth order, steps, {'clipped'|'median'|'max': [group, step]})."""
  groups = sorted({k[len(CLIPPED):] for r in rows for k in r if k.startswith(CLIPPED)},
                  key=agc_lib.depth_key)
  steps = np.array([r['step'] for r in rows])

  def grid(prefix):
    return np.array([[float(r.get(prefix + g, np.nan)) for r in rows] for g in groups])

  return groups, steps, {'clipped': grid(CLIPPED), 'median': grid(MEDIAN), 'max': grid(MAX)}


def _short(group: str) -> str:
  return group.split('/~/', 1)[-1]


def _draw(fig, ax0, ax1, rows, name):
  groups, steps, t = agc_table(rows)
  clipping = rows[-1].get('agc/clipping')
  im = ax0.imshow(100 * t['clipped'], aspect='auto', cmap='magma', vmin=0, vmax=100,
                  interpolation='nearest',
                  extent=(-0.5, len(steps) - 0.5, len(groups) - 0.5, -0.5))
  ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).astype(int))
  ax0.set_xticks(ticks, [str(steps[i]) for i in ticks])
  ax0.set_yticks(range(len(groups)), [_short(g) for g in groups], fontsize=6)
  ax0.set_xlabel('training step (end of each log window)')
  ax0.set_ylabel('parameter group (input at the top)')
  ax0.set_title(f'{name}: clipped units per group (lambda = {clipping:g})', fontsize=10)
  fig.colorbar(im, ax=ax0, label='clipped units (%)')
  y = np.arange(len(groups))
  for col, label, color in ((0, f'step {steps[0]}', 'tab:blue'),
                            (len(steps) - 1, f'step {steps[-1]}', 'tab:orange')):
    ax1.scatter(t['median'][:, col], y, s=12, color=color, label=f'median, {label}')
    ax1.scatter(t['max'][:, col], y, s=14, marker='x', color=color, label=f'max, {label}')
  if clipping is not None:
    ax1.axvline(float(clipping), color='red', ls='--', lw=1, label=f'lambda = {clipping:g}')
  ax1.set_xscale('log')
  ax1.set_ylim(len(groups) - 0.5, -0.5)
  ax1.set_yticks(range(len(groups)), [])
  ax1.set_xlabel('||G_i|| / max(||W_i||, eps) per unit (0 not shown)')
  ax1.set_title('ratio distribution per group', fontsize=10)
  ax1.legend(fontsize=7, loc='lower right')
  ax1.grid(axis='x', alpha=0.3)


def plot_agc_report(workdir, path: Optional[str] = None,
                    title: Optional[str] = None) -> Optional[str]:
  """Draws the report of one run, or of several runs one under the other.

  Args:
    workdir: a run's workdir (with ``metrics.jsonl``), or a list of them
      (e.g. the same model at several lambdas).
    path: output image (default ``<first workdir>/agc_report.png``).
    title: figure title.

  Returns:
    The image path, or None when no run logged AGC telemetry.
  """
  workdirs = [workdir] if isinstance(workdir, str) else list(workdir)
  runs = [(w, read_agc_rows(w)) for w in workdirs]
  runs = [(w, r) for w, r in runs if r]
  if not runs:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  n_groups = max(len(agc_table(r)[0]) for _, r in runs)
  height = max(4.0, 0.16 * n_groups + 1.5)
  fig, axes = plt.subplots(len(runs), 2, figsize=(13, height * len(runs)),
                           gridspec_kw={'width_ratios': [3, 2]}, squeeze=False)
  for (w, rows), (ax0, ax1) in zip(runs, axes):
    _draw(fig, ax0, ax1, rows, os.path.basename(os.path.normpath(w)))
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  path = path or os.path.join(runs[0][0], 'agc_report.png')
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
