"""Console-script entry points: a quiet console, then the command's ``main``.

``nfnet-<name>`` (setup.py) and ``scripts/<name>.py`` both come here, so the
process-wide settings of :func:`nfnet_jax.commands.base.quiet_console` are
made before the command module (and TensorFlow) is imported.
"""
import importlib
import sys

from nfnet_jax.commands import base   # light: argparse and the config loader

# console-script name -> module of nfnet_jax.commands
COMMANDS = {
    'nfnet-train': 'train',
    'nfnet-evaluate': 'evaluate',
    'nfnet-convert': 'convert',
    'nfnet-export': 'export',
    'nfnet-report': 'report',
    'nfnet-agc-report': 'agc_report',
    'nfnet-prepare-data': 'prepare_data',
    'nfnet-show-recipe': 'show_recipe',
    'nfnet-model-table': 'model_table',
    'nfnet-benchmark': 'benchmark',
    'nfnet-spp': 'spp',
    'nfnet-predict': 'predict',
    'nfnet-sweep': 'sweep',
}


def run(module: str, argv=None) -> None:
  base.quiet_console()
  main = importlib.import_module(f'nfnet_jax.commands.{module}').main
  sys.exit(main(argv) or 0)


def _entry(module):
  def entry():
    run(module)
  entry.__name__ = module
  entry.__doc__ = f'nfnet-{module.replace("_", "-")}: see nfnet_jax.commands.{module}'
  return entry


train = _entry('train')
evaluate = _entry('evaluate')
convert = _entry('convert')
export = _entry('export')
report = _entry('report')
agc_report = _entry('agc_report')
prepare_data = _entry('prepare_data')
show_recipe = _entry('show_recipe')
model_table = _entry('model_table')
benchmark = _entry('benchmark')
spp = _entry('spp')
predict = _entry('predict')
sweep = _entry('sweep')
