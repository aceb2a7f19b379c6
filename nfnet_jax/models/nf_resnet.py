"""NF-ResNets: normalizer-free pre-activation bottleneck ResNets.

Follows the NF-ResNet paper (arXiv 2101.08692) and DeepMind's reference
implementation (module name 'NF_ResNet', `initial_conv`, `nf_res_block[_k]`,
`linear`) so parameter trees are interchangeable with it:
  stem: WS 7x7/2 conv (16 * width channels; a bias exists although the
    official code passes with_bias=False, because its WSConv2D always adds
    one) then 3x3/2 max-pool (SAME), no activation in between;
  block: `out = act(x) * beta`; shortcut = strided 1x1 `conv_shortcut(out)` on
    stride or channel change, else `x`; branch conv0 1x1 -> act -> conv1 3x3
    (stride) -> act -> conv2 1x1 [-> `2 * se * out`] -> stochastic depth ->
    `* skip_gain`; returns `alpha * branch + shortcut`;
  head: activation -> mean pool -> dropout -> linear (N(0, 0.01)).
"""
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import haiku as hk

from nfnet_jax import nn as nfnn
from nfnet_jax.models import common
from nfnet_jax.models.common import NUMERICS_FIELDS
from nfnet_jax.models.common import bad_field

# ResNet26 is not in the official variant table (added for the papers'
# comparisons); the others are.
NF_RESNET_VARIANTS = {
    'ResNet26': {'depth': (2, 2, 2, 2)},
    'ResNet50': {'depth': (3, 4, 6, 3)},
    'ResNet101': {'depth': (3, 4, 23, 3)},
    'ResNet152': {'depth': (3, 8, 36, 3)},
    'ResNet200': {'depth': (3, 24, 36, 3)},
    'ResNet288': {'depth': (24, 24, 24, 24)},
    'ResNet600': {'depth': (50, 50, 50, 50)},
}
_BASE_WIDTHS = (64, 128, 256, 512)  # times `width` (4 -> 256 .. 2048)
STRIDES = (1, 2, 2, 2)


class NFResBlock(hk.Module):
  """Normalizer-free pre-activation bottleneck block."""

  def __init__(self, in_ch: int, out_ch: int, *, bottleneck_ratio: float = 0.25,
               kernel_size: int = 3, stride: int = 1, beta: float = 1.0,
               alpha: float = 0.2, activation: Callable = None,
               skipinit_gain=0.0, stochdepth_rate: Optional[float] = None,
               se_ratio: float = 0.0, conv_impl: str = 'auto',
               shortcut: str = 'conv', ws_options: Optional[Mapping[str, Any]] = None,
               attention: str = 'se', name: Optional[str] = None):
    super().__init__(name=name)
    self.in_ch, self.out_ch = in_ch, out_ch
    self.activation = activation or nfnn.get_activation('relu')
    self.beta, self.alpha = beta, alpha
    self.skipinit_gain = common.init_fn(skipinit_gain)
    self.width = int(out_ch * bottleneck_ratio)
    self.stride = stride
    self.shortcut = shortcut
    conv = common.ws_conv_maker(conv_impl, ws_options)
    self.conv0 = conv(self.width, kernel_shape=1, name='conv0')
    self.conv1 = conv(self.width, kernel_shape=kernel_size, stride=stride, name='conv1')
    self.conv2 = conv(out_ch, kernel_shape=1, name='conv2')
    self.use_projection = stride > 1 or in_ch != out_ch
    if self.use_projection:
      # 'avgpool' (timm's NF-ResNets): 2x2 average pool, then a stride-1 1x1 conv.
      self.conv_shortcut = conv(out_ch, kernel_shape=1,
                                stride=1 if shortcut == 'avgpool' else stride,
                                name='conv_shortcut')
    self.stoch_depth = nfnn.stoch_depth_or_none(stochdepth_rate)
    if attention == 'eca':  # timm's nf_ecaresnet*
      self.se = nfnn.EfficientChannelAttention(out_ch)
    else:
      self.se = nfnn.SqueezeExcite(out_ch, out_ch, se_ratio) if se_ratio > 0 else None

  def __call__(self, x, is_training: bool):
    """Returns (block output, residual branch output before stochdepth/gain)."""
    out, shortcut = common.nf_block_entry(self, x, self._shortcut)
    out = self.conv2(self.activation(out))
    if self.se is not None:
      out = 2 * self.se(out) * out
    return common.nf_residual(out, shortcut, self.alpha, self.stoch_depth, self.skipinit_gain,
                              is_training)

  def _shortcut(self, out, x):
    """Strided 1x1 conv ('conv') or 2x2 avg-pool + 1x1 conv ('avgpool'), else `x`."""
    if self.use_projection and self.shortcut == 'avgpool' and self.stride > 1:
      return self.conv_shortcut(hk.avg_pool(out, (1, 2, 2, 1), (1, 2, 2, 1), 'SAME'))
    return self.conv_shortcut(out) if self.use_projection else x


