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
import ast
import importlib.util
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
# Read by nfnet_jax.analysis.sweep: a diverged run is an outcome, not a crash.
EXIT_DIVERGED = 3


_NONE_WORDS = ('none', 'null')
# Overrides ml_collections' config flags cannot parse (set here after parsing).
_EXTRA_OVERRIDES: list = []


def _parse_value(text: str):
  if text.strip().lower() in _NONE_WORDS:
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _load_config_file(spec: str):
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('nfnet_cli_config',
                                                       path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _lookup(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def split_unparseable_overrides(argv: list) -> tuple[list, list]:
  """Separates ``--config.a.b=v`` flags ml_collections cannot handle.

  ``config_flags`` types each override by the field's current value, so it
  can neither set a float field to None (``--config.optimizer.clipping=None``
  disables AGC) nor set a field whose default is None
  (``--config.finetune.checkpoint=F0_haiku.npz``,
  ``--config.optimizer.sam_rho=0.05``). Those flags are removed from
  ``argv`` and returned as ``(dotted_field, value)`` pairs (values parsed
  as Python literals, else kept as strings) to be applied after parsing.

  Returns:
    ``(remaining_argv, overrides)``.
  """
  spec = None
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      spec = a.split('=', 1)[1]
    elif a == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec is None:
    return list(argv), []
  config = None
  rest, overrides = [], []
  for a in argv:
    if a.startswith('--config.') and '=' in a:
      field, value = a[len('--config.'):].split('=', 1)
      if config is None:
        config = _load_config_file(spec)
      try:
        current = _lookup(config, field)
      except (KeyError, AttributeError):
        current = 0   # unknown field: let config_flags report it
      if value.strip().lower() in _NONE_WORDS or current is None:
        overrides.append((field, _parse_value(value)))
        continue
    rest.append(a)
  return rest, overrides


def apply_overrides(config, overrides) -> None:
  """Sets ``(dotted_field, value)`` pairs on a (possibly locked) config."""
  for field, value in overrides:
    parent, _, name = field.rpartition('.')
    node = _lookup(config, parent) if parent else config
    node[name] = value


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
  config = _CONFIG.value
  apply_overrides(config, _EXTRA_OVERRIDES)
  try:
    summary = loop.train_and_evaluate(config, _WORKDIR.value)
  except ValueError as e:
    if 'config.' not in str(e):
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)
  except (loop.TrainingDiverged, FloatingPointError) as e:
    print(f'error: training diverged: {e}', file=sys.stderr)
    sys.exit(EXIT_DIVERGED)
  if summary.get('status') == 'preempted':
    sys.exit(EXIT_PREEMPTED)


def main(argv=None) -> None:
  """Console entry point."""
  argv = list(sys.argv if argv is None else argv)
  argv, extra = split_unparseable_overrides(argv)
  _EXTRA_OVERRIDES[:] = extra
  # config_flags looks for `--config.*` override flags in sys.argv itself,
  # so the flags taken out above must leave sys.argv too.
  sys.argv[:] = argv
  app.run(_run, argv=argv)


if __name__ == '__main__':
  main()
