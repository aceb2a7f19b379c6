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

The checkpoint layout (``<workdir>/checkpoints/<step>/``, orbax's atomic
rename), the stored format (a flat leaf mapping plus path/shape/dtype
metadata), the recovery from a corrupt newest checkpoint and asynchronous
saves are described once, in ``manager.py``'s docstring.
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
