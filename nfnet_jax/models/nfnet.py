"""NFNets (F0-F7 and F0+-F7+), with the official parameter names and shapes.

Architecture facts follow the NFNet paper (arXiv 2102.06171) and DeepMind's
reference implementation, so that official checkpoints load unchanged:
  stem: WS 3x3 convs 16/2 -> 32 -> 64 -> widths[0]//2 (/2), activation
    between them but not after the last (each block activates its input);
  block: `out = act(x) * beta`; shortcut = avg-pool(2x2, SAME) + 1x1 conv at
    strided transitions, 1x1 conv on channel change, else `x`; branch conv0
    1x1 -> act -> conv1 3x3 grouped (stride) -> act -> conv1b 3x3 grouped ->
    act -> conv2 1x1 -> `2 * se * out` -> stochastic depth -> `* skip_gain`;
    returns `alpha * branch + shortcut`;
  head: final_conv 1x1 (2x the last width) -> act -> mean pool -> dropout ->
    linear (N(0, 0.01) weights, zero bias).

The same class builds timm's "light" NFNets (`nfnet_l0`, `eca_nfnet_l0` ..
`eca_nfnet_l3`, variants of the same names) through per-variant defaults:
SiLU, group width 64, bottleneck ratio 0.25, squeeze-excite (ratio 0.25) or
ECA attention, final conv 1.5x or 2x the last width, and timm's SkipInit
form (the last conv's gain starts at 0; no `skip_gain` scalar). Every
architectural fact of that family is written down in docs/models.md.
"""
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import haiku as hk
import numpy as np

from nfnet_jax import nn as nfnn
from nfnet_jax.models import common
from nfnet_jax.models.common import NUMERICS_FIELDS
from nfnet_jax.models.common import bad_field
from nfnet_jax.models.common import nf_blocks_and_head
from nfnet_jax.utils import is_number
from nfnet_jax.utils import is_pos_int

_BASE_WIDTHS = (256, 512, 1536, 1536)
_PLUS_WIDTHS = (384, 768, 2048, 2048)
_F_SERIES = {
    # depth pattern, train res, test res, dropout, RandAugment level (layers, magnitude)
    'F0': ((1, 2, 6, 3), 192, 256, 0.2, (4, 5)),
    'F1': ((2, 4, 12, 6), 224, 320, 0.3, (4, 10)),
    'F2': ((3, 6, 18, 9), 256, 352, 0.4, (4, 10)),
    'F3': ((4, 8, 24, 12), 320, 416, 0.4, (4, 15)),
    'F4': ((5, 10, 30, 15), 384, 512, 0.5, (4, 15)),
    'F5': ((6, 12, 36, 18), 416, 544, 0.5, (4, 15)),
    'F6': ((7, 14, 42, 21), 448, 576, 0.5, (4, 15)),
    'F7': ((8, 16, 48, 24), 480, 608, 0.5, (4, 15)),
}
# Architecture defaults of the official F-series (constructor None -> these).
_F_ARCH = dict(activation='gelu', group_width=128, bottleneck_ratio=0.5,
               final_conv_mult=2.0, attention='se', se_ratio=0.5,
               skipinit_mode='skip_gain')
# timm's light family (timm/models/nfnet.py, v1.0.31): depths of F0-F3, the
# F widths, train/test resolution of timm's default configs. Dropout is 0
# (timm's model default; its training runs set their own) and no RandAugment
# level is part of the architecture.
_L_SERIES = {
    # depth pattern, train res, test res, attention, final conv multiplier
    'nfnet_l0': ((1, 2, 6, 3), 224, 288, 'se', 1.5),
    'eca_nfnet_l0': ((1, 2, 6, 3), 224, 288, 'eca', 1.5),
    'eca_nfnet_l1': ((2, 4, 12, 6), 256, 320, 'eca', 2.0),
    'eca_nfnet_l2': ((3, 6, 18, 9), 320, 384, 'eca', 2.0),
    'eca_nfnet_l3': ((4, 8, 24, 12), 352, 448, 'eca', 2.0),
}
_L_ARCH = dict(activation='silu', group_width=64, bottleneck_ratio=0.25, se_ratio=0.25,
               skipinit_mode='conv2_gain')
