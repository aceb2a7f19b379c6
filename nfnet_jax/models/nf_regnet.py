"""NF-RegNets B0-B8 with the official Haiku module and parameter names.

The NF-ResNet paper (arXiv 2101.08692, section 6) builds EfficientNet-sized
normalizer-free RegNets. Facts follow DeepMind's reference implementation
(`nf_regnet.py`, `base.py`, `experiment_nf_regnets.py`), so a params tree
initialised there applies here unchanged:
  root module `NF_RegNet`; stem `initial_conv` one WS 3x3/2 conv to
    `int(widths[0] * width)` channels, no activation after it;
  blocks `nf_block`, `nf_block_1`, ...: every stage starts with a stride-2
    block; `out = act(x) * beta`; shortcut as in NFNets (2x2 avg-pool + 1x1
    `conv_shortcut` when strided, 1x1 conv on a channel change, else `x`);
    branch `conv0` 1x1 expansion to `int(in_ch * expansion)` rounded down to a
    multiple of the group size (expansion 1 for the very first block) -> act
    -> `conv1` grouped 3x3 (stride) -> `2 * squeeze_excite(out) * out` (SE on
    the expanded width, hidden `int(width * se_ratio)`) -> act -> `conv2` 1x1
    projection -> stochastic depth -> `* skip_gain`; `alpha * branch +
    shortcut`;
  head `final_conv` 1x1 to `1280 * last_width // 440` channels (the
    EfficientNet head ratio) -> act -> mean pool -> dropout -> `linear`
    (zero-initialised weights and bias).
"""
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import haiku as hk
import jax.numpy as jnp

from nfnet_jax import nn as nfnn
from nfnet_jax.models import common
from nfnet_jax.models.common import NUMERICS_FIELDS
from nfnet_jax.models.common import bad_field
from nfnet_jax.utils import is_number
from nfnet_jax.utils import is_pos_int

# variant: stage widths, depths, train / test resolution, dropout (official table).
_B_SERIES = {
    'B0': ((48, 104, 208, 440), (1, 3, 6, 6), 192, 224, 0.2),
    'B1': ((48, 104, 208, 440), (2, 4, 7, 7), 224, 256, 0.2),
    'B2': ((56, 112, 232, 488), (2, 4, 8, 8), 240, 272, 0.3),
    'B3': ((56, 128, 248, 528), (2, 5, 9, 9), 288, 320, 0.3),
    'B4': ((64, 144, 288, 616), (2, 6, 11, 11), 320, 384, 0.4),
    'B5': ((80, 168, 336, 704), (3, 7, 14, 14), 384, 456, 0.4),
    'B6': ((88, 184, 376, 792), (3, 8, 16, 16), 448, 528, 0.5),
    'B7': ((96, 208, 416, 880), (4, 10, 19, 19), 512, 600, 0.5),
    'B8': ((104, 232, 456, 968), (4, 11, 22, 22), 600, 672, 0.5),
}
NF_REGNET_VARIANTS = {
    k: dict(width=w, depth=d, train_imsize=tr, test_imsize=te, drop_rate=dr)
    for k, (w, d, tr, te, dr) in _B_SERIES.items()}
# The EfficientNet head: 1280 channels for a 440-wide last stage, scaled.
HEAD_CHANNELS, HEAD_REFERENCE_WIDTH = 1280, 440


def round_channels(v: float, divisor: Optional[int] = None, round_limit: float = 0.9) -> int:
  """A channel count: `int(v)` (official), or timm's rounding to a multiple.

  With a divisor: the nearest multiple of it (at least the divisor), one more
  multiple when that lost over `1 - round_limit` of v (timm's
  `make_divisible`, which its NF-RegNets apply to every width).
  """
  if divisor is None:
    return int(v)
  out = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return out + divisor if out < round_limit * v else out


def block_plan(widths: Sequence[int], depths: Sequence[int], width: float,
               expansion: float, group_size: int, se_ratio: float = 0.5,
               channel_divisor: Optional[int] = None) -> list:
  """(in_ch, out_ch, expanded width, groups, stride, SE width) of every block.

  The expanded width is `int(in_ch * expansion)` (expansion 1 for the first
  block, as EfficientNet's first MBConv) rounded down to whole groups; the
  SE hidden width is `int(width * se_ratio)`. `channel_divisor` (timm: 8)
  rounds every width with `round_channels` instead of `int` (the SE width
  with round_limit 0, as timm's squeeze-excite does).
  """
  rnd = lambda v: round_channels(v, channel_divisor)
  ch = rnd(widths[0] * width)
  plan = []
  for stage_width, depth in zip(widths, depths):
    for block_index in range(depth):
      ratio = 1 if not plan else expansion
      out_ch = rnd(stage_width * width)
      expanded = rnd(ch * ratio)
      groups = expanded // group_size
      plan.append(dict(in_ch=ch, out_ch=out_ch, width=group_size * groups, groups=groups,
                       expanded=expanded, stride=2 if block_index == 0 else 1,
                       se_hidden=round_channels(group_size * groups * se_ratio,
                                                channel_divisor, round_limit=0.0)))
      ch = out_ch
  return plan


