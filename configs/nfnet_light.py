"""timm's light NFNets (nfnet_l0, eca_nfnet_l0 .. eca_nfnet_l3) on ImageNet.

    python scripts/train.py --config configs/nfnet_light.py:eca_nfnet_l0 --workdir W
    python scripts/train.py --config configs/nfnet_light.py:nfnet_l0,local --workdir W

``get_config(arg)``: a variant (default ``eca_nfnet_l0``) and the modifiers
``local`` (a tiny light NFNet, same code path: SiLU, ECA or SE, group width
8, conv2-gain SkipInit, 10 steps on Fashion-MNIST at 32 px) and ``bf16``.

Architecture: timm's (docs/models.md), as variants of the ``NFNet`` model.
Train / test resolution: timm's default configs (L0 224/288, L1 256/320, L2
320/384, L3 352/448), evaluated as timm does with ``test_crop_pct=1.0``
(no crop margin: ``eval_crop_padding=0``).

Recipe: timm's source records the architectures, not how its pretrained
weights were trained, so these configs use the NFNet paper's ImageNet
recipe (``nfnet_jax.config``: batch 4096, 360 epochs, SGD-Nesterov, LR 0.1 *
batch / 256 with 5 warm-up epochs and cosine, wd 2e-5, AGC 0.01 not on the
classifier, label smoothing 0.1, EMA 0.99999, MixUp/CutMix, stochastic depth
0.25), with the dropout and RandAugment level of the F variant of the same
depths (L0 <- F0: 0.2, 4/5; L1 <- F1: 0.3, 4/10; L2 <- F2: 0.4, 4/10; L3 <-
F3: 0.4, 4/15). These are our choices, stated as such.
"""
import ml_collections

from nfnet_jax import config as base_lib
from nfnet_jax.models.nfnet import LIGHT_VARIANTS, NFNET_VARIANTS

MODIFIERS = ('local', 'tiny', 'bf16')


def _f_counterpart(variant: str) -> str:
  """The F variant with the same depths (the recipe's dropout and RandAugment)."""
  depth = NFNET_VARIANTS[variant]['depth']
  return next(k for k, v in NFNET_VARIANTS.items()
              if k.startswith('F') and not k.endswith('+') and v['depth'] == depth)


def _parse(arg: str):
  return base_lib.parse_config_arg(
      arg, 'configs/nfnet_light.py', 'eca_nfnet_l0', MODIFIERS,
      lambda p: p if p in LIGHT_VARIANTS else None,
      f'a variant ({", ".join(LIGHT_VARIANTS)})', 'eca_nfnet_l0,local')


def get_config(arg: str = 'eca_nfnet_l0') -> ml_collections.ConfigDict:
  """Light-NFNet config; see the module docstring for ``arg``."""
  variant, mods = _parse(arg)
  table = NFNET_VARIANTS[variant]
  recipe = NFNET_VARIANTS[_f_counterpart(variant)]
  c = base_lib.base_config()
  c.model = ml_collections.ConfigDict()
  base_lib.add_nf_options(c.model)  # numerics/timm options, None = official
  c.model.name = 'NFNet'
  c.model.variant = variant
  c.model.drop_rate = recipe['drop_rate']
  c.model.stochdepth_rate = 0.25
  c.model.alpha = 0.2
  c.model.conv_impl = 'auto'
  # None: the variant's value (timm's architecture, NFNET_VARIANTS).
  for field in ('activation', 'se_ratio', 'attention', 'skipinit_mode', 'group_width',
                'bottleneck_ratio', 'final_conv_mult', 'depths', 'widths', 'stem_widths'):
    c.model[field] = None

  c.data.name = 'imagenet2012'
  c.data.image_size = table['train_imsize']
  c.data.eval_image_size = table['test_imsize']
  c.data.eval_crop_padding = 0           # timm's test_crop_pct = 1.0
  c.data.randaugment_layers, c.data.randaugment_magnitude = recipe['randaugment']

  # The official NFNet experiment's formulas: 112602 steps, 1563.92 warm-up.
  base_lib.apply_official_schedule(c, 4096, 360)

  if 'bf16' in mods:
    c.compute_dtype = 'bfloat16'
  if 'local' in mods or 'tiny' in mods:
    c.model.depths = (1, 1, 1, 1)
    c.model.widths = (32, 32, 64, 64)
    c.model.stem_widths = (4, 8, 8, 8)
    c.model.group_width = 8
    base_lib.apply_local_imagenet_mode(c)
    c.data.eval_crop_padding = 0
    c.optimizer.base_lr = 0.1
  return c
