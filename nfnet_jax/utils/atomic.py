"""The one atomic file writer: a temporary file in the same folder, then ``os.replace``.

A reader of ``path`` sees the old file or the new one, never half of one: a
crash (an exception, a kill) inside the write leaves the old file as it was
and no temporary file behind (after an exception; a killed process can leave
its ``.<name>.*.tmp`` file, never a half-written ``path``).
"""
import contextlib
import os
import tempfile
from typing import Any, Callable, Iterator

# Permissions of a written file (mkstemp makes 0600; weight files and
# artifacts are for others to read too).
FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: str, *, makedirs: bool = False, mode: int = FILE_MODE) -> Iterator[str]:
  """Yields a temporary path next to ``path``; on success it replaces ``path``.

  For writers that want a file name (``safetensors.save_file``,
  ``torch.save``): write the whole file to the yielded path inside the
  ``with`` block.

  Args:
    path: the destination file.
    makedirs: create the destination's folder first.
    mode: permissions of the written file.

  Yields:
    The temporary path (an empty file that exists) to write to.

  Raises:
    Whatever the block raises; the temporary file is removed then and
    ``path`` is left unchanged.
  """
  directory = os.path.dirname(os.path.abspath(path))
  if makedirs:
    os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.',
                             suffix='.tmp')
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, mode)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def atomic_write(path: str, write_fn: Callable[[Any], Any], *, binary: bool = True,
                 makedirs: bool = False, mode: int = FILE_MODE) -> None:
  """Writes ``path`` atomically: ``write_fn(f)`` fills an open temporary file.

  Args:
    path: the destination file.
    write_fn: called once with the open file object (``'wb'``, or ``'w'``
      with ``binary=False``); it writes the whole content.
    binary: open the file in binary mode.
    makedirs: create the destination's folder first.
    mode: permissions of the written file.

  Example::

    atomic_write('meta.json', lambda f: json.dump(meta, f), binary=False)
  """
  with atomic_path(path, makedirs=makedirs, mode=mode) as tmp:
    with open(tmp, 'wb' if binary else 'w') as f:
      write_fn(f)
