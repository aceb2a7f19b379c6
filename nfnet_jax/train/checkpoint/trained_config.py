"""The config a checkpoint was trained with: read it, check a --config against it."""
import json
import os
from typing import Optional

import orbax.checkpoint as ocp

from nfnet_jax import errors
from nfnet_jax.config import load as config_load
from nfnet_jax.train.checkpoint.config_diff import tuplify
from nfnet_jax.train.checkpoint.config_diff import config_differences
from nfnet_jax.train.checkpoint.failures import describe_read_error
from nfnet_jax.train.checkpoint.reader import open_checkpoints


def read_meta(path: str, step: Optional[int] = None) -> tuple[dict, int]:
  """The JSON metadata of a checkpoint (no arrays read): ``(meta, step)``.

  Args:
    path: a workdir, its ``checkpoints/`` dir or a ``checkpoints/<step>`` dir.
    step: default: the one named by ``path``, else the newest.

  Raises:
    errors.NotFoundError: no finished checkpoint there.
    errors.WeightsError: its metadata cannot be read.
  """
  with open_checkpoints(path, repr(path)) as (reader, ckpt_dir, named_step):
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
  return ml_collections.ConfigDict(tuplify(json.loads(text))), step


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
