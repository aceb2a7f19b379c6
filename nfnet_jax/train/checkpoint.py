"""Orbax checkpoints of the train state: atomic, kept k deep, corruption-safe.

Layout: ``<workdir>/checkpoints/<step>/`` written by an
``orbax.checkpoint.CheckpointManager``. Orbax writes every checkpoint into a
temporary directory (``<step>.orbax-checkpoint-tmp-*``) and renames it only
when complete, so a process killed mid-save leaves no directory that looks
finished; such leftovers are never listed (and are cleaned up at start-up).

The state is stored as a flat mapping ``{'000000': leaf, ...}`` plus JSON
metadata holding each leaf's tree path, shape and dtype. Restoring checks
the paths and shapes against the state the current config builds, so a
checkpoint of another model fails with a clear message instead of a cryptic
tree mismatch (and optax's NamedTuple states need no orbax support).

Readers without a template (evaluation, fine-tuning, conversion) use
:func:`load_train_checkpoint`, which rebuilds the ``params`` /
``ema_params`` / ``model_state`` sub-trees from the stored paths, so they need
neither the optimizer nor the train-state class.

If the newest checkpoint cannot be read (truncated, corrupt, half-copied),
the error is reported, the directory is moved to
``<workdir>/corrupt_checkpoints/`` (kept for inspection, out of orbax's way)
and the previous checkpoint is used.

Asynchronous saves (``async_save=True``, the default on accelerators): orbax
writes in background threads and ``save`` returns at once, so training
continues while a checkpoint is written. The state handed over is a host
copy made for the save, so later steps cannot change it. ``wait()`` blocks
until the save in flight is complete; the next ``save`` and ``close`` wait
too, and the loop waits after the SIGTERM and the final save. A save that
fails (disk full, permission denied, ...), in the foreground or in the
background, raises :class:`CheckpointSaveError` at the next of these points,
with one line naming the checkpoint path, the error and the last good
checkpoint.
"""
import ast
import logging
import os
import re
import shutil
import sys
import time
import zlib
from typing import Any, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the state built from the current config."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written; the message is one complete line."""


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


_THREAD_ERROR_FILTER = _OrbaxThreadErrorFilter()


