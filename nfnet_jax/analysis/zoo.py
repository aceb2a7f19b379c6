"""The model zoo table: parameters and FLOPs of every registered model and variant.

Two FLOP conventions, labelled everywhere they appear:

* **XLA FLOPs** (measured): `cost_analysis()['flops']` of one jitted eval
  forward at the variant's test resolution, batch 1, with native grouped
  convs (`conv_impl='xla'`, what GPUs/TPUs run). XLA counts a multiply and an
  add as two FLOPs and includes everything (weight standardisation,
  activations, pooling), so it is ~2x the papers' figures.
* **Official MACs** (counted): DeepMind's `count_flops` rule, which the
  papers report as "FLOPs": multiply-adds of every conv
  (`out_ch * H * W / stride^2 * in_ch / groups * kh * kw`, spatial sizes
  halved as floats), the squeeze-excite linears and the classifier; nothing
  else. Computed here from the built modules for the models whose official
  code has that method (NFNet, NF-RegNet); for F0 at 256 px it gives the
  NFNet paper's 12.38 G.
"""
import functools
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from nfnet_jax import models
from nfnet_jax.models import nf_regnet, nf_resnet, nfnet, resnet

# NFNet paper (arXiv 2102.06171, Table 2 / REFERENCE.md): params (M), FLOPs
# (G, multiply-adds at the test resolution), ImageNet top-1 (%).
NFNET_PAPER = {
    'F0': (71.5, 12.38, 83.6), 'F1': (132.6, 35.54, 84.7), 'F2': (193.8, 62.59, 85.1),
    'F3': (254.9, 114.76, 85.7), 'F4': (316.1, 215.24, 85.9), 'F5': (377.2, 289.76, 86.0),
    'F6': (438.4, 377.28, 86.5),
}
# Measured parameter counts of the reference implementations (1000 classes):
# DeepMind's nf_regnet.py, timm 1.0.31 for the light family (REFERENCE.md).
REFERENCE_PARAMS = {
    ('NFRegNet', 'B0'): 8_595_372, ('NFRegNet', 'B1'): 10_019_208,
    ('NFRegNet', 'B2'): 13_785_904, ('NFRegNet', 'B3'): 18_136_667,
    ('NFRegNet', 'B4'): 29_315_830, ('NFRegNet', 'B5'): 48_707_138,
    ('NFRegNet', 'B6'): 70_045_805, ('NFRegNet', 'B7'): 101_743_204,
    ('NFRegNet', 'B8'): 142_314_441,
    ('NFNet', 'nfnet_l0'): 35_074_488, ('NFNet', 'eca_nfnet_l0'): 24_143_924,
    ('NFNet', 'eca_nfnet_l1'): 41_407_728, ('NFNet', 'eca_nfnet_l2'): 56_722_348,
    ('NFNet', 'eca_nfnet_l3'): 72_036_968,
}
# Evaluation resolution of the models without a per-variant table.
DEFAULT_RESOLUTION = 224


def zoo_entries() -> List[Dict[str, Any]]:
  """Every registered model and variant: {'name', 'variant', 'config', 'resolution'}."""
  out = []
  for v, t in nfnet.NFNET_VARIANTS.items():
    out.append(dict(name='NFNet', variant=v, config={'name': 'NFNet', 'variant': v},
                    resolution=t['test_imsize']))
  for v, t in nf_regnet.NF_REGNET_VARIANTS.items():
    out.append(dict(name='NFRegNet', variant=v, config={'name': 'NFRegNet', 'variant': v},
                    resolution=t['test_imsize']))
  for v in nf_resnet.NF_RESNET_VARIANTS:
    out.append(dict(name='NFResNet', variant=v, config={'name': 'NFResNet', 'variant': v},
                    resolution=DEFAULT_RESOLUTION))
  for v in resnet.VARIANTS:
    out.append(dict(name='ResNet', variant=v, config={'name': 'ResNet', 'variant': v},
                    resolution=DEFAULT_RESOLUTION))
  out.append(dict(name='ResNet', variant='ResNet50 (Fixup)',
                  config={'name': 'ResNet', 'variant': 'ResNet50', 'norm': 'none',
                          'fixup': True}, resolution=DEFAULT_RESOLUTION))
  return out


def _abstract(model_config: Mapping[str, Any], resolution: int, num_classes: int):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  config = dict(model_config)
  if config['name'] != 'ResNet':
    config.setdefault('conv_impl', 'xla')  # native grouped convs: one op per conv
  f = models.create_model(config, num_classes)
  x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  params, state = jax.eval_shape(functools.partial(f.init, is_training=False),
                                 jax.random.PRNGKey(0), x)
  return f, params, state, x


