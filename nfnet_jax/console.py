"""Process-wide silencing of checkpoint noise: for entry points only.

Library modules never change process state (DESIGN.md); the entry points
(``nfnet_jax.commands.base.quiet_console``) call
:func:`quiet_checkpoint_noise`:

* orbax's log of a failed background save (a long traceback) dropped: the
  same failure is raised as one line (``CheckpointSaveError``);
* the "Event loop is closed" echoes dropped. Their source: orbax runs each
  checkpoint read/write in a fresh asyncio loop
  (``orbax.checkpoint._src.asyncio_utils._run_sync_via_new_loop``) and
  closes it as soon as the first tensorstore operation fails, while the
  others are still in flight; when those finish, tensorstore's completion
  callbacks call ``loop.call_soon_threadsafe`` on the closed loop, and
  Python reports each ``RuntimeError('Event loop is closed')`` through
  ``sys.unraisablehook`` (one traceback per pending operation, down to
  interpreter exit). The failure itself is reported once, by our
  checkpoint code; only these echoes are dropped, every other unraisable
  error is still printed.
"""
import logging
import sys


def _closed_loop_echo(unraisable) -> bool:
  exc = unraisable.exc_value
  return isinstance(exc, RuntimeError) and 'Event loop is closed' in str(exc)


def quiet_closed_event_loops() -> None:
  """Drops the unraisable 'Event loop is closed' echoes (see module doc)."""
  previous = sys.unraisablehook
  if getattr(previous, '_nfnet_quiet', False):
    return

  def hook(unraisable):
    if not _closed_loop_echo(unraisable):
      previous(unraisable)
  hook._nfnet_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


class _OrbaxThreadErrorFilter(logging.Filter):
  """Drops orbax's log of a failed background save (a long traceback).

  The same error is raised as a one-line CheckpointSaveError when the
  Checkpointer waits for the save, so the log record only adds noise.
  """

  # The two messages orbax 0.12 logs (with the traceback) for a failed
  # background write: the writer thread's and the commit thread's.
  _MESSAGES = ('raised an exception', 'background save thread',
               'Finalize thread')

  def filter(self, record):
    if record.levelno < logging.ERROR or 'orbax' not in (record.pathname or ''):
      return True
    msg = record.getMessage()
    return not any(m in msg for m in self._MESSAGES)


# Attached to orbax's loggers by entry points only (quiet_orbax_thread_errors):
# a logging filter is process-wide state.
ORBAX_THREAD_ERROR_FILTER = _OrbaxThreadErrorFilter()


def quiet_orbax_thread_errors() -> None:
  """Attaches the filter of orbax's failed-save tracebacks to its loggers."""
  for name in ('absl', 'orbax'):
    logger = logging.getLogger(name)
    if ORBAX_THREAD_ERROR_FILTER not in logger.filters:
      logger.addFilter(ORBAX_THREAD_ERROR_FILTER)


def quiet_checkpoint_noise() -> None:
  """Both of the above (idempotent)."""
  quiet_closed_event_loops()
  quiet_orbax_thread_errors()
