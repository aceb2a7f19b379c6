"""Console-script entry points: a quiet console, then the command's ``main``.

``nfnet-<name>`` (setup.py) and ``scripts/<name>.py`` both come here, so the
process-wide settings of :func:`nfnet_jax.commands.base.quiet_console` are
made before the command module (and TensorFlow) is imported.
"""
import importlib
import sys

# console-script name -> module of nfnet_jax.commands
COMMANDS = {
    'nfnet-train': 'train',
}


def run(module: str, argv=None) -> None:
  from nfnet_jax.commands import base  # pylint: disable=g-import-not-at-top
  base.quiet_console()
  main = importlib.import_module(f'nfnet_jax.commands.{module}').main
  sys.exit(main(argv) or 0)


def _entry(module):
  def entry():
    run(module)
  entry.__name__ = module
  entry.__doc__ = f'nfnet-{module.replace("_", "-")}'
  return entry


train = _entry('train')