STEMS = ('imagenet', 'small')
SHORTCUTS = ('conv', 'avgpool')


class NFResNet(hk.Module):
  """Normalizer-free pre-activation ResNet with the official module tree."""

  VARIANTS = NF_RESNET_VARIANTS

  def __init__(self, num_classes: int, variant: str = 'ResNet50', width: float = 4,
               se_ratio: float = 0.0, alpha: float = 0.2, stochdepth_rate: float = 0.1,
               drop_rate: Optional[float] = None, activation: str = 'relu',
               fc_init: Optional[Callable] = None,
               skipinit_gain: Union[float, Callable] = 0.0,
               bottleneck_ratio: float = 0.25,
               depths: Optional[Sequence[int]] = None,
               widths: Optional[Sequence[int]] = None,
               stem_width: Optional[int] = None,
               stem: str = 'imagenet',
               conv_impl: str = 'auto', shortcut: str = 'conv',
               gelu_form: str = 'tanh', ws_eps_form: str = 'floor',
               ws_eps: Optional[float] = None, conv_padding: str = 'SAME',
               ws_folded: bool = False, attention: str = 'se',
               name: str = 'NF_ResNet'):
    """Builds the network.

    Args:
      num_classes: classifier outputs.
      variant: 'ResNet26', 'ResNet50', 'ResNet101', 'ResNet152', 'ResNet200'
        (also the official 'ResNet288', 'ResNet600').
      width: multiplier of the base widths (64, 128, 256, 512) and of the
        stem's 16; 4 gives the standard ResNet widths.
      se_ratio: squeeze-excite hidden ratio, 0 disables SE (the official
        SE-NF-ResNets use 0.25 with `use_se=True`).
      alpha: residual branch scale.
      stochdepth_rate: final block's stochastic-depth rate (block i: rate*i/N).
      drop_rate: dropout before the classifier; None -> 0.0 (the official
        experiment's value; the official class has no table default).
      activation: name in `nfnet_jax.nn.ACTIVATIONS` (gamma-scaled).
      fc_init: classifier weight initializer; None -> N(0, 0.01).
      skipinit_gain: initial value (or initializer) of every skip_gain.
      bottleneck_ratio: bottleneck width = ratio * block output width.
      depths: override of the 4 stage depths (tiny test models).
      widths: override of the 4 stage widths (absolute, not scaled by width).
      stem_width: override of the stem width (default int(16 * width)).
      stem: 'imagenet' (official: 7x7/2 WS conv + 3x3/2 max-pool, /4) or
        'small' (3x3/1 WS conv, no pool) for 28-64 px images, where a /4 stem
        would leave the last stage with 1-2 pixels.
      conv_impl: convolution implementation ('auto', 'xla', 'split').
      shortcut: projection at strided transitions: 'conv' (official: strided
        1x1 conv) or 'avgpool' (timm: 2x2 average pool, then a 1x1 conv).
      gelu_form, ws_eps_form, ws_eps, conv_padding, ws_folded: numerics
        options (`nfnet_jax.models.common.ws_conv_options`); defaults official.
      attention: 'se' (squeeze-excite when se_ratio > 0) or 'eca' (efficient
        channel attention, timm's nf_ecaresnet*), after conv2, doubled.
      name: module name ('NF_ResNet' for official trees).
    """
    super().__init__(name=name)
    if variant not in self.VARIANTS:
      raise ValueError(f'Unknown NF-ResNet variant {variant!r}; '
                       f'allowed: {sorted(self.VARIANTS)}')
    self.num_classes = num_classes
    self.variant = variant
    self.depth_pattern = tuple(depths if depths is not None
                               else self.VARIANTS[variant]['depth'])
    self.width_pattern = tuple(widths if widths is not None
                               else [int(w * width) for w in _BASE_WIDTHS])
    self.drop_rate = 0.0 if drop_rate is None else drop_rate
    self.activation = nfnn.get_activation(activation, gelu_form=gelu_form)
    ws_options = common.ws_conv_options(ws_eps_form, ws_eps, conv_padding, ws_folded)
    self.conv_padding = conv_padding
    ch = stem_width if stem_width is not None else int(16 * width)
    if stem not in STEMS:
      raise ValueError(f'Unknown NF-ResNet stem {stem!r}; allowed: {STEMS}')
    self.stem = stem
    self.initial_conv = nfnn.WSConv2D(ch, kernel_shape=7 if stem == 'imagenet' else 3,
                                      stride=2 if stem == 'imagenet' else 1,
                                      conv_impl=conv_impl, **ws_options,
                                      name='initial_conv')
    self.schedule = nfnn.nf_block_schedule(self.depth_pattern, alpha, stochdepth_rate)
    self.blocks = []
    for info in self.schedule:
      out_ch = self.width_pattern[info['stage']]
      stride = STRIDES[info['stage']] if info['block_index'] == 0 else 1
      self.blocks.append(NFResBlock(
          ch, out_ch, bottleneck_ratio=bottleneck_ratio, stride=stride,
          beta=info['beta'], alpha=alpha, activation=self.activation,
          skipinit_gain=skipinit_gain, stochdepth_rate=info['stochdepth_rate'],
          se_ratio=se_ratio, conv_impl=conv_impl, shortcut=shortcut,
          ws_options=ws_options, attention=attention))
      ch = out_ch
    if fc_init is None:
      fc_init = hk.initializers.RandomNormal(stddev=0.01, mean=0.0)
    self.fc = hk.Linear(num_classes, w_init=fc_init, with_bias=True)

  def __call__(self, x, is_training: bool = True, return_metrics: bool = False) -> dict:
    """Returns {'logits': [N, num_classes] float32} (+ 'spp' with return_metrics)."""
    out = self.initial_conv(x)
    # nfnn.max_pool: hk.max_pool's numerics, a gradient XLA:CPU computes ~3x faster.
    if self.stem == 'imagenet' and self.conv_padding == 'symmetric':
      # PyTorch's MaxPool2d(3, 2, padding=1): one -inf pixel on every side.
      out = nfnn.max_pool(out, 3, 2, ((1, 1), (1, 1)))
    elif self.stem == 'imagenet':
      out = nfnn.max_pool(out, 3, 2, 'SAME')
    return common.nf_blocks_and_head(out, self.blocks, self.schedule, self.activation, self.fc,
                                     self.drop_rate, is_training, return_metrics)


