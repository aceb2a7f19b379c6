"""What the trainer's command line runs (``nfnet-train``, ``scripts/train.py``).

The flags are parsed by :mod:`nfnet_jax.commands.train`; :func:`run` loads
the config, trains and maps each way a run can end to its exit status.
Re-running the same command resumes from the workdir's newest checkpoint.
Exit status: 0 when training completed, 143 when stopped by SIGTERM after
writing a checkpoint (re-run to continue), 2 for a bad config, 3 when
training diverged (too many consecutive non-finite steps, or one with
``config.train.nonfinite='raise'``), 1 for any other error.
"""
import sys

from nfnet_jax.config import load as config_load

EXIT_PREEMPTED = 143
EXIT_BAD_CONFIG = config_load.EXIT_BAD_CONFIG
EXIT_SAVE_FAILED = 2      # a checkpoint could not be written (disk full, ...)
# Read by nfnet_jax.analysis.sweep: a diverged run is an outcome, not a crash.
EXIT_DIVERGED = 3


def run(config_spec: str, workdir: str, overrides=()) -> None:
  """Trains ``config_spec`` (``file.py[:arg]`` + overrides) in ``workdir``.

  Exits (``SystemExit``) with the statuses above unless training completed.
  """
  config = config_load.exit_on_error(config_load.load_config, config_spec,
                                     overrides)
  config.lock()   # the loop reads the config; a new field would be a bug
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import steplog  # pylint: disable=g-import-not-at-top
  try:
    summary = loop.train_and_evaluate(config, workdir)
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
