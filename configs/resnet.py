"""Normalized ResNet baselines (BatchNorm by default) on ImageNet.

    python scripts/train.py --config configs/resnet.py:50 --workdir W
    python scripts/train.py --config configs/resnet.py:50,gn --workdir W
    python scripts/train.py --config configs/resnet.py:50,local --workdir W

``arg``: a depth (26, 50, 101, 152, 200; default 50) and modifiers:
  bn (default) | gn | ws_gn | none   the normalization of the baseline;
  fixup                              the Fixup ResNet (no normalizer; Zhang et
                                     al. 2019), the NF-ResNet paper's other
                                     normalizer-free baseline;
  local                              a tiny model, 10 steps on Fashion-MNIST.

Recipe: the BN-ResNet baseline of the papers, every number from DeepMind's
``nfnets/experiment.py`` (its ``model='ResNet'`` config): global batch 1024,
90 epochs, ``training_steps = (1281167 * 90) // 1024 = 112602``, SGD-Nesterov
0.9, LR 0.1 * batch / 256 (= 0.4) with a ``5 * 1281167 / 1024 = 6255.70``-step
warm-up (a float) and cosine decay to 0, weight decay 1e-4, label smoothing
0.1, no AGC, ``use_ema=False``, no MixUp/CutMix/RandAugment
(``augment_name=None``), float32 (``bfloat16=False``), 224 px.
``python scripts/show_recipe.py configs/resnet.py:50`` prints them.
"""
import ml_collections

from nfnet_jax import config as base_lib

DEPTHS = (26, 50, 101, 152, 200)
NORMS = {'bn': 'batchnorm', 'gn': 'groupnorm', 'ws_gn': 'ws_groupnorm',
         'none': 'none', 'fixup': 'none'}


def _parse(arg: str):
  depth, norm, local = 50, 'bn', False
  for p in [p.strip() for p in (arg or '').split(',') if p.strip()]:
    if p in NORMS:
      norm = p
    elif p in ('local', 'tiny'):
      local = True
    elif p.isdigit() and int(p) in DEPTHS:
      depth = int(p)
    else:
      raise ValueError(f'configs/resnet.py: unknown argument {p!r}; allowed: '
                       f'a depth {DEPTHS}, a normalization {tuple(NORMS)} and '
                       '"local", comma-separated, e.g. "50,gn".')
  return depth, norm, local


def get_config(arg: str = '50') -> ml_collections.ConfigDict:
  """BN-ResNet baseline config; see the module docstring for ``arg``."""
  # Imported here so this file stays loadable without the NF-ResNet config.
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      'nfnet_configs_nf_resnet',
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nf_resnet.py'))
  nf_resnet = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(nf_resnet)

  depth, norm, local = _parse(arg)
  c = base_lib.base_config()
  c.model = ml_collections.ConfigDict()
  c.model.name = 'ResNet'
  c.model.variant = f'ResNet{depth}'
  c.model.norm = NORMS[norm]
  c.model.width = 1.0
  c.model.activation = 'relu'
  c.model.drop_rate = 0.0
  c.model.stochdepth_rate = 0.0
  c.model.fixup = norm == 'fixup'
  c.model.depths = None
  c.model.widths = None
  c.model.stem_width = None
  c.data.name = 'imagenet2012'
  nf_resnet.apply_bn_baseline_recipe(c)

  if local:
    c.model.depths = (1, 1, 1, 1)
    c.model.width = 0.25
    base_lib.apply_local_mode(c)
  return c
