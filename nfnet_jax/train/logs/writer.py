"""Metric outputs: console/progress bar, TensorBoard, ``metrics.jsonl``, ``summary.json``.

Only process 0 writes. Files in the workdir:

* ``tensorboard/``: tensorboardX event files (``tensorboard --logdir``).
* ``metrics.jsonl``: one JSON object per line, ``{"step": N, "split":
  "train"|"eval", "train/loss": ..., ...}`` with the same keys as the
  TensorBoard tags. On resume, lines after the restored step are dropped so a
  resumed run's log equals an uninterrupted run's.
* ``summary.json``: written at the end (see ``loop.py``).
"""
import json
import math
import os
import sys
import time
from typing import Any, Iterable, Optional

import jax
import numpy as np

from nfnet_jax.utils.atomic import atomic_write

try:
  import tqdm as _tqdm  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  _tqdm = None


def _import_summary_writer():
  """tensorboardX's ``SummaryWriter``, without importing torch for it.

  tensorboardX's writer module imports torch when it is installed, only to
  accept torch tensors; we log Python floats. That import cost 2.5 s of the
  4.8 s a tiny training run spends outside TensorFlow and JAX (cProfile of
  `configs/fashion_mnist.py:local`), in every training process. Where torch
  is not loaded yet, ``sys.modules['torch'] = None`` makes tensorboardX's
  ``import torch`` fail (its ImportError path) for the one import, and the
  entry is removed after, so a later ``import torch`` works as usual.
  """
  if 'torch' in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    return SummaryWriter
  sys.modules['torch'] = None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if sys.modules.get('torch', 0) is None:
      del sys.modules['torch']
  return SummaryWriter


def _jsonable(v: Any) -> Any:
  if isinstance(v, (bool, np.bool_)):
    return bool(v)
  if isinstance(v, (int, np.integer)):
    return int(v)
  try:
    f = float(v)
  except (TypeError, ValueError):
    return v
  return f if math.isfinite(f) else str(f)  # JSON has no NaN/inf


def read_jsonl(path: str) -> list[dict]:
  """All complete JSON lines of ``path`` (a line cut by a kill is skipped)."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        rows.append(json.loads(line))
      except ValueError:
        pass
  return rows


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON via a temporary file and a rename (never half a file)."""
  def write(f):
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
  atomic_write(path, write, binary=False)


class MetricWriter:
  """Writes scalars to TensorBoard and ``metrics.jsonl``; drives the bar.

  Args:
    workdir: the run's directory.
    total_steps: for the progress bar's ETA.
    start_step: the step the run (re)starts from.
    images_per_step: global batch size, for images/s.
    enabled: whether this process writes (default: process 0 only).
    progress: show a tqdm bar (else plain log lines only).
  """

  def __init__(self, workdir: str, total_steps: int, start_step: int,
               images_per_step: int, enabled: Optional[bool] = None,
               progress: bool = True):
    self.workdir = workdir
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self.tb_dir = os.path.join(workdir, 'tensorboard')
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self.total_steps = total_steps
    self.images_per_step = images_per_step
    self._tb = None
    self._bar = None
    self._last_time = time.time()
    self._last_step = start_step
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.truncate_after(start_step)
    try:
      self._tb = _import_summary_writer()(self.tb_dir)
    except ImportError:  # pragma: no cover
      self.log('tensorboardX is not installed: no TensorBoard logs.')
    if progress and _tqdm is not None:
      tty = sys.stderr.isatty()
      self._bar = _tqdm.tqdm(
          total=total_steps, initial=start_step, unit='step', dynamic_ncols=True,
          mininterval=0.5 if tty else 30.0, smoothing=0.1, file=sys.stderr)

  def log(self, msg: str) -> None:
    """Prints a line without breaking the progress bar."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(msg, file=sys.stdout)
    else:
      print(msg, flush=True)
    sys.stdout.flush()

  def truncate_after(self, step: int) -> None:
    """Drops ``metrics.jsonl`` lines with a step after ``step``."""
    if not self.enabled or not os.path.exists(self.jsonl_path):
      return
    rows = [r for r in read_jsonl(self.jsonl_path)
            if int(r.get('step', 0)) <= step]
    atomic_write(self.jsonl_path, lambda f: f.writelines(
        json.dumps(r, sort_keys=True) + '\n' for r in rows), binary=False)

  def rows(self) -> list[dict]:
    return read_jsonl(self.jsonl_path)

  def write(self, step: int, split: str, scalars: dict) -> None:
    """Writes ``scalars`` (keys like ``'train/loss'``) at ``step``."""
    if not self.enabled:
      return
    row = {'step': int(step), 'split': split}
    row.update({k: _jsonable(v) for k, v in scalars.items()})
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps(row, sort_keys=True) + '\n')
    if self._tb is not None:
      for k, v in scalars.items():
        try:
          self._tb.add_scalar(k, float(v), int(step))
        except (TypeError, ValueError):
          pass
      self._tb.flush()

  def advance(self, step: int, postfix: Optional[dict] = None) -> None:
    """Moves the progress bar to ``step`` (absolute)."""
    if self._bar is None:
      return
    self._bar.update(step - self._bar.n)
    if postfix:
      self._bar.set_postfix(postfix, refresh=False)

  def rate(self, step: int) -> tuple[float, float]:
    """Steps/s and images/s since the previous call."""
    now = time.time()
    dt = max(now - self._last_time, 1e-9)
    steps = step - self._last_step
    self._last_time, self._last_step = now, step
    return steps / dt, steps * self.images_per_step / dt

  def reset_rate(self, step: int) -> None:
    self._last_time, self._last_step = time.time(), step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def mean_of(rows: Iterable[dict]) -> dict:
  """Key-wise mean of a list of scalar dicts."""
  rows = list(rows)
  if not rows:
    return {}
  return {k: sum(float(r[k]) for r in rows) / len(rows) for k in rows[0]}


def format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h:d}:{m:02d}:{s:02d}' if h else f'{m:d}:{s:02d}'