def count_params(model_config: Mapping[str, Any], num_classes: int = 1000) -> int:
  """Number of parameters (eval_shape: nothing is computed)."""
  import jax  # pylint: disable=g-import-not-at-top
  _, params, _, _ = _abstract(model_config, 64, num_classes)
  return int(sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def xla_flops(model_config: Mapping[str, Any], resolution: int, num_classes: int = 1000,
              compiled: bool = True) -> float:
  """XLA's cost-analysis FLOPs of one eval forward at `resolution`, batch 1.

  Args:
    model_config: registry `name` plus constructor keywords.
    resolution: input side length.
    num_classes: classifier width.
    compiled: analyse the optimised (compiled) module, as XLA runs it; False
      analyses the lowered module before optimisation (no compile: seconds
      instead of minutes for the large variants, ~0.2% higher for F0).
  """
  import jax  # pylint: disable=g-import-not-at-top
  f, params, state, x = _abstract(model_config, resolution, num_classes)
  lowered = jax.jit(functools.partial(f.apply, is_training=False)).lower(
      params, state, None, x)
  analysis = lowered.compile().cost_analysis() if compiled else lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device
    analysis = analysis[0]
  return float(analysis['flops'])


def _conv_macs(in_ch: float, conv, h: float, w: float) -> float:
  """The official count_conv_flops: out_ch * HW / stride^2 * in_ch / groups * kh * kw."""
  return (conv.output_channels * h * w / np.prod(conv.stride)
          * in_ch / conv.feature_group_count * np.prod(conv.kernel_shape))


def _built_module(model_config: Mapping[str, Any], num_classes: int):
  """The model's Haiku module object, constructed (not called) inside a transform."""
  import haiku as hk  # pylint: disable=g-import-not-at-top
  config = dict(model_config)
  cls = models.get_model_class(config.pop('name'))
  box = {}

  def build():
    box['model'] = cls(num_classes=num_classes, **config)

  hk.transform(build).init(None)
  return box['model']


def official_macs(model_config: Mapping[str, Any], resolution: int,
                  num_classes: int = 1000) -> Optional[float]:
  """DeepMind's `count_flops` figure (multiply-adds), or None where it has none.

  Follows the official method of NFNet and NF_RegNet: stem convs, every
  block's convs (the shortcut at the block's output resolution), its SE
  linears, the final conv and the classifier. Our light (ECA) variants are
  counted by the same rule with ECA's k * C multiply-adds in place of SE.
  """
  name = model_config['name']
  if name not in ('NFNet', 'NFRegNet'):
    return None
  model = _built_module(model_config, num_classes)
  h = w = float(resolution)
  flops = []
  if name == 'NFNet':
    ch = 3
    for conv in model.stem:
      flops.append(_conv_macs(ch, conv, h, w))
      h, w = h / conv.stride[0], w / conv.stride[1]
      ch = conv.output_channels
  else:
    flops.append(_conv_macs(3, model.initial_conv, h, w))
    h, w = h / 2, w / 2
  for block in model.blocks:
    flops.append(_conv_macs(block.in_ch, block.conv0, h, w))
    flops.append(_conv_macs(block.width, block.conv1, h, w))
    if block.stride > 1:
      h, w = h / block.stride, w / block.stride
    if getattr(block, 'use_two_convs', False):
      flops.append(_conv_macs(block.width, block.conv1b, h, w))
    if block.conv_shortcut is not None:
      flops.append(_conv_macs(block.in_ch, block.conv_shortcut, h, w))
    gate = getattr(block, 'attention', None) if name == 'NFNet' else block.se
    if gate is not None and hasattr(gate, 'hidden_ch'):
      flops.append(gate.hidden_ch * gate.in_ch + gate.hidden_ch * gate.out_ch)
    elif gate is not None:  # ECA: one k-tap filter over the channels
      flops.append(gate.kernel_size * gate.channels)
    flops.append(_conv_macs(block.width, block.conv2, h, w))
  flops.append(_conv_macs(model.blocks[-1].out_ch, model.final_conv, h, w))
  flops.append(model.final_conv.output_channels * num_classes)
  return float(sum(flops))


def measure(entries: Sequence[Mapping[str, Any]], compiled: bool = True,
            log=None) -> List[Dict[str, Any]]:
  """Params, XLA FLOPs, official MACs and published figures of each entry."""
  rows = []
  for e in entries:
    cfg, res = e['config'], e['resolution']
    row = dict(name=e['name'], variant=e['variant'], resolution=res,
               params=count_params(cfg),
               xla_gflops=xla_flops(cfg, res, compiled=compiled) / 1e9)
    macs = official_macs(cfg, res)
    row['official_gmacs'] = None if macs is None else macs / 1e9
    paper = NFNET_PAPER.get(e['variant']) if e['name'] == 'NFNet' else None
    row['paper_gflops'] = paper[1] if paper else None
    row['paper_top1'] = paper[2] if paper else None
    row['reference_params'] = REFERENCE_PARAMS.get((e['name'], e['variant']))
    rows.append(row)
    if log:
      log(row)
  return rows


def _fmt(v, spec):
  return '–' if v is None else format(v, spec)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """The zoo table (docs/model_table.md)."""
  lines = [
      '| model | variant | test px | params | reference params | XLA GFLOPs (measured) '
      '| official GMACs (count_flops rule) | paper "GFLOPs" | paper top-1 |',
      '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f"| {r['name']} | {r['variant']} | {r['resolution']} | {r['params']:,} | "
        f"{_fmt(r['reference_params'], ',')} | {r['xla_gflops']:.2f} | "
        f"{_fmt(r['official_gmacs'], '.2f')} | {_fmt(r['paper_gflops'], '.2f')} | "
        f"{_fmt(r['paper_top1'], '.1f')} |")
  return '\n'.join(lines)


def plot_flops_vs_top1(rows: Sequence[Mapping[str, Any]], path: str) -> int:
  """Published top-1 against our counted multiply-adds; returns the number of points.

  Only rows with a published top-1 are drawn (the NFNet paper's F0-F6).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  pts = [r for r in rows if r.get('paper_top1') is not None and r.get('official_gmacs')]
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  x = [r['official_gmacs'] for r in pts]
  y = [r['paper_top1'] for r in pts]
  ax.plot(x, y, 'o-', label='NFNet-F0..F6: our count (official rule) vs paper top-1\n'
          '(F6 trained with SAM)')
  for r in pts:
    ax.annotate(r['variant'], (r['official_gmacs'], r['paper_top1']),
                textcoords='offset points', xytext=(4, -10), fontsize=8)
  ax.set_xscale('log')
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel('GMACs at test resolution (official count_flops rule, counted here)')
  ax.set_ylabel('ImageNet top-1 (%), published')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return len(pts)