def _quiet_closed_event_loops() -> None:
  """After a failed write, orbax's closed event loops still get callbacks.

  Python reports each as an "unraisable" RuntimeError('Event loop is
  closed') traceback, down to interpreter exit. The failure itself is
  reported (one line) by CheckpointSaveError; these echoes are dropped.
  """
  previous = sys.unraisablehook
  if getattr(previous, '_nfnet_quiet', False):
    return

  def hook(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and 'Event loop is closed' in str(exc):
      return
    previous(unraisable)
  hook._nfnet_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def _flatten(tree: PyTree):
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths = [jax.tree_util.keystr(p) for p, _ in leaves_with_path]
  leaves = [np.asarray(x) for _, x in leaves_with_path]
  return paths, leaves, treedef


def _key(i: int) -> str:
  return f'{i:06d}'


def _crc32(x: np.ndarray) -> int:
  """CRC-32 of an array's bytes (detects bit rot that still decodes)."""
  return zlib.crc32(memoryview(np.ascontiguousarray(x)).cast('B'))


def all_finite(tree: PyTree) -> bool:
  """Whether every inexact leaf of ``tree`` (host arrays) is finite."""
  for x in jax.tree.leaves(tree):
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
      return False
  return True


class Checkpointer:
  """Saves and restores a train-state pytree under ``directory``.

  Args:
    directory: where the step directories live.
    keep: how many most recent checkpoints to keep (>= 1).
    log: a ``print``-like function for reports.
    read_only: a reader: neither creates the directory nor deletes other
      processes' in-progress temporary directories.
    async_save: write in the background (see the module docstring).
  """

  def __init__(self, directory: str, keep: int = 3, log=print,
               read_only: bool = False, async_save: bool = False):
    self.directory = os.path.abspath(directory)
    self.keep = max(int(keep), 1)
    self.log = log
    self.read_only = read_only
    self.async_save = bool(async_save) and not read_only
    self._pending: Optional[int] = None   # step of the save in flight
    self._manager = None
    for name in ('absl', 'orbax'):
      if _THREAD_ERROR_FILTER not in logging.getLogger(name).filters:
        logging.getLogger(name).addFilter(_THREAD_ERROR_FILTER)
    self._open()

  def _open(self):
    if self._manager is not None:
      self._manager.close()
    # A reader (read_only) neither creates the directory nor deletes other
    # processes' in-progress temporary directories.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=not self.read_only,
        cleanup_tmp_directories=not self.read_only,
        enable_async_checkpointing=self.async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def _save_error(self, step: int, err: BaseException) -> CheckpointSaveError:
    _quiet_closed_event_loops()
    good = [s for s in self._manager.all_steps() if s != step]
    if good:
      last = (f'the last good checkpoint is {self.directory}/{max(good)} '
              '(a rerun resumes from it)')
    else:
      last = 'no earlier checkpoint exists (a rerun starts from step 0)'
    return CheckpointSaveError(
        f'checkpoint {self.directory}/{step} could not be written: '
        f'{describe_save_error(err)}; {last}')

  def wait(self) -> None:
    """Blocks until the save in flight (if any) is complete.

    Raises:
      CheckpointSaveError: the background save failed.
    """
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e

  def steps(self) -> list[int]:
    """Finalized checkpoint steps, oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: PyTree, meta: Optional[dict] = None) -> bool:
    """Writes ``state`` (host numpy pytree) as checkpoint ``step``.

    A state with non-finite values is never written (returns False).
    Saving a step that already exists replaces nothing and returns False.
    """
    if not all_finite(state):
      self.log(f'[checkpoint] NOT saving step {step}: the state holds '
               'non-finite values.')
      return False
    # A failure of the previous (background) save surfaces here, named
    # after its own step, before a new save starts.
    self.wait()
    if step in self._manager.all_steps():
      return False
    paths, leaves, _ = _flatten(state)
    items = {_key(i): leaf for i, leaf in enumerate(leaves)}
    info = dict(meta or {})
    info['step'] = int(step)
    info['paths'] = paths
    info['shapes'] = [list(x.shape) for x in leaves]
    info['dtypes'] = [str(x.dtype) for x in leaves]
    info['crc32'] = [_crc32(x) for x in leaves]
    info['saved_at'] = time.time()
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(info)),
                         force=True)
      if not self.async_save:
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    if self.async_save:
      self._pending = step
    return True

  def _check_compatible(self, step: int, info: dict, paths, leaves):
    saved = list(info.get('paths', []))
    if saved != paths:
      missing = sorted(set(paths) - set(saved))[:5]
      extra = sorted(set(saved) - set(paths))[:5]
      raise CheckpointMismatchError(
          f'checkpoint {self.directory}/{step} does not match the state of '
          f'the current config (different model/optimizer?): missing '
          f'{missing}, unexpected {extra}. Use a fresh --workdir.')
    for path, shape, leaf in zip(paths, info.get('shapes', []), leaves):
      if tuple(shape) != tuple(leaf.shape):
        raise CheckpointMismatchError(
            f'checkpoint {self.directory}/{step}: {path} has shape '
            f'{tuple(shape)} but the current config builds {leaf.shape}. '
            'Use a fresh --workdir.')

  def restore(self, step: int, template: PyTree) -> tuple[PyTree, dict]:
    """Restores checkpoint ``step`` into the structure of ``template``."""
    paths, leaves, treedef = _flatten(template)
    info = self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']
    self._check_compatible(step, info, paths, leaves)
    target = {_key(i): np.zeros(x.shape, x.dtype) for i, x in enumerate(leaves)}
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))['state']
    out = [np.asarray(restored[_key(i)]).astype(leaves[i].dtype)
           for i in range(len(leaves))]
    for i, x in enumerate(out):
      if x.shape != leaves[i].shape:
        raise IOError(f'{paths[i]} restored with shape {x.shape}, expected '
                      f'{leaves[i].shape}')
    # A damaged file can still decode (to wrong numbers): compare checksums
    # (checkpoints written before they were recorded, or leaves restored in
    # another dtype, are not checked).
    dtypes = info.get('dtypes') or []
    for i, crc in enumerate(info.get('crc32') or []):
      if i < len(dtypes) and dtypes[i] == str(out[i].dtype) and (
          _crc32(out[i]) != crc):
        raise IOError(f'{paths[i]}: checksum mismatch (the data changed '
                      'after it was written)')
    return jax.tree_util.tree_unflatten(treedef, out), info

  def restore_flat(self, step: Optional[int] = None) -> tuple[dict, dict]:
    """Reads a checkpoint without a template: ``({path: array}, meta)``.

    Paths are ``jax.tree_util.keystr`` strings of the train state, e.g.
    ``".params['NFNet/~/linear']['w']"``. ``step`` defaults to the newest.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no finished checkpoint in {self.directory}')
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    info, flat = out['meta'], out['state']
    return ({p: np.asarray(flat[_key(i)]) for i, p in enumerate(info['paths'])},
            info)

  def restore_latest(self, template: PyTree):
    """The newest readable checkpoint: ``(state, meta, step)`` or None.

    Unreadable checkpoints are reported, moved aside and skipped; a
    checkpoint that reads fine but does not fit ``template`` raises
    :class:`CheckpointMismatchError` (older ones would not fit either).
    """
    while True:
      steps = self.steps()
      if not steps:
        return None
      step = steps[-1]
      try:
        state, info = self.restore(step, template)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        self.log(f'[checkpoint] checkpoint {self.directory}/{step} is '
                 f'unreadable ({type(e).__name__}: {str(e)[:300]}); '
                 'moving it aside and using the previous one.')
        self._quarantine(step)
        continue
      return state, info, step

  def _quarantine(self, step: int):
    src = os.path.join(self.directory, str(step))
    dst_dir = os.path.join(os.path.dirname(self.directory),
                           'corrupt_checkpoints')
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(dst_dir, exist_ok=True)
      shutil.move(src, os.path.join(dst_dir, f'{step}-{int(time.time())}'))
    if jax.process_count() > 1:
      # Every process must see the move before listing the steps again.
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'quarantine_checkpoint_{step}')
    self._open()
    if step in self._manager.all_steps():
      raise IOError(f'could not move the unreadable checkpoint {src} aside; '
                    'delete it and restart.')

  def close(self):
    """Waits for a save in flight, then releases orbax's resources.

    Raises:
      CheckpointSaveError: the save in flight failed (resources are
        released all the same).
    """
    if self._manager is not None:
      try:
        self.wait()
      finally:
        self._manager.close()
        self._manager = None


