"""nfnet-show-recipe: the recipe a config resolves to, next to the official one.

Prints a Markdown table (docs/recipes.md's F0 table is this output): batch,
steps, warm-up, LR, weight decay and its mask, AGC and its exclusions, EMA,
label smoothing, augmentation and compute dtype as ours, the value of
DeepMind's official experiment file for the same model where one exists, and
whether they agree (nfnet_jax/recipes.py). Exit status 2 for a bad config or
override.

Examples:
  nfnet-show-recipe --config configs/nfnet.py:F0
  nfnet-show-recipe --config configs/nf_resnet.py:50,baseline
  nfnet-show-recipe --config configs/nfnet.py:F1 --config.train.batch_size=1024
"""
import argparse
import sys
from typing import Optional, Sequence

from nfnet_jax import recipes
from nfnet_jax.commands import base
from nfnet_jax.config import load


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__, config_overrides=True)
  p.add_config(help='experiment config file (also accepted as the one positional argument)')
  p.add_argument('config_arg', nargs='?', default=None, metavar='CONFIG',
                 help=argparse.SUPPRESS)
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  args, overrides = p.parse_with_overrides(argv)
  if (args.config is None) == (args.config_arg is None):
    p.error('give one experiment config, e.g. --config configs/nfnet.py:F0')
  spec = args.config or args.config_arg
  try:
    config = load.load_config(spec, overrides)
    # A config module may name the official experiment it follows
    # (configs/nf_resnet.py: experiment_nfnets.py or, for `baseline`,
    # experiment.py); otherwise the model name decides.
    _, arg = load.split_spec(spec)
    named = getattr(load.load_config_module(spec), 'official_experiment', None)
    experiment = (named(arg) if arg is not None else named()) if named else None
  except ValueError as e:    # ConfigError, or a config's bad `arg`
    print(f'error: {e}', file=sys.stderr)
    return load.EXIT_BAD_CONFIG
  print(recipes.recipe_table(config, experiment, title=spec))
  return 0