class NFRegNetBlock(hk.Module):
  """Inverted-bottleneck NF-RegNet block (Haiku name `nf_block`, as officially)."""

  def __init__(self, in_ch: int, out_ch: int, width: int, groups: int, *,
               se_ratio: float = 0.5, kernel_shape: int = 3, stride: int = 1,
               beta: float = 1.0, alpha: float = 0.2, activation: Callable = None,
               stochdepth_rate: Optional[float] = None, skipinit_gain=0.0,
               conv_impl: str = 'auto', se_hidden: Optional[int] = None,
               ws_options: Optional[Mapping[str, Any]] = None,
               name: Optional[str] = 'nf_block'):
    super().__init__(name=name)
    if groups < 1:
      raise ValueError(f'NFRegNetBlock: expanded width {width} holds no whole group')
    self.in_ch, self.out_ch, self.width, self.groups = in_ch, out_ch, width, groups
    self.stride = stride
    self.beta, self.alpha = beta, alpha
    self.activation = activation or nfnn.get_activation('silu')
    self.skipinit_gain = common.init_fn(skipinit_gain)
    conv = common.ws_conv_maker(conv_impl, ws_options)
    self.conv0 = conv(width, kernel_shape=1, name='conv0')
    self.conv1 = conv(width, kernel_shape=kernel_shape, stride=stride,
                      feature_group_count=groups, name='conv1')
    self.conv2 = conv(out_ch, kernel_shape=1, name='conv2')
    self.conv_shortcut = (conv(out_ch, kernel_shape=1, name='conv_shortcut')
                          if stride > 1 or in_ch != out_ch else None)
    self.se = (nfnn.SqueezeExcite(width, width, None if se_hidden else se_ratio,
                                  hidden_ch=se_hidden) if se_ratio > 0 else None)
    self.stoch_depth = nfnn.stoch_depth_or_none(stochdepth_rate)

  def __call__(self, x, is_training: bool):
    """Returns (block output, residual branch output before stochdepth/gain)."""
    out, shortcut = common.nf_block_entry(self, x)
    if self.se is not None:
      out = 2 * self.se(out) * out  # 2x: sigmoid(0) = 0.5 would halve the signal
    out = self.conv2(self.activation(out))
    return common.nf_residual(out, shortcut, self.alpha, self.stoch_depth, self.skipinit_gain,
                              is_training)


