"""Research instruments of the training loop: AGC telemetry log, profiler.

* `AGCLog` pools the per-step AGC statistics of the train step
  (``make_train_step(..., agc_telemetry=True)``, computed by
  `nfnet_jax.optim.agc.agc_telemetry`) over each ``log_every`` window and
  writes them as one ``'agc'`` row of ``metrics.jsonl`` (and TensorBoard
  scalars): per parameter group ``agc/clipped/<group>`` (mean clipped
  fraction over the window's finite steps), ``agc/ratio_median/<group>``
  (mean of the per-step medians) and ``agc/ratio_max/<group>`` (max), plus
  per-stage clipped fractions ``agc/stage/<stage>`` (unit-weighted), which
  also go to the console. ``scripts/agc_report.py`` draws them.
* `StepProfiler` writes a ``jax.profiler`` trace of the steps named by
  ``config.train.profile_steps`` (``'a,b'``) into ``<workdir>/profile``
  (TensorBoard's profile plugin reads it).
"""
import os
from typing import Dict, Optional, Tuple

import jax

from nfnet_jax.optim import agc as agc_lib


# The one parser of config.train.profile_steps (train/validate.py checks it).
def parse_profile_steps(value) -> Optional[tuple]:
  """``config.train.profile_steps`` -> ``(first, last)`` step, or None.

  Args:
    value: ``''``/None (off), ``'a,b'``, ``'a'`` (one step) or a pair.

  Returns:
    ``(a, b)`` with ``0 <= a <= b``: the trace covers steps a..b (0-based,
    inclusive), or None.

  Raises:
    ValueError: anything else.
  """
  if value is None or value == '' or value == ():
    return None
  parts = value.split(',') if isinstance(value, str) else (
      list(value) if isinstance(value, (tuple, list)) else [value])
  try:
    nums = [int(str(p).strip()) for p in parts]
  except ValueError:
    nums = []
  if len(nums) == 1:
    nums = nums * 2
  if len(nums) != 2 or not 0 <= nums[0] <= nums[1]:
    raise ValueError("expected 'a,b' with 0 <= a <= b (trace steps a..b), or '' for no "
                     'profiling')
  return nums[0], nums[1]


class StepProfiler:
  """Starts a ``jax.profiler`` trace before step a, stops it after step b.

  Args:
    span: `parse_profile_steps`'s result (None: does nothing).
    log_dir: where the trace goes (``<workdir>/profile``).
    log: printer.
  """

  def __init__(self, span: Optional[Tuple[int, int]], log_dir: str, log=print):
    self.span, self.log_dir, self.log = span, log_dir, log
    self.active = False

  def before(self, step: int) -> None:
    """Call before running step ``step`` (0-based)."""
    if self.span is not None and step == self.span[0] and not self.active:
      os.makedirs(self.log_dir, exist_ok=True)
      jax.profiler.start_trace(self.log_dir)
      self.active = True

  def after(self, step: int, outputs) -> None:
    """Call after running step ``step`` with its outputs (waited for)."""
    if self.active and step >= self.span[1]:
      jax.block_until_ready(outputs)
      self.stop()
      self.log(f'[profile] trace of steps {self.span[0]}..{self.span[1]} written to '
               f'{self.log_dir} (tensorboard --logdir {self.log_dir})')

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


class AGCLog:
  """Pools the train step's AGC statistics over a log window.

  Args:
    unit_counts: ``{group: units}`` (`agc.agc_unit_counts`), to weight the
      stage aggregates.
    clipping: lambda, recorded with every row (the report draws it).
  """

  def __init__(self, unit_counts: Dict[str, int], clipping: float):
    self.groups = sorted(unit_counts, key=agc_lib.depth_key)
    self.counts = dict(unit_counts)
    self.stages = agc_lib.stage_labels(self.groups)
    self.clipping = float(clipping)
    self.reset()

  def reset(self) -> None:
    self._n = 0
    self._clip = {g: 0.0 for g in self.groups}
    self._med = {g: 0.0 for g in self.groups}
    self._max = {g: 0.0 for g in self.groups}

  def add(self, stats: Dict[str, Dict[str, float]]) -> None:
    """Adds one finite step's statistics (host numbers)."""
    self._n += 1
    for g in self.groups:
      s = stats[g]
      self._clip[g] += float(s['clipped_fraction'])
      self._med[g] += float(s['ratio_median'])
      self._max[g] = max(self._max[g], float(s['ratio_max']))

  def state(self) -> dict:
    """The open window, for the checkpoint's metadata (exact resumption)."""
    return {'n': self._n, 'clip': self._clip, 'med': self._med, 'max': self._max}

  def restore(self, state: Optional[dict]) -> None:
    if state:
      self._n = int(state['n'])
      for name, d in (('clip', self._clip), ('med', self._med), ('max', self._max)):
        d.update({g: float(v) for g, v in state[name].items() if g in d})

  def scalars(self) -> Dict[str, float]:
    """The window's row (empty when no finite step was added); resets."""
    if not self._n:
      return {}
    out = {'agc/clipping': self.clipping}
    stage_units: Dict[str, float] = {}
    stage_clipped: Dict[str, float] = {}
    for g in self.groups:
      frac = self._clip[g] / self._n
      out[f'agc/clipped/{g}'] = frac
      out[f'agc/ratio_median/{g}'] = self._med[g] / self._n
      out[f'agc/ratio_max/{g}'] = self._max[g]
      st = self.stages[g]
      stage_units[st] = stage_units.get(st, 0.0) + self.counts[g]
      stage_clipped[st] = stage_clipped.get(st, 0.0) + frac * self.counts[g]
    for st in stage_units:
      out[f'agc/stage/{st}'] = stage_clipped[st] / stage_units[st]
    self.reset()
    return out

  @classmethod
  def for_config(cls, config, params) -> Optional['AGCLog']:
    """The log of a run (None with AGC or ``train.agc_telemetry`` off).

    Args:
      config: the experiment config.
      params: the model's host parameters (for the unit counts).
    """
    opt = config.optimizer
    if opt.get('clipping') is None or not config.train.get('agc_telemetry', True):
      return None
    counts = agc_lib.agc_unit_counts(params, opt.get('clip_exclude', agc_lib.CLASSIFIER_REGEX))
    return cls(counts, opt['clipping'])

  @staticmethod
  def console(step: int, scalars: Dict[str, float]) -> str:
    """One console line: the clipped fraction per stage."""
    parts = [f'{k.split("/")[-1]} {100 * v:.1f}%' for k, v in scalars.items()
             if k.startswith('agc/stage/')]
    return f'[agc] step {step}: clipped units ' + ' '.join(parts)
