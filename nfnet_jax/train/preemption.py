"""Pre-emption: SIGTERM asks the loop to checkpoint and return.

The handler only sets a flag; the loop polls :meth:`StopFlag.agreed` between
steps, so a step is never cut in half. On many hosts the processes agree
(any host signalled -> all stop at the same step).
"""
import signal
import threading

import jax
import numpy as np


class StopFlag:
  """Set by SIGTERM (installed only from the main thread)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def install(self):
    if threading.current_thread() is not threading.main_thread():
      return
    def handler(signum, frame):  # pylint: disable=unused-argument
      self.requested = True
    self._previous = signal.signal(signal.SIGTERM, handler)

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def agreed(self) -> bool:
    """Whether to stop; on many hosts, stop when any host was signalled."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.asarray(self.requested))
    return bool(np.any(flags))

  def __enter__(self):
    self.install()
    return self

  def __exit__(self, *exc):
    self.uninstall()
