"""What can go wrong with a checkpoint, as typed errors and one-line reasons."""
import os
import re

from nfnet_jax import errors


class CheckpointMismatchError(errors.WeightsError):
  """A checkpoint does not fit the state built from the current config."""


class CheckpointSaveError(errors.NFNetError, RuntimeError):
  """A checkpoint could not be written; the message is one complete line.

  Exit status 2: the cause (a full disk, a read-only directory) is the
  user's to fix; the last good checkpoint is named and a rerun resumes.
  """
  exit_code = errors.EXIT_BAD_INPUT


def describe_save_error(err: BaseException) -> str:
  """A short description of a save failure: the OS error behind it if any.

  Orbax and tensorstore wrap the OS error (e.g. ``ValueError:
  RESOURCE_EXHAUSTED: Error writing ... [os_error_code='28']``); the errno
  gives the standard text ("No space left on device").
  """
  chain, e = [], err
  while e is not None and len(chain) < 16:
    chain.append(e)
    e = e.__cause__ or e.__context__
  for e in chain:
    if isinstance(e, OSError) and e.errno:
      return f'{e.strerror or os.strerror(e.errno)} (errno {e.errno})'
  for e in chain:
    m = re.search(r"os_error_code='?(\d+)", str(e))
    if m:
      code = int(m.group(1))
      return f'{os.strerror(code)} (errno {code})'
  text = ' '.join(str(err).split())
  return f'{type(err).__name__}: {text[:200]}'


def describe_read_error(err: BaseException) -> str:
  """A short reason a checkpoint could not be read (for one log line).

  Tensorstore's messages are long (driver, database, byte range, file);
  the first clause and the file named, if any, are kept.
  """
  text = ' '.join(str(err).split())
  # Tensorstore appends its JSON spec and source locations: noise here.
  text = re.split(r'\s*\[(?:tensorstore_spec|source locations)=', text)[0]
  m = re.search(r'local file "([^"]+)"[^"]*$', text)
  head = re.split(r': Error (?:opening|reading)', text, maxsplit=1)[0]
  head = head[:120] + ('...' if len(head) > 120 else '')
  where = f' in {os.path.basename(m.group(1))}' if m else ''
  tail = ''
  m2 = re.search(r'(Requested byte range[^;:]*|Unexpected end of data'
                 r'|checksum mismatch|No such file or directory)', text)
  if m2 and m2.group(1) not in head:
    tail = f': {m2.group(1)}'
  return f'{type(err).__name__}: {head}{where}{tail}'
