"""Study: NF-ResNet vs BN-ResNet where they overfit, with and without dropout + stochastic depth.

    python scripts/sweep.py --config configs/studies/regularization.py \
        --workdir workdirs/studies/regularization --launcher inproc
    python scripts/report.py workdirs/studies/regularization --out docs/studies/regularization_results

The NF-ResNet paper (Brock, De & Smith 2021): without extra regularization
NF-ResNets fall behind batch-normalized ResNets on ImageNet (BN's batch noise
is an implicit regularizer); with dropout and stochastic depth they match
them (5 seeds, mean +- std). The claim is about models that *overfit*. Here
they are made to: the training subset ``TRAIN_SPLIT`` of Fashion-MNIST for
``EPOCHS`` epochs, so the unregularized models fit their training images far
better than the test set. Both families get the same shape (``common.py``
widths x ``WIDTH``, ``DEPTHS``); regularization off vs on at the NF-ResNet
paper's values (stochastic depth 0.1, dropout 0.25). Train top-1 is measured
on the training subset with the eval preprocessing (``data.train_eval_split``)
at the end, next to the test top-1, so the report shows the gap. 5 seeds.

One device (BatchNorm statistics over the whole batch).

Variants: (default) the study; ``local``: tiny, 3 steps (tests).
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    'nfnet_study_common', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'common.py'))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

TRAIN_EXAMPLES = 1000
TRAIN_SPLIT = f'train[:{TRAIN_EXAMPLES}]'
EPOCHS = 40
BATCH = 64
BASE_LR = 0.2            # peak LR per 256 images
DEPTHS = (1, 1, 1, 1)
WIDTHS = (16, 32, 64, 128)
STEM_WIDTH = 8
EVAL_SPLIT = 'test[:5000]'
# One device: 'bn' without the per-device / synced distinction (label 'ResNet (batchnorm)').
ARMS = {'nf': common.ARMS['nf'], 'bn': dict(common.ARMS['bn'], **{'model.bn_cross_replica': None})}
REGULARIZATION = ({'model.stochdepth_rate': 0.0, 'model.drop_rate': 0.0},
                  {'model.stochdepth_rate': 0.1, 'model.drop_rate': 0.25})
SEEDS = (0, 1, 2, 3, 4)


def _opts(arg):
  return common.study_options(arg, 'regularization')


def get_config(arg=''):
  """The study's base config (NF arm, no regularization); the sweep sets the rest."""
  local = 'local' in _opts(arg)
  c = common.study_base('nf', BATCH, EPOCHS, local=local)
  c.parallel.num_devices = 1
  c.optimizer.base_lr = BASE_LR
  c.data.train_split = TRAIN_SPLIT
  c.data.train_eval_split = TRAIN_SPLIT
  c.data.shuffle_buffer = TRAIN_EXAMPLES
  c.data.eval_split = common.LOCAL_EVAL_SPLIT if local else EVAL_SPLIT
  # No augmentation: the miniature has to overfit its 1,000 images within
  # the budget (with pad-crop + flip, 2,000 images and 40 epochs the
  # unregularized NF-ResNet still fit its training images only to 87.4%
  # against 81.5% on the test set: no overfitting to regularize).
  c.data.train_crop = 'none'
  c.data.random_flip = False
  if not local:
    c.model.depths = DEPTHS
    c.model.widths = WIDTHS
    c.model.stem_width = STEM_WIDTH
    for key, value in common.batch_point(BATCH, EPOCHS, examples=TRAIN_EXAMPLES).items():
      common._set(c, key, value)  # pylint: disable=protected-access
  return c


def get_sweep(arg=''):
  """seed x regularization x arm (seeds outermost); ``local``: the two regularized arms, seed 0."""
  if 'local' in _opts(arg):
    return [dict(ARMS[a], **REGULARIZATION[1], seed=0) for a in ARMS]
  return [dict(ARMS[a], **reg, seed=s)
          for s in SEEDS for reg in REGULARIZATION for a in ARMS]
