"""Runs into cells: results.csv rows read, classified and aggregated over seeds."""
import csv
import math
import os
from typing import Any, Dict, List, Optional, Sequence

from nfnet_jax.analysis import sweeps as sweep_lib
from nfnet_jax.analysis.report.stats import mean_std
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