ATTENTIONS = ('se', 'eca', 'none')
SKIPINIT_MODES = ('skip_gain', 'conv2_gain')


def _variant_table():
  table = {}
  for key, (depth, train, test, drop, ra) in _F_SERIES.items():
    base = dict(_F_ARCH, depth=depth, train_imsize=train, test_imsize=test,
                drop_rate=drop, randaugment=ra)
    table[key] = dict(base, width=_BASE_WIDTHS)
    table[key + '+'] = dict(base, width=_PLUS_WIDTHS)
  for key, (depth, train, test, attention, mult) in _L_SERIES.items():
    table[key] = dict(_L_ARCH, depth=depth, width=_BASE_WIDTHS, train_imsize=train,
                      test_imsize=test, drop_rate=0.0, randaugment=None,
                      attention=attention, final_conv_mult=mult)
  return table


NFNET_VARIANTS = _variant_table()
F_VARIANTS = tuple(k for k in NFNET_VARIANTS if k.startswith('F'))
LIGHT_VARIANTS = tuple(_L_SERIES)
STRIDES = (1, 2, 2, 2)


class NFBlock(hk.Module):
  """Normalizer-free bottleneck block with two grouped 3x3 convs and SE."""

  def __init__(self, in_ch: int, out_ch: int, *, expansion: float = 0.5,
               se_ratio: float = 0.5, kernel_shape: int = 3, group_size: int = 128,
               stride: int = 1, beta: float = 1.0, alpha: float = 0.2,
               activation: Callable = None, use_two_convs: bool = True,
               stochdepth_rate: Optional[float] = None, skipinit_gain=0.0,
               attention: str = 'se', skipinit_mode: str = 'skip_gain',
               conv_impl: str = 'auto', ws_options: Optional[Mapping[str, Any]] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.in_ch, self.out_ch = in_ch, out_ch
    self.activation = activation or nfnn.get_activation('gelu')
    self.beta, self.alpha = beta, alpha
    self.stride = stride
    self.use_two_convs = use_two_convs
    self.skipinit_mode = skipinit_mode
    self.skipinit_gain = common.init_fn(skipinit_gain)
    width = int(out_ch * expansion)
    # Round the bottleneck width down to a whole number of groups.
    self.groups = width // group_size
    self.width = group_size * self.groups
    if self.groups < 1:
      raise ValueError(f'NFBlock: bottleneck width {width} (= {out_ch} * {expansion}) is '
                       f'smaller than the group width {group_size}')
    conv = common.ws_conv_maker(conv_impl, ws_options)
    self.conv0 = conv(self.width, kernel_shape=1, name='conv0')
    self.conv1 = conv(self.width, kernel_shape=kernel_shape, stride=stride,
                      feature_group_count=self.groups, name='conv1')
    if use_two_convs:
      self.conv1b = conv(self.width, kernel_shape=kernel_shape, stride=1,
                         feature_group_count=self.groups, name='conv1b')
    # timm's SkipInit form: the branch's last conv starts with zero gain (its
    # output is then its zero bias) instead of a separate skip_gain scalar.
    conv2_gain = 1.0
    if skipinit_mode == 'conv2_gain':
      if callable(skipinit_gain):
        raise ValueError("skipinit_mode='conv2_gain' needs a number as skipinit_gain")
      conv2_gain = float(skipinit_gain)
    self.conv2 = conv(out_ch, kernel_shape=1, gain_init=conv2_gain, name='conv2')
    self.use_projection = stride > 1 or in_ch != out_ch
    self.conv_shortcut = (conv(out_ch, kernel_shape=1, name='conv_shortcut')
                          if self.use_projection else None)
    if attention == 'se' and se_ratio > 0:
      self.attention = nfnn.SqueezeExcite(out_ch, out_ch, se_ratio)
    elif attention == 'eca':
      self.attention = nfnn.EfficientChannelAttention(out_ch)
    else:
      self.attention = None
    self.stoch_depth = nfnn.stoch_depth_or_none(stochdepth_rate)

  def __call__(self, x, is_training: bool):
    """Returns (block output, residual branch output before stochdepth/gain)."""
    out, shortcut = common.nf_block_entry(self, x)
    if self.use_two_convs:
      out = self.conv1b(self.activation(out))
    out = self.conv2(self.activation(out))
    if self.attention is not None:
      out = (self.attention(out) * 2) * out  # 2x: sigmoid(0) = 0.5 would halve the signal
    return common.nf_residual(out, shortcut, self.alpha, self.stoch_depth,
                              self.skipinit_gain if self.skipinit_mode == 'skip_gain' else None,
                              is_training)


def _stem(conv: Callable, stem_widths: Sequence[int], depths: Sequence[int],
          widths: Sequence[int]) -> list:
  """The four stem convs (3x3; strides 2, 1, 1, 2), after checking the 4-entry patterns."""
  if len(stem_widths) != 4 or len(depths) != 4 or len(widths) != 4:
    raise ValueError('NFNet needs 4 stem widths, 4 stage depths and 4 stage widths, got '
                     f'{tuple(stem_widths)}, {tuple(depths)}, {tuple(widths)}')
  return [conv(ch, kernel_shape=3, stride=s, name=f'stem_conv{i}')
          for i, (ch, s) in enumerate(zip(stem_widths, (2, 1, 1, 2)))]


def _blocks(schedule: Sequence[dict], ch: int, widths: Sequence[int], width: float,
            activation: Callable, shared: Mapping[str, Any], arch: Mapping[str, Any]) -> list:
  """One NFBlock per schedule entry (`shared`: the keywords every block gets)."""
  blocks = []
  for info in schedule:
    out_ch = int(widths[info['stage']] * width)
    stride = STRIDES[info['stage']] if info['block_index'] == 0 else 1
    blocks.append(NFBlock(
        ch, out_ch, expansion=arch['bottleneck_ratio'], se_ratio=arch['se_ratio'],
        group_size=arch['group_width'], stride=stride, beta=info['beta'],
        activation=activation, stochdepth_rate=info['stochdepth_rate'],
        attention=arch['attention'], skipinit_mode=arch['skipinit_mode'], **shared))
    ch = out_ch
  return blocks


class NFNet(hk.Module):
  """Normalizer-Free Network (NFNet-F*, timm's light NFNet-L*) with the official module tree."""

  VARIANTS = NFNET_VARIANTS

  def __init__(self, num_classes: int, variant: str = 'F0', width: float = 1.0,
               se_ratio: Optional[float] = None, alpha: float = 0.2,
               stochdepth_rate: float = 0.1,
               drop_rate: Optional[float] = None, activation: Optional[str] = None,
               fc_init: Optional[Callable] = None, final_conv_mult: Optional[float] = None,
               final_conv_ch: Optional[int] = None, use_two_convs: bool = True,
               group_width: Optional[int] = None, bottleneck_ratio: Optional[float] = None,
               depths: Optional[Sequence[int]] = None,
               widths: Optional[Sequence[int]] = None,
               stem_widths: Optional[Sequence[int]] = None,
               skipinit_gain: Union[float, Callable] = 0.0,
               attention: Optional[str] = None, skipinit_mode: Optional[str] = None,
               conv_impl: str = 'auto', gelu_form: str = 'tanh',
               ws_eps_form: str = 'floor', ws_eps: Optional[float] = None,
               conv_padding: str = 'SAME', ws_folded: bool = False,
               name: str = 'NFNet'):
    """Builds the network.

    Every argument left at None takes the variant's value (NFNET_VARIANTS):
    the F-series' official values or timm's for the light family.

    Args:
      num_classes: classifier outputs.
      variant: 'F0'..'F7', 'F0+'..'F7+', or a light variant ('nfnet_l0',
        'eca_nfnet_l0'..'eca_nfnet_l3').
      width: multiplier of the stage widths (not of the stem, as officially).
      se_ratio: squeeze-excite hidden ratio (0 disables SE); F: 0.5, L: 0.25.
      alpha: residual branch scale.
      stochdepth_rate: final block's stochastic-depth rate (block i: rate*i/N).
      drop_rate: dropout before the classifier; None -> the variant's table value.
      activation: name in `nfnet_jax.nn.ACTIVATIONS` (gamma-scaled); F: gelu, L: silu.
      fc_init: classifier weight initializer; None -> N(0, 0.01).
      final_conv_mult: final 1x1 conv width = mult * last stage width
        (F: 2; nfnet_l0 / eca_nfnet_l0: 1.5; eca_nfnet_l1-l3: 2).
      final_conv_ch: explicit final conv width; takes precedence over the mult.
      use_two_convs: two grouped 3x3 convs per block (conv1, conv1b).
      group_width: channels per group of the grouped convs (F: 128, L: 64).
      bottleneck_ratio: bottleneck width = ratio * block output width (F: 0.5, L: 0.25).
      depths: override of the 4 stage depths (tiny test models).
      widths: override of the 4 stage widths (before `width` scaling).
      stem_widths: override of the 4 stem widths (default 16, 32, 64, widths[0]//2).
      skipinit_gain: initial value (or initializer) of every block's skip_gain
        (of conv2's gain with skipinit_mode='conv2_gain').
      attention: 'se' (squeeze-excite), 'eca' (efficient channel attention)
        or 'none', applied to the branch output and doubled.
      skipinit_mode: 'skip_gain' (official: a scalar per block, zero-init) or
        'conv2_gain' (timm's L family: no scalar; conv2's gain starts at
        skipinit_gain).
      conv_impl: grouped conv implementation ('auto', 'xla', 'split').
      gelu_form, ws_eps_form, ws_eps, conv_padding, ws_folded: numerics
        options, see `nfnet_jax.models.common.ws_conv_options` (defaults:
        the official numerics).
      name: module name ('NFNet' for official checkpoints).
    """
    super().__init__(name=name)
    row = common.set_variant(self, 'NFNet', variant, depths, widths)
    # Every architecture argument left at None takes the variant's value.
    arch = {k: row[k] if v is None else v for k, v in dict(
        drop_rate=drop_rate, activation=activation, se_ratio=se_ratio, attention=attention,
        skipinit_mode=skipinit_mode, group_width=group_width,
        bottleneck_ratio=bottleneck_ratio, final_conv_mult=final_conv_mult).items()}
    self.num_classes = num_classes
    self.drop_rate = arch['drop_rate']
    self.activation = nfnn.get_activation(arch['activation'], gelu_form=gelu_form)
    ws_options = common.ws_conv_options(ws_eps_form, ws_eps, conv_padding, ws_folded)
    conv = common.ws_conv_maker(conv_impl, ws_options)
    # Built here (a module's methods would add their name to the Haiku
    # names), in the official order: stem, blocks, head.
    self.stem_widths = tuple(stem_widths if stem_widths is not None else
                             (16, 32, 64, self.width_pattern[0] // 2))
    self.stem = _stem(conv, self.stem_widths, self.depth_pattern, self.width_pattern)
    self.schedule = nfnn.nf_block_schedule(self.depth_pattern, alpha, stochdepth_rate)
    self.blocks = _blocks(self.schedule, self.stem_widths[-1], self.width_pattern, width,
                          self.activation, dict(alpha=alpha, use_two_convs=use_two_convs,
                                                skipinit_gain=skipinit_gain,
                                                conv_impl=conv_impl, ws_options=ws_options),
                          arch)
    ch = self.blocks[-1].out_ch if self.blocks else self.stem_widths[-1]
    # An explicit final_conv_ch wins; otherwise mult * last width.
    ch = final_conv_ch if final_conv_ch is not None else int(arch['final_conv_mult'] * ch)
    self.final_conv = conv(ch, kernel_shape=1, name='final_conv')
    if fc_init is None:
      fc_init = hk.initializers.RandomNormal(stddev=0.01, mean=0.0)
    self.fc = hk.Linear(num_classes, w_init=fc_init, with_bias=True)

  def __call__(self, x, is_training: bool = True, return_metrics: bool = False) -> dict:
    """Returns {'logits': [N, num_classes] float32} (+ 'spp' with return_metrics)."""
    out = x
    for i, conv in enumerate(self.stem):
      out = conv(out)
      if i < len(self.stem) - 1:
        out = self.activation(out)
    return nf_blocks_and_head(out, self.blocks, self.schedule,
                              lambda h: self.activation(self.final_conv(h)), self.fc,
                              self.drop_rate, is_training, return_metrics)


_NFNET_FIELDS = ('variant', 'width', 'se_ratio', 'alpha', 'stochdepth_rate', 'drop_rate',
                 'activation', 'fc_init', 'final_conv_mult', 'final_conv_ch',
                 'use_two_convs', 'group_width', 'bottleneck_ratio', 'depths', 'widths',
                 'stem_widths', 'skipinit_gain', 'attention', 'skipinit_mode', 'conv_impl') + NUMERICS_FIELDS


def _check_nfnet(model: str, kw: dict) -> None:
  """The NFNet-only fields of `validate_config`."""
  table = NFNET_VARIANTS[kw.get('variant', 'F0')]
  if 'use_two_convs' in kw and not isinstance(kw['use_two_convs'], (bool, np.bool_)):
    bad_field(model, 'use_two_convs', kw['use_two_convs'], 'True or False')
  if 'final_conv_mult' in kw and (not is_number(kw['final_conv_mult'])
                                  or kw['final_conv_mult'] <= 0):
    bad_field(model, 'final_conv_mult', kw['final_conv_mult'], 'None or a number > 0')
  if 'final_conv_ch' in kw and not is_pos_int(kw['final_conv_ch']):
    bad_field(model, 'final_conv_ch', kw['final_conv_ch'], 'None or a positive int')
  if 'group_width' in kw and not is_pos_int(kw['group_width']):
    bad_field(model, 'group_width', kw['group_width'], 'a positive int')
  if 'attention' in kw and kw['attention'] not in ATTENTIONS:
    bad_field(model, 'attention', kw['attention'], f'None (the variant\'s) or one of {ATTENTIONS}')
  if 'skipinit_mode' in kw and kw['skipinit_mode'] not in SKIPINIT_MODES:
    bad_field(model, 'skipinit_mode', kw['skipinit_mode'],
         f'None (the variant\'s) or one of {SKIPINIT_MODES}')
  if (kw.get('skipinit_mode', table['skipinit_mode']) == 'conv2_gain'
      and callable(kw.get('skipinit_gain'))):
    bad_field(model, 'skipinit_gain', kw['skipinit_gain'],
         "a number with skipinit_mode='conv2_gain' (it is conv2's initial gain)")
  # Every stage's bottleneck must hold at least one group.
  widths = kw.get('widths') or table['width']
  ratio = kw.get('bottleneck_ratio', table['bottleneck_ratio'])
  mult = kw.get('width', 1.0)
  common.check_group_width(model, 'group_width', kw.get('group_width', table['group_width']), [
      (int(int(w * mult) * ratio),
       f'stage width {w} x width {mult} x bottleneck_ratio {ratio}') for w in widths])


validate_config = common.nf_validator('NFNet', _NFNET_FIELDS, NFNET_VARIANTS, _check_nfnet)


def min_resolution(model_kwargs: Optional[Mapping[str, Any]] = None) -> int:
  """Five stride-2 steps (two in the stem, three stages): 32 pixels."""
  del model_kwargs
  return 32
