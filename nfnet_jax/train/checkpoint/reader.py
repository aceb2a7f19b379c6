"""Reading a checkpoint without a template (evaluation, fine-tuning, conversion).

:func:`load_train_checkpoint` rebuilds the ``params`` / ``ema_params`` /
``model_state`` sub-trees from the stored leaf paths, so its callers need
neither the optimizer nor the train-state class.
"""
import ast
import contextlib
import os
import re
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from nfnet_jax import errors
from nfnet_jax.train.checkpoint.failures import describe_read_error
from nfnet_jax.train.checkpoint.manager import Checkpointer

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


@contextlib.contextmanager
def open_checkpoints(path: str, label: str
                     ) -> Iterator[tuple[Checkpointer, str, Optional[int]]]:
  """A read-only :class:`Checkpointer` of the checkpoints ``path`` names, closed after.

  Args:
    path: a workdir, its ``checkpoints/`` dir or a ``checkpoints/<step>`` dir.
    label: how error messages name ``path`` (``"--checkpoint 'W'"``).

  Yields:
    ``(reader, checkpoints dir, the step path names or None)``.

  Raises:
    errors.NotFoundError: no such directory.
  """
  ckpt_dir, named_step = find_checkpoint_dir(path)
  if not os.path.isdir(ckpt_dir):
    raise errors.NotFoundError(f'{label}: no such directory')
  reader = Checkpointer(ckpt_dir, read_only=True)
  try:
    yield reader, ckpt_dir, named_step
  finally:
    reader.close()


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
  with open_checkpoints(path, f'--checkpoint {path!r}') as (reader, ckpt_dir, named_step):
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
