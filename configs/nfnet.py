"""NFNet-F0..F7 (and F0+..F7+) on ImageNet with the paper's recipe.

    python scripts/train.py --config configs/nfnet.py:F0 --workdir W
    python scripts/train.py --config configs/nfnet.py:F3+ --workdir W
    python scripts/train.py --config configs/nfnet.py:F0,local --workdir W

``get_config(arg)``: ``arg`` is a comma-separated list: one variant name
(default F0) and optional modifiers:

  local / tiny   a tiny NFNet (same code path: grouped convs, SE, two 3x3
                 convs, stochastic depth) for 10 steps on Fashion-MNIST at 32
                 px, converted to 3 channels, so it runs on any CPU in about a
                 minute without ImageNet;
  bf16           bfloat16 compute (float32 master weights), as in the paper
                 on TPU.

Defaults are the NFNet paper's ImageNet recipe (arXiv 2102.06171; see
``nfnet_jax.config`` and docs/REFERENCE): global batch 4096, 360 epochs,
SGD-Nesterov 0.9, LR 0.1 * batch / 256 with 5 warm-up epochs then cosine,
coupled weight decay 2e-5 (not on gains/biases), AGC lambda 0.01 (not on the
classifier), label smoothing 0.1, EMA 0.99999, stochastic depth 0.25,
RandAugment (4 layers), MixUp 0.2 + CutMix; per-variant train/test
resolution, dropout and RandAugment magnitude from the paper's table below.
"""
import ml_collections

from nfnet_jax import config as base_lib
from nfnet_jax.models.nfnet import F_VARIANTS, NFNET_VARIANTS

IMAGENET_TRAIN = base_lib.IMAGENET_TRAIN_EXAMPLES

# variant: (train res, test res, dropout, RandAugment magnitude), read from
# the model's table (the one place the paper's F-series table lives).
VARIANTS = {k: (v['train_imsize'], v['test_imsize'], v['drop_rate'], v['randaugment'][1])
            for k, v in NFNET_VARIANTS.items() if k in F_VARIANTS and not k.endswith('+')}
MODIFIERS = ('local', 'tiny', 'bf16')


def _parse(arg: str):
  parts = [p.strip() for p in (arg or '').split(',') if p.strip()]
  variant, mods = 'F0', set()
  for p in parts:
    if p in MODIFIERS:
      mods.add(p)
    elif p.rstrip('+') in VARIANTS:
      variant = p
    else:
      raise ValueError(
          f'configs/nfnet.py: unknown argument {p!r}; allowed: a variant '
          f'({", ".join(VARIANTS)}, optionally with "+") and modifiers '
          f'{MODIFIERS}, comma-separated, e.g. "F0,local".')
  return variant, mods


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

  batch = 4096
  c.train.batch_size = batch
  c.train.total_steps = 360 * (IMAGENET_TRAIN // batch)
  c.optimizer.warmup_steps = 5 * (IMAGENET_TRAIN // batch)
  c.train.eval_every = 5000
  c.train.checkpoint_every = 2000

  if 'bf16' in mods:
    c.compute_dtype = 'bfloat16'

  if 'local' in mods or 'tiny' in mods:
    tiny_nfnet(c.model)
    base_lib.apply_local_mode(c)
    c.data.grayscale_to_rgb = True     # exercise the 3-channel ImageNet path
    c.data.train_split = 'train'
    c.data.eval_split = 'test'
    c.optimizer.base_lr = 0.1
  return c
