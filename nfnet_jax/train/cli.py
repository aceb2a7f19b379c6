"""Command line of the trainer (``nfnet-train`` and ``scripts/train.py``).

    nfnet-train --config configs/nfnet.py:F0 --workdir DIR \
        --config.optimizer.clipping=0.02

``--config`` is an ml_collections config file with an optional ``:arg``
passed to its ``get_config(arg)``; ``--config.a.b=value`` overrides any field.
Re-running the same command resumes from ``DIR``'s newest checkpoint.
Exit status: 0 when training completed, 143 when stopped by SIGTERM after
writing a checkpoint (re-run to continue), 2 for a bad config, 3 when
training diverged (too many consecutive non-finite steps, or one with
``config.train.nonfinite='raise'``), 1 for any other error.
"""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging as absl_logging

from nfnet_jax.config import load as config_load

_CONFIG = flags.DEFINE_string(
    'config', None, 'Experiment config file, e.g. configs/nfnet.py:F0; '
    'override any field with --config.a.b=value.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, TensorBoard logs, '
    'metrics.jsonl and summary.json; an existing one is resumed.')

EXIT_PREEMPTED = 143
EXIT_BAD_CONFIG = config_load.EXIT_BAD_CONFIG
EXIT_SAVE_FAILED = 2      # a checkpoint could not be written (disk full, ...)
# Read by nfnet_jax.analysis.sweep: a diverged run is an outcome, not a crash.
EXIT_DIVERGED = 3


def _run(argv, overrides) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError('both --config and --workdir are required, e.g. '
                         '--config configs/fashion_mnist.py '
                         '--workdir /tmp/fmnist')
  config = config_load.exit_on_error(config_load.load_config, _CONFIG.value,
                                     overrides)
  config.lock()   # the loop reads the config; a new field would be a bug
  # Orbax and TF log every file operation at INFO: keep the console readable.
  absl_logging.set_verbosity(absl_logging.WARNING)
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import steplog  # pylint: disable=g-import-not-at-top
  try:
    summary = loop.train_and_evaluate(config, _WORKDIR.value)
  except ckpt_lib.CheckpointSaveError as e:
    # Disk full, permission denied, ...: one line naming the path, the error
    # and the last good checkpoint (a rerun resumes from it).
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_SAVE_FAILED)
  except ValueError as e:
    if 'config.' not in str(e):
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)
  except (steplog.TrainingDiverged, FloatingPointError) as e:
    print(f'error: training diverged: {e}', file=sys.stderr)
    sys.exit(EXIT_DIVERGED)
  if summary.get('status') == 'preempted':
    sys.exit(EXIT_PREEMPTED)


def main(argv=None) -> None:
  """Console entry point."""
  config_load.run_absl(_run, argv)


if __name__ == '__main__':
  main()
