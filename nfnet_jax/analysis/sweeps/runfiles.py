"""Reading one run's files: ``summary.json``, ``metrics.jsonl``, the run record.

The keys read are the ones the training loop writes (``summary.json``:
``final_train_loss``, ``final_train``, ``final_eval``,
``cumulative_wall_time_s``; ``metrics.jsonl``: rows with ``split`` and
``train/loss`` or ``eval/top1``).
"""
import json
from typing import Any, Dict, List, Optional

from nfnet_jax.train.logs import read_jsonl

__all__ = ['read_json', 'read_jsonl', 'as_float', 'final_train_loss', 'final_top1',
           'train_losses', 'wall_time_s']


def read_json(path: str) -> Optional[Any]:
  """The JSON in ``path``, None when it is missing or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def as_float(v: Any) -> Optional[float]:
  """``v`` as a float (NaN and inf included), None for None/bools/non-numbers."""
  if isinstance(v, bool) or v is None:
    return None
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


def _number(d: Any, *path: str) -> Optional[float]:
  for key in path:
    if not isinstance(d, dict):
      return None
    d = d.get(key)
  return as_float(d)


def final_train_loss(summary: Optional[Dict[str, Any]], metrics: List[Dict[str, Any]]
                     ) -> Optional[float]:
  """The last logged training loss (summary.json first, else metrics.jsonl)."""
  v = _number(summary, 'final_train_loss')
  if v is None:
    v = _number(summary, 'final_train', 'loss')
  if v is not None:
    return v
  losses = train_losses(metrics)
  return losses[-1] if losses else None


def final_top1(summary: Optional[Dict[str, Any]], metrics: List[Dict[str, Any]]
               ) -> Optional[float]:
  """The final (not best) eval top-1 as a fraction in [0, 1]."""
  v = _number(summary, 'final_eval', 'top1')
  if v is None:
    for rec in reversed(metrics):
      if as_float(rec.get('eval/top1')) is not None:
        v = as_float(rec['eval/top1'])
        break
  if v is not None and v > 1.0:  # given in percent
    v /= 100.0
  return v


def train_losses(metrics: List[Dict[str, Any]]) -> List[float]:
  """The logged train losses (one per ``log_every`` window), in step order."""
  out = []
  for rec in metrics:
    if rec.get('split', 'train') == 'train' and 'train/loss' in rec:
      v = as_float(rec['train/loss'])
      out.append(float('nan') if v is None else v)
  return out


def wall_time_s(summary: Optional[Dict[str, Any]], record: Dict[str, Any]) -> Optional[float]:
  """The run's wall time: the launcher's record, else the loop's summary."""
  v = as_float(record.get('wall_time_s'))
  return v if v is not None else _number(summary, 'cumulative_wall_time_s')
