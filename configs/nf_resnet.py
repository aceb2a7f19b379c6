"""NF-ResNet-26/50/101/152/200 on ImageNet.

    python scripts/train.py --config configs/nf_resnet.py:50 --workdir W
    python scripts/train.py --config configs/nf_resnet.py:101,se --workdir W
    python scripts/train.py --config configs/nf_resnet.py:50,local --workdir W

``arg``: a depth (26, 50, 101, 152, 200; default 50) and modifiers:
  se        squeeze-excite (hidden ratio 0.25);
  baseline  the BN-ResNet baseline recipe instead (batch 1024, 90 epochs,
            LR 0.1 * batch / 256, wd 1e-4, label smoothing 0.1, no AGC, no
            MixUp/CutMix/RandAugment, no EMA) -- the same recipe as
            configs/resnet.py, for a like-for-like NF vs BN comparison;
  local     a tiny NF-ResNet for 10 steps on Fashion-MNIST (32 px) on CPU.

Recipe (which paper): the defaults follow the NFNet paper's setting in which
NF-ResNets are compared with BN-ResNets (the seed table in
docs/REFERENCE: NF-ResNet-50 79.5/80.9/81.1 at 224/320/384 px), i.e. the
NFNet ImageNet recipe of ``nfnet_jax.config`` (batch 4096, 360 epochs,
SGD-Nesterov, LR 0.1 * batch / 256 with 5 warm-up epochs + cosine, wd 2e-5,
AGC 0.01 not on the classifier, label smoothing 0.1, EMA 0.99999,
MixUp/CutMix) at 224 px train resolution. Our reference does not record that
comparison's per-model RandAugment magnitude, dropout and stochastic depth:
the values below (RandAugment 4 layers / magnitude 10, dropout 0.25,
stochastic depth 0.1, ReLU, alpha 0.2) are our choices, documented here as
such; they are single config fields to change.

Where each number comes from (DeepMind's deepmind-research ``nfnets/``; there
is no NF-ResNet experiment file there, so the two recipes are the files the
NF-ResNets were compared under; ``scripts/show_recipe.py`` prints them):

  default    ``experiment_nfnets.py``: batch 4096, ``training_steps =
             (1281167 * 360) // 4096 = 112602``, warm-up ``5 * 1281167 /
             4096 = 1563.92`` steps (a float), LR 0.1 * batch / 256, wd 2e-5,
             AGC 0.01 / eps 1e-3 (not the classifier), EMA 0.99999,
             smoothing 0.1, MixUp + CutMix, RandAugment with the TPU level
             mapping (``randaugment_mode='official'``). Computes in float32
             (that file's ``bfloat16=True`` is set for the NFNets only here).
  baseline   ``experiment.py`` (the BN-ResNet baseline): batch 1024,
             ``training_steps = (1281167 * 90) // 1024 = 112602``, warm-up
             ``5 * 1281167 / 1024 = 6255.70`` steps, LR 0.1 * 1024 / 256 =
             0.4, wd 1e-4, smoothing 0.1, ``use_ema=False``, no
             ``augment_name``, ``bfloat16=False``, 224 px.
"""
import ml_collections

from nfnet_jax import config as base_lib

DEPTHS = (26, 50, 101, 152, 200)
MODIFIERS = ('se', 'baseline', 'local', 'tiny')


def _parse(arg: str):
  return base_lib.parse_config_arg(
      arg, 'configs/nf_resnet.py', 50, MODIFIERS,
      lambda p: int(p) if p.isdigit() and int(p) in DEPTHS else None,
      f'a depth {DEPTHS}', '50,se')


def official_experiment(arg: str = '50') -> str:
  """The official experiment file `arg`'s recipe follows (show_recipe.py)."""
  _, mods = _parse(arg)
  return 'experiment.py' if 'baseline' in mods else 'experiment_nfnets.py'


def apply_bn_baseline_recipe(c: ml_collections.ConfigDict) -> None:
  """The BN-ResNet ImageNet recipe, used for both families.

  Every number is the one of DeepMind's ``nfnets/experiment.py`` (the
  ``model='ResNet'`` baseline).
  """
  base_lib.apply_official_schedule(c, 1024, 90)  # 112602 steps, 6255.70 warm-up
  c.optimizer.base_lr = 0.1              # peak 0.1 * 1024 / 256 = 0.4
  c.optimizer.lr_batch_base = 256
  c.optimizer.weight_decay = 1e-4
  c.optimizer.label_smoothing = 0.1
  c.optimizer.clipping = None            # no AGC
  c.optimizer.ema_decay = None
  c.train.eval_with_ema = False
  c.data.randaugment_layers = 0
  c.data.mixup_alpha = 0.0
  c.data.cutmix = False
  c.data.image_size = 224
  c.data.eval_image_size = 224


def get_config(arg: str = '50') -> ml_collections.ConfigDict:
  """NF-ResNet config; see the module docstring for ``arg``."""
  depth, mods = _parse(arg)
  c = base_lib.base_config()
  c.model = ml_collections.ConfigDict()
  base_lib.add_nf_options(c.model)  # numerics/timm options, None = official
  c.model.name = 'NFResNet'
  c.model.variant = f'ResNet{depth}'
  c.model.width = 4.0                    # stage widths 256, 512, 1024, 2048
  c.model.alpha = 0.2
  c.model.activation = 'relu'
  c.model.se_ratio = 0.25 if 'se' in mods else 0.0
  c.model.stochdepth_rate = 0.1
  c.model.drop_rate = 0.25
  c.model.conv_impl = 'auto'
  c.model.depths = None
  c.model.widths = None
  c.model.stem_width = None

  c.data.name = 'imagenet2012'
  c.data.image_size = 224
  c.data.eval_image_size = 224
  c.data.randaugment_layers = 4
  c.data.randaugment_magnitude = 10

  c.data.randaugment_mode = 'official'

  # experiment_nfnets.py: batch 4096, 360 epochs, 5 warm-up epochs.
  base_lib.apply_official_schedule(c, 4096, 360)  # 112602 steps, 1563.92 warm-up

  if 'baseline' in mods:
    apply_bn_baseline_recipe(c)

  if 'local' in mods or 'tiny' in mods:
    c.model.depths = (1, 1, 1, 1)
    c.model.width = 0.25                 # 16, 32, 64, 128
    c.model.stem_width = 8
    base_lib.apply_local_mode(c)
  return c
