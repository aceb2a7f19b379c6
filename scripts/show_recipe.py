#!/usr/bin/env python
"""Prints the training recipe a config resolves to, next to the official one.

  python scripts/show_recipe.py configs/nfnet.py:F0
  python scripts/show_recipe.py configs/nf_resnet.py:50,baseline
  python scripts/show_recipe.py configs/nfnet.py:F1 --config.train.batch_size=1024

CONFIG is a config file with an optional ``:arg``, as for scripts/train.py,
and ``--config.a.b=value`` overrides apply as there. The output is a Markdown
table (the README's F0 table is this script's output): batch, steps, warm-up,
LR, weight decay and its mask, AGC and its exclusions, EMA, label smoothing,
augmentation and compute dtype as ours, the value of DeepMind's official
experiment file for the same model where one exists, and whether they agree
(see nfnet_jax/recipes.py). Exit status 2 for a bad CONFIG or override.
"""
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

USAGE = ('usage: show_recipe.py CONFIG[:ARG] [--config.a.b=value ...], e.g. '
         'configs/nfnet.py:F0')


def _load(spec: str):
  """(config, official experiment named by the config module or None)."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise ValueError(f'config file {path!r} not found')
  module_spec = importlib.util.spec_from_file_location('show_recipe_config',
                                                       path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  args = (arg,) if arg else ()
  config = module.get_config(*args)
  experiment = getattr(module, 'official_experiment', None)
  return config, (experiment(*args) if experiment else None)


def main(argv) -> int:
  from nfnet_jax import recipes  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import cli  # pylint: disable=g-import-not-at-top
  specs = [a for a in argv if not a.startswith('--')]
  flags = [a for a in argv if a.startswith('--')]
  if len(specs) != 1 or any(a in ('--help', '-h') for a in argv):
    print(USAGE, file=sys.stderr)
    return 2
  overrides = []
  for flag in flags:
    if not flag.startswith('--config.') or '=' not in flag:
      print(f'error: unknown flag {flag!r}; {USAGE}', file=sys.stderr)
      return 2
    field, value = flag[len('--config.'):].split('=', 1)
    overrides.append((field, cli._parse_value(value)))  # pylint: disable=protected-access
  try:
    config, experiment = _load(specs[0])
    cli.apply_overrides(config, overrides)
  except (ValueError, KeyError, AttributeError) as e:
    print(f'error: {specs[0]}: {e}', file=sys.stderr)
    return 2
  print(recipes.recipe_table(config, experiment, title=specs[0]))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
