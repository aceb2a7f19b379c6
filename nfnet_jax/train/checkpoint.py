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
import json
import logging
import os
import re
import shutil
import time
import zlib
from typing import Any, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from nfnet_jax import errors
from nfnet_jax.config import load as config_load

PyTree = Any


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


# Attached to orbax's loggers by entry points only (nfnet_jax/console.py):
# a logging filter is process-wide state.
ORBAX_THREAD_ERROR_FILTER = _OrbaxThreadErrorFilter()


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
    raise errors.NotFoundError(f'--checkpoint {path!r}: no such directory')
  reader = Checkpointer(ckpt_dir, read_only=True)
  try:
    steps = reader.steps()
    if not steps:
      raise errors.NotFoundError(
          f'--checkpoint {path!r}: no finished checkpoint in {ckpt_dir}')
    step = step if step is not None else (
        named_step if named_step is not None else steps[-1])
    if step not in steps:
      raise errors.NotFoundError(
          f'--checkpoint {path!r}: no step {step}; available {steps}')
    try:
      flat, meta = reader.restore_flat(step)
    except Exception as e:  # pylint: disable=broad-except
      # Truncated/corrupt files: one line naming the step and the reason.
      older = [s for s in steps if s != step]
      raise errors.WeightsError(
          f'--checkpoint {path!r}: checkpoint {ckpt_dir}/{step} is '
          f'unreadable ({describe_read_error(e)})',
          hint=(f'older checkpoints: {older}; name one as {ckpt_dir}/<step>'
                if older else None)) from None
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
    raise errors.WeightsError(f'--checkpoint {path!r}: step {step} holds no params '
                     f'(paths like {paths[:3]})')
  meta = dict(meta)
  meta['step'] = step
  return trees, meta


# ---------------------------------------------------------------------------
# The config a checkpoint was trained with


