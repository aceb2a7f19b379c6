"""The Checkpointer: orbax saves and restores of the train state, with recovery.

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
import os
import shutil
import time
import zlib
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from nfnet_jax.train.checkpoint.config_diff import contradicting_fields
from nfnet_jax.train.checkpoint.failures import CheckpointMismatchError
from nfnet_jax.train.checkpoint.failures import CheckpointSaveError
from nfnet_jax.train.checkpoint.failures import describe_read_error
from nfnet_jax.train.checkpoint.failures import describe_save_error

PyTree = Any


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
    config: the run's config (only named in error messages: which fields
      differ from the config a mismatching checkpoint was trained with).
  """

  def __init__(self, directory: str, keep: int = 3, log=print,
               read_only: bool = False, async_save: bool = False,
               config=None):
    self._config = config
    self.directory = os.path.abspath(directory)
    self.keep = max(int(keep), 1)
    self.log = log
    self.read_only = read_only
    self.async_save = bool(async_save) and not read_only
    self._pending: Optional[int] = None   # step of the save in flight
    self._manager = None
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
    saved_shapes = dict(zip(saved, (tuple(x) for x in info.get('shapes', []))))
    current = {p: tuple(x.shape) for p, x in zip(paths, leaves)}
    differ = [f'{p} has shape {saved_shapes[p]} but the current config builds '
              f'{current[p]}'
              for p in paths if p in saved_shapes and saved_shapes[p] != current[p]]
    missing = [p for p in paths if p not in saved_shapes]
    extra = [p for p in saved if p not in current]
    if not (differ or missing or extra):
      return
    parts = []
    if differ:
      parts.append(f'{len(differ)} leaves differ in shape, first: '
                   + '; '.join(differ[:2]))
    if missing:
      parts.append(f'{len(missing)} leaves missing from the checkpoint, '
                   f'first: {missing[0]}')
    if extra:
      parts.append(f'{len(extra)} unexpected leaves in it, first: {extra[0]}')
    changed = [d for d in contradicting_fields(info.get('config'), self._config)
               if d[1] is not None]
    raise CheckpointMismatchError(
        f'checkpoint {self.directory}/{step} was written by another model/'
        f'optimizer than the current config builds: ' + '; '.join(parts)
        + '. Use a fresh --workdir.',
        hint=(('the checkpoint was trained with ' + ', '.join(
            f'config.{k}={a!r} (now {b!r})' for k, a, b in changed[:3]))
              if changed else None))

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

    Unreadable checkpoints are moved aside and skipped, each reported in one
    line (``checkpoint N unreadable (...), moved to ..., resuming from M``);
    a checkpoint that reads fine but does not fit ``template`` raises
    :class:`CheckpointMismatchError` (older ones would not fit either).
    """
    bad = []   # (step, reason, moved_to) of the unreadable ones, newest first
    found = None
    while True:
      steps = self.steps()
      if not steps:
        break
      step = steps[-1]
      try:
        state, info = self.restore(step, template)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        bad.append((step, describe_read_error(e), self._quarantine(step)))
        continue
      found = state, info, step
      break
    for n, (step, reason, moved) in enumerate(bad):
      then = (f'resuming from the previous one, {found[2]}' if found else
              'no previous one is left: starting from step 0')
      if n + 1 < len(bad):
        then = f'trying the previous one, {bad[n + 1][0]}'
      self.log(f'[checkpoint] checkpoint {self.directory}/{step} is unreadable'
               f' ({reason}), moved to {moved}, {then}')
    return found

  def _quarantine(self, step: int):
    src = os.path.join(self.directory, str(step))
    dst_dir = os.path.join(os.path.dirname(self.directory),
                           'corrupt_checkpoints')
    dst = os.path.join(dst_dir, f'{step}-{int(time.time())}')
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(dst_dir, exist_ok=True)
      shutil.move(src, dst)
    if jax.process_count() > 1:
      # Every process must see the move before listing the steps again.
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'quarantine_checkpoint_{step}')
    self._open()
    if step in self._manager.all_steps():
      raise IOError(f'could not move the unreadable checkpoint {src} aside; '
                    'delete it and restart.')
    return dst

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
