"""Shared base of the miniature studies in ``configs/studies/``.

Every study trains on Fashion-MNIST at 32 px on this CPU with one small
bottleneck network whose *family* the sweep picks: the NF-ResNet of the
quickstart (``configs/fashion_mnist.py``) or the normalized pre-activation
ResNet baselines of ``nfnet_jax/models/resnet.py`` (BatchNorm, GroupNorm,
WS+GroupNorm). Both families get the same stage widths (64-512 outputs,
bottleneck 16-128, one block per stage, a 16-channel stem), so the arms
differ only in normalization / scaling.

``config.model`` is the union of both families' fields; a field the other
family does not take is None, which the model registry drops. So one
config file serves every arm and a grid point switches family with plain
overrides, e.g. :data:`ARMS` ``['bn']`` (the CLI accepts ``=None``).

Not a config itself (no ``get_config``); the studies import it by path.
"""

import ml_collections

from nfnet_jax import config as base_lib

TRAIN_EXAMPLES = 60_000
WIDTHS = (64, 128, 256, 512)

# Overrides selecting each arm of the studies.
# ``bn`` normalizes each device's examples with their own statistics (as the
# official experiments do); ``bn_sync`` averages them over the global batch
# (model.bn_cross_replica). ``model.bn_cross_replica`` is None for the other
# arms (a field the NF-ResNet does not take).
ARMS = {
    'nf': {'model.name': 'NFResNet', 'model.norm': None, 'model.alpha': 0.2,
           'model.bn_cross_replica': None},
    'bn': {'model.name': 'ResNet', 'model.norm': 'batchnorm', 'model.alpha': None,
           'model.bn_cross_replica': False},
    'bn_sync': {'model.name': 'ResNet', 'model.norm': 'batchnorm', 'model.alpha': None,
                'model.bn_cross_replica': True},
    'gn': {'model.name': 'ResNet', 'model.norm': 'groupnorm', 'model.alpha': None,
           'model.bn_cross_replica': None},
    'ws_gn': {'model.name': 'ResNet', 'model.norm': 'ws_groupnorm', 'model.alpha': None,
              'model.bn_cross_replica': None},
}


# AGC on every weight but the classifier's and the skip gains (the NFNet
# paper's rule; configs/fashion_mnist.py does the same).
AGC_EXCLUDE = f'({base_lib.CLASSIFIER_WEIGHT})|(skip_gain$)'


def steps_for(epochs: float, batch: int, examples: int = TRAIN_EXAMPLES) -> int:
  """Steps that see ``epochs`` passes over ``examples`` training images."""
  return max(1, int(round(epochs * examples / batch)))


def study_options(arg: str, study: str, allowed=('local',)) -> list:
  """The comma-separated variants of a study's ``arg`` (``local`` unless a
  study allows more, e.g. a ``pilot``).

  Raises:
    ValueError: naming ``configs/studies/<study>.py`` and the unknown variants.
  """
  opts = [o.strip() for o in (arg or '').split(',') if o.strip()]
  unknown = [o for o in opts if o not in allowed]
  if unknown:
    raise ValueError(f'configs/studies/{study}.py: unknown variant(s) {unknown}; '
                     f'allowed: {", ".join(allowed)}')
  return opts


# The ``local`` variants evaluate on the first 500 test images: the smoke runs
# (and the tests that train them) check that the pipeline works, not accuracy.
LOCAL_EVAL_SPLIT = 'test[:500]'


def batch_point(batch: int, epochs: float, local: bool = False,
                examples: int = TRAIN_EXAMPLES) -> dict:
  """Sweep overrides for one batch size: steps for ``epochs`` epochs, warm-up a fifth.

  NF-ResNets start slowly and spike without a warm-up (measured here: loss
  2.2 -> 2.9 at peak LR 0.2 with a 6-step warm-up), hence a fifth of the run.
  ``local``: 3 steps.
  """
  steps = 3 if local else steps_for(epochs, batch, examples)
  return {'train.batch_size': batch, 'train.total_steps': steps,
          'optimizer.warmup_steps': max(1, steps // 5),
          'train.log_every': max(1, steps // 10)}


def study_base(arm: str = 'nf', batch: int = 256, epochs: float = 1.0,
               local: bool = False) -> ml_collections.ConfigDict:
  """The shared study config for one arm (the sweep overrides the arm).

  Args:
    arm: a key of :data:`ARMS`, the default family of the config.
    batch: global batch size; the peak LR scales linearly (0.1 per 256).
    epochs: passes over the training set (sets total_steps).
    local: a tiny model and a few steps (tests, smoke runs).

  Returns:
    The config.
  """
  c = base_lib.base_config()
  c.seed = 0
  # 32 px is the smallest size the /4 stem and three stride-2 stages take;
  # it runs ~2x faster than the quickstart's 48 px (measured 88.1% vs 89.9%
  # there), which buys the seeds.
  base_lib.use_fashion_mnist(c.data, 32)
  c.data.pad_crop_padding = 4
  c.data.shuffle_buffer = 60_000

  c.model = ml_collections.ConfigDict()
  c.model.name = 'NFResNet'
  c.model.variant = 'ResNet26'
  c.model.depths = (1, 1, 1, 1)
  c.model.widths = WIDTHS
  c.model.width = 1.0          # ResNet: multiplier of `widths`; NFResNet: unused
  c.model.stem_width = 16
  c.model.activation = 'relu'
  c.model.stochdepth_rate = 0.0
  c.model.drop_rate = 0.0
  c.model.conv_impl = 'auto'
  # NF-only / ResNet-only fields; None means "not passed to the model".
  c.model.alpha = ml_collections.FieldReference(0.2, field_type=object)
  c.model.norm = ml_collections.FieldReference(None, field_type=object)
  c.model.bn_cross_replica = ml_collections.FieldReference(None, field_type=object)
  for key, value in ARMS[arm].items():
    _set(c, key, value)

  c.train.eval_batch_size = 1000
  c.optimizer.base_lr = 0.1            # the papers' ResNet rule: 0.1 per 256
  c.optimizer.lr_batch_base = 256
  c.optimizer.schedule = 'cosine'
  c.optimizer.weight_decay = 5e-5
  c.optimizer.clipping = ml_collections.FieldReference(None, field_type=object)
  c.optimizer.label_smoothing = 0.1
  # Raw parameters are judged: an EMA over a few hundred steps lags and would
  # also hide a blow-up.
  c.optimizer.ema_decay = None
  c.train.eval_with_ema = False
  for key, value in batch_point(batch, epochs).items():
    _set(c, key, value)
  c.train.eval_every = 0
  c.train.checkpoint_every = 0
  c.train.keep_checkpoints = 1
  c.train.nonfinite = 'skip'
  c.train.max_consecutive_nonfinite = 10

  if local:
    c.data.shuffle_buffer = 1000     # filling 60,000 images costs seconds per run
    c.model.widths = (16, 32, 64, 128)
    c.model.stem_width = 8
    c.train.batch_size = min(batch, 32)
    c.train.total_steps = 3
    c.optimizer.warmup_steps = 1
    c.train.log_every = 1
    c.data.eval_split = LOCAL_EVAL_SPLIT
  return c


def _set(c, dotted, value):
  node = c
  parts = dotted.split('.')
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = value
