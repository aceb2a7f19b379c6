"""Orbax checkpoints of the train state: atomic, kept k deep, corruption-safe.

The package's modules, by what they do (their public names are importable
from ``nfnet_jax.train.checkpoint``):

* ``manager.py``: :class:`Checkpointer`, the one writer and reader (orbax
  saves, restores against a template with the shape and CRC checks, the
  recovery from an unreadable newest checkpoint);
* ``failures.py``: the typed errors and their one-line descriptions;
* ``reader.py``: :func:`load_train_checkpoint`, reading without a template;
* ``config_diff.py`` and ``trained_config.py``: the config a checkpoint was
  trained with, and a ``--config`` checked against it.

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

from nfnet_jax.train.checkpoint.config_diff import RUN_ONLY_FIELDS
from nfnet_jax.train.checkpoint.config_diff import config_differences
from nfnet_jax.train.checkpoint.config_diff import contradicting_fields
from nfnet_jax.train.checkpoint.failures import CheckpointMismatchError
from nfnet_jax.train.checkpoint.failures import CheckpointSaveError
from nfnet_jax.train.checkpoint.failures import describe_read_error
from nfnet_jax.train.checkpoint.failures import describe_save_error
from nfnet_jax.train.checkpoint.manager import Checkpointer
from nfnet_jax.train.checkpoint.manager import all_finite
from nfnet_jax.train.checkpoint.reader import TREES
from nfnet_jax.train.checkpoint.reader import find_checkpoint_dir
from nfnet_jax.train.checkpoint.reader import load_train_checkpoint
from nfnet_jax.train.checkpoint.reader import parse_keystr
from nfnet_jax.train.checkpoint.reader import subtree_from_paths
from nfnet_jax.train.checkpoint.trained_config import config_for_checkpoint
from nfnet_jax.train.checkpoint.trained_config import read_meta
from nfnet_jax.train.checkpoint.trained_config import saved_config

__all__ = ['Checkpointer', 'CheckpointMismatchError', 'CheckpointSaveError', 'RUN_ONLY_FIELDS',
           'TREES', 'all_finite', 'config_differences', 'config_for_checkpoint',
           'contradicting_fields', 'describe_read_error', 'describe_save_error',
           'find_checkpoint_dir', 'load_train_checkpoint', 'parse_keystr', 'read_meta',
           'saved_config', 'subtree_from_paths']
