"""NFNet-F0..F7 (and F0+..F7+) on ImageNet with the paper's recipe.

    python scripts/train.py --config configs/nfnet.py:F0 --workdir W
    python scripts/train.py --config configs/nfnet.py:F3+ --workdir W
    python scripts/train.py --config configs/nfnet.py:F0,local --workdir W

``get_config(arg)``: ``arg`` is a comma-separated list: one variant name
(default F0) and optional modifiers:

  local / tiny   a tiny NFNet (same code path: grouped convs, SE, two 3x3
                 convs, stochastic depth) for 10 steps on Fashion-MNIST at 32
                 px, converted to 3 channels, so it runs on any CPU in about a
                 minute without ImageNet; it computes in float32 (bfloat16
                 brings no speed on XLA:CPU);
  f32            float32 compute instead of the official bfloat16;
  bf16           bfloat16 compute (the default; kept so old commands work).

Every number is the official NFNet experiment's,
``nfnets/experiment_nfnets.py`` of DeepMind's deepmind-research repository
(``python scripts/show_recipe.py configs/nfnet.py:F0`` prints them next to
ours):

  batch 4096, 360 epochs      ``train_batch_size``, ``num_epochs``
  total_steps 112602          ``training_steps = (1281167 * 360) // 4096``
  warmup_steps 1563.92        ``warmup_steps = 5 * steps_per_epoch`` with
                              ``steps_per_epoch = 1281167 / 4096`` (a float)
  peak LR 1.6                 ``lr=0.1`` with ``lr_scale_by_bs``: 0.1*4096/256
  cosine to 0                 ``WarmupCosineDecay(start_val=0, min_val=0)``
  bfloat16 compute            ``bfloat16=True`` (training only: the eval
                              step runs in float32, as
                              ``train.eval_compute_dtype`` does here)
  SGD-Nesterov 0.9, wd 2e-5,  ``SGD_AGC`` kwargs; gains/biases get no weight
  AGC 0.01, eps 1e-3          decay, the classifier no clipping (``_make_opt``)
  EMA 0.99999, smoothing 0.1  ``ema_decay``, ``label_smoothing``
  stochastic depth 0.25, SE   ``model_kwargs``
  0.5, alpha 0.2, GELU
  RandAugment 4 layers at     ``augment = {'F0': '405', 'F1': '410', ...}``
  magnitude 5/10/10/15+,      with ``aug_base_name =
  MixUp 0.2 + CutMix          'cutmix_mixup_randaugment'``; RandAugment with
                              the TPU level mapping (``randaugment_mode=
                              'official'``, ``nfnets/autoaugment.py``)
  RandAugment after mixing    ``augment_before_mix=False``: each mixed
                              example is RandAugmented
  train/test resolution,      the variant table of ``nfnets/nfnet.py``
  dropout
"""
import ml_collections

from nfnet_jax import config as base_lib
from nfnet_jax.models.nfnet import F_VARIANTS, NFNET_VARIANTS

# variant: (train res, test res, dropout, RandAugment magnitude), read from
# the model's table (the one place the paper's F-series table lives).
VARIANTS = {k: (v['train_imsize'], v['test_imsize'], v['drop_rate'], v['randaugment'][1])
            for k, v in NFNET_VARIANTS.items() if k in F_VARIANTS and not k.endswith('+')}
MODIFIERS = ('local', 'tiny', 'bf16', 'f32')


def _parse(arg: str):
  return base_lib.parse_config_arg(
      arg, 'configs/nfnet.py', 'F0', MODIFIERS,
      lambda p: p if p.rstrip('+') in VARIANTS else None,
      f'a variant ({", ".join(VARIANTS)}, optionally with "+")', 'F0,local')


def tiny_nfnet(model: ml_collections.ConfigDict) -> None:
  """Shrinks an NFNet config to a few thousand parameters (tests, smoke)."""
  model.depths = (1, 1, 1, 1)
  model.widths = (16, 32, 32, 32)
  model.stem_widths = (4, 8, 8, 8)
  model.group_width = 8
  model.final_conv_mult = 2


def get_config(arg: str = 'F0') -> ml_collections.ConfigDict:
  """NFNet config; see the module docstring for ``arg``."""
  variant, mods = _parse(arg)
  train_res, test_res, dropout, ra_mag = VARIANTS[variant.rstrip('+')]
  c = base_lib.base_config()

  c.model.name = 'NFNet'
  c.model.variant = variant
  c.model.drop_rate = dropout
  c.model.stochdepth_rate = 0.25
  c.model.activation = 'gelu'
  c.model.alpha = 0.2
  c.model.se_ratio = 0.5
  # Constructor fields not in the base schema (None: the variant's value).
  c.model.width = None
  c.model.depths = None
  c.model.widths = None
  c.model.stem_widths = None
  c.model.group_width = None
  c.model.final_conv_mult = None

  c.data.name = 'imagenet2012'
  c.data.image_size = train_res
  c.data.eval_image_size = test_res
  c.data.randaugment_layers = 4
  c.data.randaugment_magnitude = ra_mag

  c.data.randaugment_mode = 'official'
  # experiment_nfnets.py: augment_before_mix=False (RandAugment each example
  # after MixUp/CutMix).
  c.data.augment_before_mix = False

  # experiment_nfnets.py: batch 4096, 360 epochs, 5 warm-up epochs.
  base_lib.apply_official_schedule(c, 4096, 360)

  if 'bf16' in mods and 'f32' in mods:
    raise ValueError('configs/nfnet.py: modifiers "bf16" and "f32" '
                     'contradict each other; give at most one.')
  # experiment_nfnets.py: bfloat16=True (float32 master weights).
  c.compute_dtype = 'float32' if 'f32' in mods else 'bfloat16'

  if 'local' in mods or 'tiny' in mods:
    tiny_nfnet(c.model)
    base_lib.apply_local_imagenet_mode(c)
    if 'bf16' not in mods:
      c.compute_dtype = 'float32'      # bf16 is no faster on XLA:CPU
    c.optimizer.base_lr = 0.1
  return c
