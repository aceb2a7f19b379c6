"""NF-RegNet-B0..B8 on ImageNet with the official NF-RegNet recipe.

    python scripts/train.py --config configs/nf_regnet.py:B0 --workdir W
    python scripts/train.py --config configs/nf_regnet.py:B3 --workdir W
    python scripts/train.py --config configs/nf_regnet.py:B0,local --workdir W

``get_config(arg)``: a variant (B0..B8, default B0) and the modifier
``local`` (a tiny NF-RegNet, same code path: grouped convs, SE in the
expanded width, stochastic depth, 10 steps on Fashion-MNIST at 32 px,
converted to 3 channels; about a minute on a CPU).

Recipe (DeepMind's ``experiment_nf_regnets.py``, with its base
``experiment.py``): global batch 1024, 360 epochs, i.e. ``(1281167 * 360) //
1024`` steps; SGD with Nesterov momentum 0.9 and *no* AGC; LR 0.4 *not*
scaled by the batch size (``lr_scale_by_bs=False``: here ``lr_batch_base``
equals the batch, so the peak stays 0.4 only at batch 1024), 5 warm-up
epochs from 0, then cosine to a floor of 0.001; weight decay ``5e-5 + 1e-5 *
level`` (B0 5e-5 .. B5 1e-4) added to the gradient, not on gains and biases;
float32; EMA of the weights with decay 0.99999 (evaluated); label smoothing
0.1; MixUp/CutMix (``augment_name='mixup_cutmix'``), no RandAugment; the
variant's train/test resolution and dropout (``NF_REGNET_VARIANTS``); model
defaults width 0.75, expansion 2.25, group size 8, SE 0.5, alpha 0.2,
stochastic depth 0.1, SiLU.

Deviations, stated: the official file defines no weight decay for B6-B8; we
extend its formula (1.1e-4, 1.2e-4, 1.3e-4). The warm-up is the official
fractional ``5 * 1281167 / 1024 = 6255.70`` steps (``python
scripts/show_recipe.py configs/nf_regnet.py:B0`` prints every number next to
the official one).
"""
import ml_collections

from nfnet_jax import config as base_lib
from nfnet_jax.models.nf_regnet import NF_REGNET_VARIANTS

BATCH = 1024
EPOCHS = 360
PEAK_LR = 0.4
MIN_LR = 0.001
MODIFIERS = ('local', 'tiny')


def weight_decay(variant: str) -> float:
  """The official per-variant weight decay, 5e-5 + 1e-5 * level (B6-B8 extended)."""
  return round(5e-5 + 1e-5 * int(variant[1:]), 10)


def _parse(arg: str):
  return base_lib.parse_config_arg(
      arg, 'configs/nf_regnet.py', 'B0', MODIFIERS,
      lambda p: p if p in NF_REGNET_VARIANTS else None,
      f'a variant ({", ".join(NF_REGNET_VARIANTS)})', 'B0,local')


def get_config(arg: str = 'B0') -> ml_collections.ConfigDict:
  """NF-RegNet config; see the module docstring for ``arg``."""
  variant, mods = _parse(arg)
  table = NF_REGNET_VARIANTS[variant]
  c = base_lib.base_config()
  c.model = ml_collections.ConfigDict()
  base_lib.add_nf_options(c.model)  # numerics/timm options, None = official
  c.model.name = 'NFRegNet'
  c.model.variant = variant
  c.model.width = 0.75
  c.model.expansion = 2.25
  c.model.group_size = 8
  c.model.se_ratio = 0.5
  c.model.alpha = 0.2
  c.model.stochdepth_rate = 0.1
  c.model.drop_rate = None               # the variant's (B0 0.2 .. B8 0.5)
  c.model.activation = 'silu'
  c.model.conv_impl = 'auto'
  c.model.depths = None
  c.model.widths = None

  c.data.name = 'imagenet2012'
  c.data.image_size = table['train_imsize']
  c.data.eval_image_size = table['test_imsize']
  c.data.randaugment_layers = 0          # mixup_cutmix only
  c.data.mixup_alpha = 0.2
  c.data.cutmix = True

  base_lib.apply_official_schedule(c, BATCH, EPOCHS)  # 450410 steps, 6255.70 warm-up
  c.optimizer.base_lr = PEAK_LR
  c.optimizer.lr_batch_base = BATCH      # not scaled by the batch size
  c.optimizer.min_lr = MIN_LR
  c.optimizer.clipping = None            # plain SGD, no AGC
  c.optimizer.weight_decay = weight_decay(variant)
  c.optimizer.ema_decay = 0.99999
  c.optimizer.label_smoothing = 0.1
  c.train.eval_with_ema = True

  if mods:
    c.model.depths = (1, 1, 1, 1)
    c.model.widths = (16, 24, 32, 48)
    base_lib.apply_local_imagenet_mode(c)
    c.optimizer.base_lr = 0.1
    c.optimizer.lr_batch_base = c.train.batch_size
    c.optimizer.min_lr = 0.0
  return c