# ---------------------------------------------------------------------------
# Reading without a template (evaluation, fine-tuning, conversion)

# keystr writes dict keys as repr() (either quote style), sequence indices
# as [i] and attributes (NamedTuple fields) as .name.
_TOKEN = re.compile(r"""\[('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\]|\[(\d+)\]|\.([A-Za-z_]\w*)""")


def parse_keystr(path: str) -> list[Any]:
  """Splits a stored leaf path (``.params['a/~/b']['w']``) into its keys."""
  out, pos = [], 0
  for m in _TOKEN.finditer(path):
    if m.start() != pos:
      raise ValueError(f'cannot parse tree path {path!r} at {pos}')
    pos = m.end()
    if m.group(1) is not None:
      out.append(ast.literal_eval(m.group(1)))
    elif m.group(2) is not None:
      out.append(int(m.group(2)))
    else:
      out.append(m.group(3))
  if pos != len(path):
    raise ValueError(f'cannot parse tree path {path!r} at {pos}')
  return out


def subtree_from_paths(paths: Sequence[str], leaves: Sequence[np.ndarray],
                       key: str) -> Optional[dict]:
  """The nested dict under the first path component named ``key``.

  E.g. ``key='params'`` turns ``.params['NFNet/~/linear']['w']`` into
  ``{'NFNet/~/linear': {'w': ...}}``. Returns None when no path holds ``key``
  (an empty sub-tree has no leaves in the flat file, so None also covers
  empty states).
  """
  tree: dict = {}
  found = False
  for p, leaf in zip(paths, leaves):
    parts = parse_keystr(p)
    if key not in parts:
      continue
    rest = parts[parts.index(key) + 1:]
    if not rest:
      continue
    found = True
    node = tree
    for r in rest[:-1]:
      node = node.setdefault(r, {})
    node[rest[-1]] = leaf
  return tree if found else None


def find_checkpoint_dir(path: str) -> tuple[str, Optional[int]]:
  """A workdir / checkpoints dir / step dir -> (checkpoints dir, step or None)."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    return os.path.join(path, 'checkpoints'), None
  base = os.path.basename(path.rstrip('/'))
  if base.isdigit() and os.path.isdir(path):
    return os.path.dirname(path), int(base)
  return path, None


TREES = ('params', 'ema_params', 'model_state')


def load_train_checkpoint(path: str, step: Optional[int] = None
                          ) -> tuple[dict, dict]:
  """Reads one of our checkpoints without knowing the train-state class.

  Args:
    path: a workdir, its ``checkpoints/`` dir or a ``checkpoints/<step>`` dir.
    step: checkpoint step (default: the one named by ``path``, else the
      newest).

  Returns:
    (trees, meta): ``trees`` maps 'params', 'ema_params', 'model_state' to
    the nested dicts found (missing ones absent); ``meta`` is the saved JSON
    metadata (step, leaf paths, ...).

  Raises:
    FileNotFoundError: no finished checkpoint (or no such step) at ``path``.
    ValueError: the checkpoint holds no params.
  """
  ckpt_dir, named_step = find_checkpoint_dir(path)
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f'--checkpoint {path!r}: no such directory')
  reader = Checkpointer(ckpt_dir, read_only=True)
  try:
    steps = reader.steps()
    if not steps:
      raise FileNotFoundError(
          f'--checkpoint {path!r}: no finished checkpoint in {ckpt_dir}')
    step = step if step is not None else (
        named_step if named_step is not None else steps[-1])
    if step not in steps:
      raise FileNotFoundError(
          f'--checkpoint {path!r}: no step {step}; available {steps}')
    flat, meta = reader.restore_flat(step)
  finally:
    reader.close()
  paths = list(flat)
  leaves = [flat[p] for p in paths]
  trees = {}
  for key in TREES:
    t = subtree_from_paths(paths, leaves, key)
    if t is not None:
      trees[key] = t
  if 'params' not in trees:
    raise ValueError(f'--checkpoint {path!r}: step {step} holds no params '
                     f'(paths like {paths[:3]})')
  meta = dict(meta)
  meta['step'] = step
  return trees, meta
