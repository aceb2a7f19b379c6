"""Study: NF-ResNet vs BN-ResNet, with and without stochastic depth + dropout.

    python scripts/sweep.py --config configs/studies/regularization.py \
        --workdir workdirs/studies/regularization --parallel 1
    python scripts/report.py workdirs/studies/regularization

The NF-ResNet paper (Brock, De, Smith 2021, table of NF- vs BN-ResNets on
ImageNet, mean +- std of 5 runs) finds NF-ResNets match BN-ResNets without
extra regularization and beat them once stochastic depth and dropout are
added (BN's batch noise is itself a regularizer that NF models lack). Here
in miniature: the study network of ``common.py`` (same depth and widths for
both families) on Fashion-MNIST at 32 px, batch 256, peak LR 0.1, a fixed
budget of ``EPOCHS`` epochs, regularization off vs on (stochastic depth 0.1,
dropout 0.25 -- the NF-ResNet paper's values), 3 seeds each.

Variants: (default) the study; ``local``: a tiny model for 3 steps.
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    'nfnet_study_common', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'common.py'))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

EPOCHS = 2.0
BATCH = 256
ARMS = ('nf', 'bn')
REGULARIZATION = ({'model.stochdepth_rate': 0.0, 'model.drop_rate': 0.0},
                  {'model.stochdepth_rate': 0.1, 'model.drop_rate': 0.25})
SEEDS = (0, 1, 2)


def _opts(arg):
  opts = [o.strip() for o in (arg or '').split(',') if o.strip()]
  unknown = [o for o in opts if o != 'local']
  if unknown:
    raise ValueError(f'configs/studies/regularization.py: unknown variant(s) {unknown}; '
                     'allowed: local')
  return opts


def get_config(arg=''):
  """The study's base config (NF arm, no regularization); the sweep sets the rest."""
  return common.study_base('nf', BATCH, EPOCHS, local='local' in _opts(arg))


def get_sweep(arg=''):
  """arm x regularization x seed; ``local``: the two regularized arms, seed 0."""
  if 'local' in _opts(arg):
    return [dict(common.ARMS[a], **REGULARIZATION[1], seed=0) for a in ARMS]
  return [dict(common.ARMS[a], **reg, seed=s)
          for a in ARMS for reg in REGULARIZATION for s in SEEDS]
