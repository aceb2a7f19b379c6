"""Typed errors of the package and the exit statuses of its command lines.

Every anticipated failure (bad input, divergence, a lost host, a busy
workdir) is raised as a subclass of :class:`NFNetError`, which carries the
exit status its command line ends with and an optional one-line hint. The
command lines catch ``NFNetError`` only (:func:`exit_on_error`): they print
``error: <message>`` (and ``hint: <hint>``) on stderr and exit with
``exit_code``. Anything else is a bug and keeps its full traceback.

Exit statuses (also in docs/fault_tolerance.md):

====  ===================  ===============================================
0     EXIT_OK              the command completed
1     (Python's default)   a bug: an unexpected exception, full traceback
2     EXIT_BAD_INPUT       bad config, flags, files, data or workdir; a
                           workdir held by another job; a checkpoint that
                           could not be written (disk full, ...)
3     EXIT_DIVERGED        training diverged (non-finite steps)
75    EXIT_LOST_HOST       a process of a multi-host job stopped answering;
                           relaunch every process (the run resumes)
143   EXIT_PREEMPTED       stopped by SIGTERM after a checkpoint; rerun
====  ===================  ===============================================

75 is ``EX_TEMPFAIL`` of BSD's sysexits.h ("try again later"), distinct
from 2 and 3 so a scheduler can requeue on it.

The root class, :class:`NFNetError`, and the config layer's ``ConfigError``
(a bad-input failure, exit status 2) are defined in the bottom layer,
``nfnet_jax.config.load``, which imports nothing of the package; this module
is the one above it that every other layer imports.
"""
import sys
from typing import Callable, TypeVar

from nfnet_jax.config.load import ConfigError  # re-exported
from nfnet_jax.config.load import NFNetError  # re-exported

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_LOST_HOST = 75
EXIT_PREEMPTED = 143

T = TypeVar('T')




class BadInputError(NFNetError, ValueError):
  """Bad config, flag, file, data or path (a ValueError for old callers)."""
  exit_code = EXIT_BAD_INPUT


class NotFoundError(BadInputError, FileNotFoundError):
  """A named file or directory does not exist (a FileNotFoundError too)."""


class DataError(BadInputError):
  """Training/eval data that is missing, empty or cannot be decoded."""


class WeightsError(BadInputError):
  """A weight/checkpoint file that cannot be read or is of another model."""


class WorkdirError(BadInputError):
  """A ``--workdir`` that cannot be used (below a file, not writable, ...)."""


class WorkdirLockedError(WorkdirError):
  """The workdir is held by another running job (see train/workdir_lock)."""


class DivergedError(NFNetError, RuntimeError):
  """Training diverged (too many non-finite steps, or one with 'raise')."""
  exit_code = EXIT_DIVERGED

  def lines(self) -> list[str]:
    out = super().lines()
    out[0] = f'error: training diverged: {self}'
    return out


class LostHostError(NFNetError, RuntimeError):
  """A process of a multi-host job stopped answering."""
  exit_code = EXIT_LOST_HOST


def report(err: NFNetError, file=None) -> None:
  """Prints ``err``'s lines on ``file`` (stderr) and flushes."""
  file = sys.stderr if file is None else file
  for line in err.lines():
    print(line, file=file, flush=True)


def exit_on_error(fn: Callable[..., T], *args, **kwargs) -> T:
  """Calls ``fn``; an :class:`NFNetError` becomes its lines + its exit status.

  Any other exception propagates (a bug: full traceback).
  """
  try:
    return fn(*args, **kwargs)
  except NFNetError as e:
    report(e)
    sys.exit(e.exit_code)