_NF_RESNET_FIELDS = ('variant', 'width', 'se_ratio', 'alpha', 'stochdepth_rate',
                     'drop_rate', 'activation', 'fc_init', 'skipinit_gain',
                     'bottleneck_ratio', 'depths', 'widths', 'stem_width', 'stem', 'conv_impl',
                     'shortcut', 'attention') + NUMERICS_FIELDS


def _check_nf_resnet(model: str, kw: dict) -> None:
  """The NF-ResNet-only fields of `validate_config`."""
  if kw.get('attention', 'se') not in ('se', 'eca'):
    bad_field(model, 'attention', kw['attention'], "'se' or 'eca'")
  if kw.get('shortcut', 'conv') not in SHORTCUTS:
    bad_field(model, 'shortcut', kw['shortcut'], f'one of {SHORTCUTS}')
  if kw.get('stem', 'imagenet') not in STEMS:
    bad_field(model, 'stem', kw['stem'], f'one of {STEMS}')
  stem = kw.get('stem_width')
  if stem is not None and (isinstance(stem, bool) or not isinstance(stem, int) or stem < 1):
    bad_field(model, 'stem_width', stem, 'None or a positive int')
  widths = kw.get('widths') or [int(w * kw.get('width', 4)) for w in _BASE_WIDTHS]
  ratio = kw.get('bottleneck_ratio', 0.25)
  if min(int(w * ratio) for w in widths) < 1 or int(16 * kw.get('width', 4)) < 1:
    bad_field(model, 'width', kw.get('width', 4),
         'a value giving at least 1 channel in every bottleneck and in the stem')


validate_config = common.nf_validator('NFResNet', _NF_RESNET_FIELDS, NF_RESNET_VARIANTS,
                                      _check_nf_resnet)


def min_resolution(model_kwargs: Optional[Mapping[str, Any]] = None) -> int:
  """'imagenet' stem (/4) and three stride-2 stages: 32 px; 'small' stem: 8 px."""
  stem = dict(model_kwargs or {}).get('stem') or 'imagenet'
  return 8 if stem == 'small' else 32
