"""Console-script entry points: a quiet console, then the command's ``main``.

``nfnet-<name>`` (setup.py) and ``scripts/<name>.py`` both come here, so the
process-wide settings of :func:`nfnet_jax.commands.base.quiet_console` and
:func:`~nfnet_jax.commands.base.skip_keras_import` are made before the
command module (and TensorFlow) is imported, and the commands that run XLA
steps on their own command line start over with tcmalloc
(:func:`~nfnet_jax.commands.base.preload_tcmalloc`).
"""
import importlib
import sys

from nfnet_jax.commands import base   # light: argparse and the config loader

# The modules of nfnet_jax.commands; module x_y is the console script nfnet-x-y.
MODULES = ('train', 'evaluate', 'convert', 'export', 'report', 'agc_report',
           'prepare_data', 'show_recipe', 'model_table', 'benchmark', 'spp',
           'predict', 'sweep', 'curves')

# console-script name -> module of nfnet_jax.commands
COMMANDS = {f'nfnet-{m.replace("_", "-")}': m for m in MODULES}

# The commands whose time goes to XLA steps (training, sweeps of training
# runs, step timing, evaluation): they run with tcmalloc where it is installed.
TCMALLOC_MODULES = ('train', 'sweep', 'benchmark', 'evaluate')


def run(module: str, argv=None) -> None:
  """Runs command ``module`` on ``argv`` (None: this process's command line)."""
  if argv is None and module in TCMALLOC_MODULES:
    base.preload_tcmalloc()   # returns only where no re-execution is due
  base.quiet_console()
  base.skip_keras_import()
  main = importlib.import_module(f'nfnet_jax.commands.{module}').main
  sys.exit(main(argv) or 0)


def _entry(module):
  def entry():
    run(module)
  entry.__name__ = module
  entry.__doc__ = f'nfnet-{module.replace("_", "-")}: see nfnet_jax.commands.{module}'
  return entry


# One entry function per command, named as its module: setup.py's
# console_scripts point at them (nfnet-train=nfnet_jax.commands.entry:train).
for _module in MODULES:
  globals()[_module] = _entry(_module)
del _module
