"""The training loop's profiler.

`StepProfiler` writes a ``jax.profiler`` trace of the steps named by
``config.train.profile_steps`` (``'a,b'``, parsed by `parse_profile_steps`)
into ``<workdir>/profile`` (TensorBoard's profile plugin reads it).
"""
import os
from typing import Optional, Tuple

import jax


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