def _tuplify(x):
  """JSON lists back to tuples (configs hold tuples; JSON has no tuple)."""
  if isinstance(x, dict):
    return {k: _tuplify(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuplify(v) for v in x)
  return x


def _flat_fields(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat_fields(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


# Fields in the order a reader cares about: what builds the state first.
_FIELD_ORDER = ('model.', 'optimizer.', 'data.', 'compute_dtype', 'parallel.',
                'finetune.', 'train.', 'seed')


def _as_dict(c):
  if isinstance(c, str):
    c = json.loads(c)
  elif hasattr(c, 'to_json'):
    c = json.loads(c.to_json())
  return _tuplify(c)


def config_differences(saved, config) -> list[tuple[str, Any, Any]]:
  """``[(dotted_field, saved_value, current_value), ...]`` that differ.

  Args:
    saved: the config a checkpoint was saved with (its JSON text, a dict or
      a ConfigDict), or None.
    config: the current config (ConfigDict or dict), or None.

  Model fields come first, then optimizer, data, ...; a field only one
  side has is listed with None on the other.
  """
  if saved is None or config is None:
    return []
  try:
    a, b = _flat_fields(_as_dict(saved)), _flat_fields(_as_dict(config))
  except (TypeError, ValueError):
    return []
  keys = list(a) + [k for k in b if k not in a]

  def rank(k):
    return next((i for i, p in enumerate(_FIELD_ORDER) if k.startswith(p)),
                len(_FIELD_ORDER))
  return [(k, a.get(k), b.get(k)) for k in sorted(keys, key=rank)
          if a.get(k) != b.get(k)]


def read_meta(path: str, step: Optional[int] = None) -> tuple[dict, int]:
  """The JSON metadata of a checkpoint (no arrays read): ``(meta, step)``.

  Args:
    path: a workdir, its ``checkpoints/`` dir or a ``checkpoints/<step>`` dir.
    step: default: the one named by ``path``, else the newest.

  Raises:
    errors.NotFoundError: no finished checkpoint there.
    errors.WeightsError: its metadata cannot be read.
  """
  ckpt_dir, named_step = find_checkpoint_dir(path)
  if not os.path.isdir(ckpt_dir):
    raise errors.NotFoundError(f'{path!r}: no such directory')
  reader = Checkpointer(ckpt_dir, read_only=True)
  try:
    steps = reader.steps()
    if step is None:
      step = named_step if named_step is not None else (
          steps[-1] if steps else None)
    if step is None or step not in steps:
      raise errors.NotFoundError(
          f'{path!r}: no finished checkpoint'
          + (f' {step}' if step is not None else '') + f' in {ckpt_dir}')
    try:
      meta = reader._manager.restore(step, args=ocp.args.Composite(  # pylint: disable=protected-access
          meta=ocp.args.JsonRestore()))['meta']
    except Exception as e:  # pylint: disable=broad-except
      raise errors.WeightsError(
          f'checkpoint {ckpt_dir}/{step}: metadata unreadable '
          f'({describe_read_error(e)})') from None
  finally:
    reader.close()
  return dict(meta), step


def saved_config(path: str, step: Optional[int] = None):
  """The config a workdir's checkpoint was trained with.

  Returns:
    ``(config, step)``: an ``ml_collections.ConfigDict`` rebuilt from the
    JSON saved in the checkpoint's metadata (tuples restored), or
    ``(None, step)`` for a checkpoint written without one.

  Raises:
    errors.NotFoundError / errors.WeightsError: see :func:`read_meta`.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  meta, step = read_meta(path, step)
  text = meta.get('config')
  if not text:
    return None, step
  return ml_collections.ConfigDict(_tuplify(json.loads(text))), step


# What does not change the trained model: a --config may differ there.
RUN_ONLY_FIELDS = ('train.', 'parallel.', 'seed', 'finetune.')


def contradicting_fields(saved, config) -> list[tuple[str, Any, Any]]:
  """Fields of ``config`` that contradict the ``saved`` one on what was trained.

  Differences in :data:`RUN_ONLY_FIELDS` (steps, logging, devices, seed)
  are ignored.
  """
  return [d for d in config_differences(saved, config)
          if not d[0].startswith(RUN_ONLY_FIELDS)]


# Fields a --config must agree on with the config a checkpoint was trained
# with: what builds the network and what its classifier was trained on
# (data_dir, splits, batch sizes, dtypes may differ for a reader).
_MUST_AGREE = ('model.', 'data.name')


def config_for_checkpoint(path: str, config=None, spec: Optional[str] = None,
                          overrides=()):
  """The config to read a workdir's checkpoint with (evaluate, export, ...).

  Args:
    path: the ``--checkpoint``: a workdir, its ``checkpoints/`` or a step dir
      (anything else, e.g. an official ``.npz``, has no saved config).
    config: the ``--config`` given, or None.
    spec: how the user named it (for the message).
    overrides: ``--config.a.b=v`` pairs, applied to the saved config when
      it is used.

  Returns:
    ``config`` when given and consistent (or when ``path`` saved none), else
    the saved config with ``overrides`` applied.

  Raises:
    errors.BadInputError: ``config`` contradicts the saved one (one line
      naming the first differing fields), or neither exists.
  """
  saved = None
  if os.path.isdir(path):
    try:
      saved, _ = saved_config(path)
    except errors.NotFoundError:
      saved = None
  if saved is None:
    if config is None:
      raise errors.BadInputError(
          f'--config is required: {path} holds no config saved with a '
          'checkpoint (an official file, or a checkpoint written without one)')
    return config
  if config is None:
    config_load.apply_overrides(saved, overrides)
    return saved
  bad = [d for d in config_differences(saved, config)
         if d[0].startswith(_MUST_AGREE) and d[1] is not None]
  if bad:
    shown = ', '.join(f'config.{k}={b!r} (trained with {a!r})'
                      for k, a, b in bad[:3])
    more = f' and {len(bad) - 3} more' if len(bad) > 3 else ''
    raise errors.BadInputError(
        f'--config {spec or ""} contradicts the config {path} was trained '
        f'with: {shown}{more}',
        hint='leave out --config to use the saved one (override single '
             'fields with --config.a.b=value)')
  return config
