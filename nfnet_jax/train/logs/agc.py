"""AGC telemetry: the train step's AGC statistics pooled over a log window.

`AGCLog` pools the per-step AGC statistics of the train step
(``make_train_step(..., agc_telemetry=True)``, computed by
`nfnet_jax.optim.agc.agc_telemetry`) over each ``log_every`` window and
writes them as one ``'agc'`` row of ``metrics.jsonl`` (and TensorBoard
scalars): per parameter group ``agc/clipped/<group>`` (mean clipped
fraction over the window's finite steps), ``agc/ratio_median/<group>``
(mean of the per-step medians) and ``agc/ratio_max/<group>`` (max), plus
per-stage clipped fractions ``agc/stage/<stage>`` (unit-weighted), which
also go to the console. ``nfnet-agc-report`` draws them.
"""
from typing import Dict, Optional

from nfnet_jax.optim import agc as agc_lib


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
