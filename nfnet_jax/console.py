"""Process-wide silencing of checkpoint noise: for entry points only.

Library modules never change process state (DESIGN.md); the entry points
(``nfnet_jax.commands.base.quiet_console``) call
:func:`quiet_checkpoint_noise`:

* orbax's log of a failed background save (a long traceback) dropped: the
  same failure is raised as one line (``CheckpointSaveError``);
* asyncio's report of an orbax write task whose error nobody retrieved
  ("Task exception was never retrieved" and the same traceback, printed when
  the task is garbage-collected: under load, after the one-line error)
  dropped, for tasks failing inside orbax only;
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
import os
import sys
import traceback


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


class _OrbaxOrphanTaskFilter(logging.Filter):
  """Drops asyncio's log of an orbax task whose exception was never retrieved.

  orbax closes its loop after the first failed tensorstore write; a sibling
  write task that failed too is reported by asyncio when it is collected
  (its exception, e.g. the same "File too large", with a long traceback).
  Records whose traceback does not pass through orbax are kept.
  """

  _MESSAGES = ('Task exception was never retrieved',
               'Future exception was never retrieved')

  def filter(self, record):
    if not record.exc_info or not record.getMessage().startswith(self._MESSAGES):
      return True
    frames = traceback.extract_tb(record.exc_info[2])
    return not any('orbax' in f.filename.split(os.sep) for f in frames)


# Attached to orbax's loggers by entry points only (quiet_orbax_thread_errors):
# a logging filter is process-wide state.
ORBAX_THREAD_ERROR_FILTER = _OrbaxThreadErrorFilter()
ORBAX_ORPHAN_TASK_FILTER = _OrbaxOrphanTaskFilter()


def quiet_orbax_thread_errors() -> None:
  """Attaches the filters of orbax's failed-save tracebacks to their loggers."""
  for name, log_filter in (('absl', ORBAX_THREAD_ERROR_FILTER),
                           ('orbax', ORBAX_THREAD_ERROR_FILTER),
                           ('asyncio', ORBAX_ORPHAN_TASK_FILTER)):
    logger = logging.getLogger(name)
    if log_filter not in logger.filters:
      logger.addFilter(log_filter)


def quiet_checkpoint_noise() -> None:
  """Both of the above (idempotent)."""
  quiet_closed_event_loops()
  quiet_orbax_thread_errors()
