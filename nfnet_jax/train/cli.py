"""What the trainer's command line runs (``nfnet-train``, ``scripts/train.py``).

The flags are parsed by :mod:`nfnet_jax.commands.train`; :func:`run` loads
the config, trains and maps each way a run can end to its exit status.
Re-running the same command resumes from the workdir's newest checkpoint.
Exit status (``nfnet_jax.errors``, docs/fault_tolerance.md): 0 when training
completed; 2 for bad input (config, flags, data, weights, workdir, a workdir
held by another run, a checkpoint that could not be written), one line
``error: ...`` (+ one ``hint: ...``); 3 when training diverged (too many
consecutive non-finite steps, or one with ``config.train.nonfinite='raise'``);
75 when a process of a multi-host job stopped answering (relaunch: it
resumes); 143 when stopped by SIGTERM after writing a checkpoint (re-run to
continue); 1 for a bug (with its traceback).
"""
import sys

from nfnet_jax import errors
from nfnet_jax.config import load as config_load
from nfnet_jax.train import loop

EXIT_PREEMPTED = errors.EXIT_PREEMPTED
EXIT_BAD_CONFIG = errors.EXIT_BAD_INPUT
EXIT_SAVE_FAILED = errors.EXIT_BAD_INPUT   # disk full, ...: CheckpointSaveError
# Read by nfnet_jax.analysis.sweeps: a diverged run is an outcome, not a crash.
EXIT_DIVERGED = errors.EXIT_DIVERGED
EXIT_LOST_HOST = errors.EXIT_LOST_HOST


def run(config_spec: str, workdir: str, overrides=()) -> None:
  """Trains ``config_spec`` (``file.py[:arg]`` + overrides) in ``workdir``.

  Exits (``SystemExit``) with the statuses above unless training completed.
  """
  config = errors.exit_on_error(config_load.load_config, config_spec,
                                overrides)
  config.lock()   # the loop reads the config; a new field would be a bug
  # Every anticipated failure is an errors.NFNetError: its line(s) and its
  # exit status; anything else is a bug and keeps its traceback.
  summary = errors.exit_on_error(loop.train_and_evaluate, config, workdir)
  if summary.get('status') == 'preempted':
    sys.exit(EXIT_PREEMPTED)