class NFRegNet(hk.Module):
  """Normalizer-Free RegNet (B0-B8), root module `NF_RegNet` as officially."""

  VARIANTS = NF_REGNET_VARIANTS

  def __init__(self, num_classes: int, variant: str = 'B0', width: float = 0.75,
               expansion: float = 2.25, group_size: int = 8, se_ratio: float = 0.5,
               alpha: float = 0.2, stochdepth_rate: float = 0.1,
               drop_rate: Optional[float] = None, activation: str = 'silu',
               fc_init: Optional[Callable] = None,
               skipinit_gain: Union[float, Callable] = 0.0,
               depths: Optional[Sequence[int]] = None,
               widths: Optional[Sequence[int]] = None,
               conv_impl: str = 'auto', channel_divisor: Optional[int] = None,
               gelu_form: str = 'tanh', ws_eps_form: str = 'floor',
               ws_eps: Optional[float] = None, conv_padding: str = 'SAME',
               ws_folded: bool = False, name: str = 'NF_RegNet'):
    """Builds the network.

    Args:
      num_classes: classifier outputs.
      variant: 'B0'..'B8'.
      width: multiplier of every stage width and of the stem (official 0.75).
      expansion: inverted-bottleneck expansion of the block input (2.25; the
        first block uses 1).
      group_size: channels per group of the 3x3 conv (8); the expanded width
        is rounded down to a multiple of it.
      se_ratio: squeeze-excite hidden ratio of the expanded width (0 disables).
      alpha: residual branch scale.
      stochdepth_rate: final block's stochastic-depth rate (block i: rate*i/N).
      drop_rate: dropout before the classifier; None -> the variant's value.
      activation: name in `nfnet_jax.nn.ACTIVATIONS` (gamma-scaled). The
        official constructor's default name 'swish' is missing from its own
        table; its experiment passes 'silu', the same function.
      fc_init: classifier weight initializer; None -> zeros (official).
      skipinit_gain: initial value (or initializer) of every skip_gain.
      depths: override of the 4 stage depths (tiny test models).
      widths: override of the 4 stage widths (before `width` scaling).
      conv_impl: grouped conv implementation ('auto', 'xla', 'split').
      channel_divisor: None (official `int` widths) or timm's 8: every width
        (stem, stages, expansions, SE, head) rounded as `round_channels`.
      gelu_form, ws_eps_form, ws_eps, conv_padding, ws_folded: numerics
        options (`nfnet_jax.models.common.ws_conv_options`); defaults official.
      name: module name ('NF_RegNet' for official trees).
    """
    super().__init__(name=name)
    params = common.set_variant(self, 'NF-RegNet', variant, depths, widths)
    self.num_classes = num_classes
    if len(self.depth_pattern) != 4 or len(self.width_pattern) != 4:
      raise ValueError('NF-RegNet needs 4 stage depths and 4 stage widths, got '
                       f'{self.depth_pattern}, {self.width_pattern}')
    self.drop_rate = params['drop_rate'] if drop_rate is None else drop_rate
    self.activation = nfnn.get_activation(activation, gelu_form=gelu_form)
    ws_options = common.ws_conv_options(ws_eps_form, ws_eps, conv_padding, ws_folded)
    conv = common.ws_conv_maker(conv_impl, ws_options)
    self.initial_conv = conv(round_channels(self.width_pattern[0] * width, channel_divisor),
                             kernel_shape=3, stride=2, name='initial_conv')
    self.schedule = nfnn.nf_block_schedule(self.depth_pattern, alpha, stochdepth_rate)
    self.plan = block_plan(self.width_pattern, self.depth_pattern, width, expansion,
                           group_size, se_ratio, channel_divisor)
    self.blocks = [
        NFRegNetBlock(p['in_ch'], p['out_ch'], p['width'], p['groups'], se_ratio=se_ratio,
                      stride=p['stride'], beta=info['beta'], alpha=alpha,
                      activation=self.activation, stochdepth_rate=info['stochdepth_rate'],
                      skipinit_gain=skipinit_gain, conv_impl=conv_impl,
                      se_hidden=p['se_hidden'] if channel_divisor else None,
                      ws_options=ws_options)
        for p, info in zip(self.plan, self.schedule)]
    last = self.plan[-1]['out_ch']
    head = HEAD_CHANNELS * last // HEAD_REFERENCE_WIDTH
    if channel_divisor:  # timm: the unscaled head width, scaled, then rounded
      head = round_channels(
          width * (HEAD_CHANNELS * self.width_pattern[-1] // HEAD_REFERENCE_WIDTH),
          channel_divisor)
    self.final_conv = conv(head, kernel_shape=1, name='final_conv')
    self.fc = hk.Linear(num_classes, w_init=fc_init or jnp.zeros, with_bias=True)

  def __call__(self, x, is_training: bool = True, return_metrics: bool = False) -> dict:
    """Returns {'logits': [N, num_classes] float32} (+ 'spp' with return_metrics)."""
    out = self.initial_conv(x)
    return common.nf_blocks_and_head(out, self.blocks, self.schedule,
                                     lambda h: self.activation(self.final_conv(h)), self.fc,
                                     self.drop_rate, is_training, return_metrics)


_NF_REGNET_FIELDS = ('variant', 'width', 'expansion', 'group_size', 'se_ratio', 'alpha',
                     'stochdepth_rate', 'drop_rate', 'activation', 'fc_init',
                     'skipinit_gain', 'depths', 'widths', 'conv_impl',
                     'channel_divisor') + NUMERICS_FIELDS


def _check_nf_regnet(model: str, kw: dict) -> None:
  """The NF-RegNet-only fields of `validate_config`."""
  if 'expansion' in kw and (not is_number(kw['expansion']) or kw['expansion'] <= 0):
    bad_field(model, 'expansion', kw['expansion'], 'a number > 0')
  if 'group_size' in kw and not is_pos_int(kw['group_size']):
    bad_field(model, 'group_size', kw['group_size'], 'a positive int')
  if 'channel_divisor' in kw and not is_pos_int(kw['channel_divisor']):
    bad_field(model, 'channel_divisor', kw['channel_divisor'], 'None or a positive int')
  table = NF_REGNET_VARIANTS[kw.get('variant', 'B0')]
  mult = kw.get('width', 0.75)
  widths = kw.get('widths') or table['width']
  if int(widths[0] * mult) < 1:
    bad_field(model, 'width', mult, 'a multiplier giving the stem at least 1 channel')
  plan = block_plan(widths, kw.get('depths') or table['depth'], mult,
                    kw.get('expansion', 2.25), kw.get('group_size', 8),
                    kw.get('se_ratio', 0.5), kw.get('channel_divisor'))
  common.check_group_width(model, 'group_size', kw.get('group_size', 8), [
      (p['expanded'], f"block {i}: input {p['in_ch']} channels x expansion")
      for i, p in enumerate(plan)])


validate_config = common.nf_validator('NFRegNet', _NF_REGNET_FIELDS, NF_REGNET_VARIANTS,
                                      _check_nf_regnet)


def min_resolution(model_kwargs: Optional[Mapping[str, Any]] = None) -> int:
  """A stride-2 stem and four stride-2 stages: 32 pixels."""
  del model_kwargs
  return 32
