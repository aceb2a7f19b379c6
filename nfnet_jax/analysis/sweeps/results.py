"""A sweep's results: one row per grid point, ``results.csv``, a Markdown table."""
import csv
import os
from typing import Any, Dict, List, Sequence

from nfnet_jax.analysis.sweeps import outcomes
from nfnet_jax.analysis.sweeps import runfiles
from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.analysis.sweeps.grid import format_value
from nfnet_jax.analysis.sweeps.grid import run_name
from nfnet_jax.analysis.sweeps.grid import swept_keys

# Columns of results.csv after the swept keys.
RESULT_COLUMNS = ('run_name', 'outcome', 'initial_train_loss', 'final_train_loss',
                  'eval_top1', 'wall_time_s', 'detail')
# Written only when a run has it: train top-1 on data.train_eval_split
# (summary.json's final_train_eval), right after eval_top1.
OPTIONAL_COLUMNS = ('train_top1',)
ALL_RESULT_COLUMNS = RESULT_COLUMNS + OPTIONAL_COLUMNS
_LOSS_COLUMNS = ('initial_train_loss', 'final_train_loss', 'eval_top1', 'train_top1')


def run_row(run_workdir: str) -> Dict[str, Any]:
  """The result columns (`RESULT_COLUMNS` but ``run_name``) of one run's files."""
  summary = runfiles.read_json(os.path.join(run_workdir, 'summary.json'))
  record = outcomes.read_record(run_workdir)
  metrics = runfiles.read_jsonl(os.path.join(run_workdir, 'metrics.jsonl'))
  outcome, detail = outcomes.classify_run(summary, record, metrics)
  losses = runfiles.train_losses(metrics)
  row = dict(outcome=outcome,
             initial_train_loss=losses[0] if len(losses) >= 2 else None,
             final_train_loss=runfiles.final_train_loss(summary, metrics),
             eval_top1=runfiles.final_top1(summary, metrics),
             wall_time_s=runfiles.wall_time_s(summary, record), detail=detail)
  train_eval = (summary or {}).get('final_train_eval') or {}
  if train_eval.get('top1') is not None:
    row['train_top1'] = float(train_eval['top1'])
  return row


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
    row = {k: point.get(k) for k in keys}
    row['run_name'] = name
    row.update(run_row(os.path.join(workdir, name)))
    rows.append(row)
  return rows


def write_results_csv(rows: Sequence[Dict[str, Any]], path: str) -> None:
  """Writes the rows (swept keys first, then RESULT_COLUMNS and any OPTIONAL_COLUMNS) as CSV."""
  if not rows:
    raise ValueError('no results to write')
  keys = [k for k in rows[0] if k not in ALL_RESULT_COLUMNS]
  columns = list(RESULT_COLUMNS)
  for k in OPTIONAL_COLUMNS:
    if any(r.get(k) is not None for r in rows):
      columns.insert(columns.index('eval_top1') + 1, k)
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(keys + columns)
    for r in rows:
      out = []
      for k in keys + columns:
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
  keys = [k for k in rows[0] if k not in ALL_RESULT_COLUMNS]
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
