#!/usr/bin/env python
"""Prints the training recipe a config resolves to, next to the official one.

  python scripts/show_recipe.py configs/nfnet.py:F0
  python scripts/show_recipe.py configs/nf_resnet.py:50,baseline
  python scripts/show_recipe.py configs/nfnet.py:F1 --config.train.batch_size=1024

CONFIG is a config file with an optional ``:arg``, as for scripts/train.py,
and ``--config.a.b=value`` overrides apply as there. The output is a Markdown
table (docs/recipes.md's F0 table is this script's output): batch, steps, warm-up,
LR, weight decay and its mask, AGC and its exclusions, EMA, label smoothing,
augmentation and compute dtype as ours, the value of DeepMind's official
experiment file for the same model where one exists, and whether they agree
(see nfnet_jax/recipes.py). Exit status 2 for a bad CONFIG or override.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

USAGE = ('usage: show_recipe.py CONFIG[:ARG] [--config.a.b=value ...], e.g. '
         'configs/nfnet.py:F0')


def main(argv) -> int:
  from nfnet_jax import recipes  # pylint: disable=g-import-not-at-top
  from nfnet_jax.config import load  # pylint: disable=g-import-not-at-top
  if any(a in ('--help', '-h') for a in argv):
    print(USAGE, file=sys.stderr)
    return 2
  try:
    specs, overrides = load.split_overrides(argv)
    if len(specs) != 1 or specs[0].startswith('-'):
      raise load.ConfigError(f'expected one CONFIG and --config.a.b=v '
                             f'overrides, got {argv}; {USAGE}')
    config = load.load_config(specs[0], overrides)
    # A config module may name the official experiment it follows
    # (configs/nf_resnet.py: experiment_nfnets.py or, for `baseline`,
    # experiment.py); otherwise the model name decides.
    _, arg = load.split_spec(specs[0])
    named = getattr(load.load_config_module(specs[0]), 'official_experiment',
                    None)
    experiment = (named(arg) if arg is not None else named()) if named else None
  except ValueError as e:    # ConfigError, or a config's bad `arg`
    print(f'error: {e}', file=sys.stderr)
    return load.EXIT_BAD_CONFIG
  print(recipes.recipe_table(config, experiment, title=specs[0]))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
