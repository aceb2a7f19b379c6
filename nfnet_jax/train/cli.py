"""Command line of the trainer (``nfnet-train`` and ``scripts/train.py``).

    nfnet-train --config configs/nfnet.py:F0 --workdir DIR \
        --config.optimizer.clipping=0.02

``--config`` is an ml_collections config file with an optional ``:arg``
passed to its ``get_config(arg)``; ``--config.a.b=value`` overrides any field.
Re-running the same command resumes from ``DIR``'s newest checkpoint.
Exit status: 0 when training completed, 143 when stopped by SIGTERM after
writing a checkpoint (re-run to continue), 2 for a bad config.
"""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/nfnet.py:F0.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, TensorBoard logs, '
    'metrics.jsonl and summary.json; an existing one is resumed.')

EXIT_PREEMPTED = 143
EXIT_BAD_CONFIG = 2


def _run(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError('both --config and --workdir are required, e.g. '
                         '--config configs/fashion_mnist.py '
                         '--workdir /tmp/fmnist')
  # Orbax and TF log every file operation at INFO: keep the console readable.
  absl_logging.set_verbosity(absl_logging.WARNING)
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  try:
    summary = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:
    if 'config.' not in str(e):
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)
  if summary.get('status') == 'preempted':
    sys.exit(EXIT_PREEMPTED)


def main(argv=None) -> None:
  """Console entry point."""
  app.run(_run, argv=argv)


if __name__ == '__main__':
  main()
