"""Normalized (and plain) pre-activation ResNet baselines.

These are the baselines the NF-ResNet paper (Brock, De, Smith, arXiv
2101.08692, section 3 and figure 1) compares against: bottleneck ResNet-V2s
of depth 26/50/101/152/200 whose blocks use one of two orders,

* ``'bn_relu_conv'``: ``x -> norm -> act -> conv`` (the usual pre-activation
  ResNet-V2, blue curves of the paper's Signal Propagation Plots), or
* ``'relu_bn_conv'``: ``x -> act -> norm -> conv`` (red curves),

and one of four normalizers: BatchNorm, GroupNorm, plain Weight
Standardization + GroupNorm (as in BiT), or none at all (the unnormalized
ResNet with He init whose variance explodes with depth).

The stem is a 7x7/2 conv (64 channels) and a 3x3/2 max-pool; the stride of a
stage sits on the block's 3x3 conv; the first block of every stage (a
*transition*) has a strided 1x1 projection shortcut applied to the
pre-activated input (as ResNet-V2 and NF-ResNet do); after the last block a
final norm + activation precede global average pooling and the classifier.

The module returns ``{'logits': ...}`` and, with ``return_metrics=True``,
per-block signal-propagation statistics under ``'spp'`` (see
``docs/interfaces.md``).
"""
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

# Blocks per stage, as for NF-ResNets (REFERENCE.md).
VARIANTS: Dict[str, Sequence[int]] = {
    'ResNet26': (2, 2, 2, 2),
    'ResNet50': (3, 4, 6, 3),
    'ResNet101': (3, 4, 23, 3),
    'ResNet152': (3, 8, 36, 3),
    'ResNet200': (3, 24, 36, 3),
}
DEFAULT_WIDTHS = (256, 512, 1024, 2048)
DEFAULT_STEM_WIDTH = 64
NORMS = ('batchnorm', 'groupnorm', 'ws_groupnorm', 'none')
BLOCK_ORDERS = ('bn_relu_conv', 'relu_bn_conv')
ACTIVATIONS: Dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    'relu': jax.nn.relu,
    'gelu': jax.nn.gelu,
    'silu': jax.nn.silu,
    'elu': jax.nn.elu,
    'celu': jax.nn.celu,
    'selu': jax.nn.selu,
    'leaky_relu': jax.nn.leaky_relu,
    'relu6': jax.nn.relu6,
    'softplus': jax.nn.softplus,
    'tanh': jnp.tanh,
    'sigmoid': jax.nn.sigmoid,
    'identity': lambda x: x,
}
GN_MAX_GROUPS = 32
BN_DECAY = 0.9
NORM_EPS = 1e-5
# Floor added to the kernel variance in plain WS. BiT uses 1e-10: the
# per-unit kernel variance at He init is ~2/fan_in (~4e-4 for a 3x3x512
# kernel), so an eps like 1e-5 would already bias the standardisation by ~1%.
WS_EPS = 1e-10
# Config fields that only NF models use. A shared `config.model` may carry
# them (as None) so they are accepted by the constructor, but setting them for
# a ResNet baseline would silently change nothing, so validation refuses it.
_NF_ONLY_FIELDS = ('alpha', 'se_ratio')


def gn_groups(channels: int, max_groups: int = GN_MAX_GROUPS) -> int:
  """Number of GroupNorm groups for `channels`.

  32 groups (Wu & He 2018) when that divides the channel count; otherwise the
  largest divisor of `channels` not above 32, so tiny test widths (8, 24, 48)
  also work.
  """
  for g in range(min(max_groups, channels), 0, -1):
    if channels % g == 0:
      return g
  return 1


class StdConv2D(hk.Module):
  """Conv2D with plain (unscaled) Weight Standardization (Qiao et al. 2019).

  Each output unit's kernel is standardised over its fan-in (axes H, W, I):
  ``w_hat = (w - mean) / sqrt(var + eps)``. Unlike the NF models' scaled WS
  there is no 1/sqrt(fan_in) factor and no gain: a following normalizer is
  expected to fix the scale. Kernel HWIO, SAME padding, no bias.
  """

  def __init__(self, output_channels: int, kernel_shape: int, stride: int = 1,
               eps: float = WS_EPS, name: Optional[str] = None):
    super().__init__(name=name)
    self.output_channels = output_channels
    self.kernel_shape = kernel_shape
    self.stride = stride
    self.eps = eps

  def standardized_weight(self, in_channels: int, dtype: Any) -> jnp.ndarray:
    shape = (self.kernel_shape, self.kernel_shape, in_channels,
             self.output_channels)
    w = hk.get_parameter('w', shape, dtype, init=_he_init())
    mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
    var = jnp.var(w, axis=(0, 1, 2), keepdims=True)
    return (w - mean) * jax.lax.rsqrt(var + self.eps)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    w = self.standardized_weight(x.shape[-1], x.dtype)
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(self.stride, self.stride), padding='SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _he_init() -> hk.initializers.Initializer:
  # He et al. 2015: Var(w) = 2 / fan_in keeps ReLU-network signals O(1).
  return hk.initializers.VarianceScaling(2.0, 'fan_in', 'normal')


def _channel_stats(x: jnp.ndarray):
  """(mean_c(mean_NHW(x)^2), mean_c(var_NHW(x))) in float32."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.var(x, axis=(0, 1, 2))
  return jnp.mean(mean ** 2), jnp.mean(var)


class _BatchNorm(hk.BatchNorm):
  """hk.BatchNorm whose moving-average state also exists after an eval init.

  Plain hk.BatchNorm only creates its EMA state when called with
  is_training=True, so ``init(..., is_training=False)`` followed by apply
  fails. Here an eval-mode init creates the same zero state a training init
  does. (Haiku semantics otherwise unchanged: the EMAs are zero-debiased, so
  after the first training step they equal that batch's statistics.)
  """

  def __call__(self, x, is_training, **kwargs):
    if hk.running_init() and not is_training:
      stat_shape = (1,) * (x.ndim - 1) + (x.shape[-1],)
      for ema in (self.mean_ema, self.var_ema):
        ema.initialize(stat_shape, x.dtype)
        ema(jnp.zeros(stat_shape, x.dtype), update_stats=False)
    return super().__call__(x, is_training, **kwargs)


def _make_norm(norm: str, channels: int, name: str):
  """The configured normalizer module (None for norm='none')."""
  if norm == 'batchnorm':
    return _BatchNorm(create_scale=True, create_offset=True,
                      decay_rate=BN_DECAY, eps=NORM_EPS, name=name)
  if norm in ('groupnorm', 'ws_groupnorm'):
    return hk.GroupNorm(gn_groups(channels), eps=NORM_EPS, name=name)
  return None


def _apply_norm(layer, x, is_training):
  if layer is None:
    return x
  if isinstance(layer, hk.BatchNorm):
    return layer(x, is_training)
  return layer(x)


def _make_conv(norm: str, out_ch: int, kernel: int, stride: int, name: str,
               zero_init: bool = False):
  """The conv module for `norm` (plain WS conv for 'ws_groupnorm')."""
  if norm == 'ws_groupnorm':
    # WS would undo a zero kernel; validation rejects zero_init_last here.
    return StdConv2D(out_ch, kernel, stride, name=name)
  w_init = jnp.zeros if zero_init else _he_init()
  # Convs that feed a normalizer need no bias; the unnormalized net gets one
  # (zero init, so signal propagation at init is unchanged).
  return hk.Conv2D(out_ch, kernel, stride=stride, padding='SAME',
                   with_bias=norm == 'none', w_init=w_init,
                   data_format='NHWC', name=name)


class ResBlock(hk.Module):
  """Pre-activation bottleneck block: 1x1 -> 3x3 (stride) -> 1x1.

  Returns ``(shortcut + branch, branch)`` so callers can measure the
  residual branch.
  """

  def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str,
               activation: Callable, block_order: str, skipinit: bool,
               zero_init_last: bool, stochdepth_rate: float,
               name: Optional[str] = None):
    super().__init__(name=name)
    mid = max(1, out_ch // 4)
    self.activation = activation
    self.block_order = block_order
    self.skipinit = skipinit
    self.stochdepth_rate = stochdepth_rate
    self.norm0 = _make_norm(norm, in_ch, 'norm0')
    self.conv0 = _make_conv(norm, mid, 1, 1, 'conv0')
    self.norm1 = _make_norm(norm, mid, 'norm1')
    self.conv1 = _make_conv(norm, mid, 3, stride, 'conv1')
    self.norm2 = _make_norm(norm, mid, 'norm2')
    self.conv2 = _make_conv(norm, out_ch, 1, 1, 'conv2', zero_init=zero_init_last)
    self.conv_shortcut = None
    if stride > 1 or in_ch != out_ch:
      self.conv_shortcut = _make_conv(norm, out_ch, 1, stride, 'conv_shortcut')

  def _pre(self, norm, x, is_training):
    """norm+act in the configured order."""
    if self.block_order == 'bn_relu_conv':
      return self.activation(_apply_norm(norm, x, is_training))
    return _apply_norm(norm, self.activation(x), is_training)

  def __call__(self, x, is_training):
    out = self._pre(self.norm0, x, is_training)
    # Projection of the pre-activated input, as in ResNet-V2/NF-ResNet: the
    # skip path is renormalised at every transition.
    shortcut = x if self.conv_shortcut is None else self.conv_shortcut(out)
    out = self.conv0(out)
    out = self.conv1(self._pre(self.norm1, out, is_training))
    out = self.conv2(self._pre(self.norm2, out, is_training))
    if self.stochdepth_rate > 0.0 and is_training:
      # Official semantics: per-example keep mask, no 1/keep rescale.
      keep = jax.random.bernoulli(hk.next_rng_key(), 1.0 - self.stochdepth_rate,
                                  (out.shape[0], 1, 1, 1))
      out = out * keep.astype(out.dtype)
    if self.skipinit:
      out = out * hk.get_parameter('skip_gain', (), out.dtype, init=jnp.zeros)
    return shortcut + out, out


class ResNet(hk.Module):
  """Pre-activation bottleneck ResNet baseline with a choice of normalizer.

  Args:
    num_classes: classifier outputs.
    variant: one of ``VARIANTS`` (ResNet26/50/101/152/200).
    norm: 'batchnorm' | 'groupnorm' | 'ws_groupnorm' | 'none'.
    block_order: 'bn_relu_conv' | 'relu_bn_conv' (where the normalizer sits
      relative to the activation before each conv, and in the final head).
    width: multiplier on the stage widths and the stem width.
    activation: a key of ``ACTIVATIONS``.
    drop_rate: dropout rate before the classifier (training only).
    stochdepth_rate: stochastic-depth rate; block i of N drops with
      ``rate * i / N`` (official semantics, no rescale). Needs an rng.
    zero_init_last: zero-initialise the last conv of every residual branch so
      each block starts as the identity (pre-activation analogue of
      zero-init of the last BN scale).
    skipinit: multiply each residual branch by a scalar ``skip_gain``
      initialised to 0 (SkipInit, De & Smith 2020). False gives the plain
      ``x + f(x)`` residual.
    depths: blocks per stage; overrides the variant's.
    widths: output channels per stage (before ``width``); the bottleneck is
      a quarter of it. Same length as ``depths``.
    stem_width: channels of the 7x7 stem conv (before ``width``).
    alpha, se_ratio, conv_impl: NF-model fields of a shared ``config.model``;
      accepted so one config schema fits every model. ``alpha`` and
      ``se_ratio`` must be None (``validate_config`` refuses other values);
      ``conv_impl`` is ignored because every conv here is dense.
    name: module name.
  """

  def __init__(self, num_classes: int, variant: str = 'ResNet50',
               norm: str = 'batchnorm', block_order: str = 'bn_relu_conv',
               width: float = 1.0, activation: str = 'relu',
               drop_rate: Optional[float] = 0.0,
               stochdepth_rate: Optional[float] = 0.0,
               zero_init_last: bool = False, skipinit: bool = False,
               depths: Optional[Sequence[int]] = None,
               widths: Optional[Sequence[int]] = None,
               stem_width: Optional[int] = None,
               alpha: Optional[float] = None, se_ratio: Optional[float] = None,
               conv_impl: Optional[str] = None, name: str = 'ResNet'):
    super().__init__(name=name)
    kwargs = dict(variant=variant, norm=norm, block_order=block_order,
                  width=width, activation=activation, drop_rate=drop_rate,
                  stochdepth_rate=stochdepth_rate, depths=depths, widths=widths,
                  stem_width=stem_width, alpha=alpha, se_ratio=se_ratio)
    validate_config(kwargs, num_classes=num_classes)
    self.num_classes = num_classes
    self.variant = variant
    self.norm = norm
    self.block_order = block_order
    self.activation_name = activation
    self.activation = ACTIVATIONS[activation]
    self.drop_rate = float(drop_rate or 0.0)
    self.stochdepth_rate = float(stochdepth_rate or 0.0)
    self.zero_init_last = bool(zero_init_last)
    self.skipinit = bool(skipinit)
    self.depths = tuple(depths) if depths is not None else tuple(VARIANTS[variant])
    base_widths = tuple(widths) if widths is not None else DEFAULT_WIDTHS
    self.widths = tuple(max(4, int(round(w * width))) for w in base_widths)
    base_stem = stem_width if stem_width is not None else DEFAULT_STEM_WIDTH
    self.stem_width = max(1, int(round(base_stem * width)))

    # Submodules are built here (not in __call__) so parameter paths read
    # 'ResNet/~/res_block_3/~/conv1/w', the same style as the official models.
    self.initial_conv = _make_conv(norm, self.stem_width, 7, 2, 'initial_conv')
    self.blocks = []
    self.is_transition = []
    in_ch = self.stem_width
    num_blocks = sum(self.depths)
    for stage, (depth, out_ch) in enumerate(zip(self.depths, self.widths)):
      for block in range(depth):
        index = len(self.blocks)
        self.blocks.append(ResBlock(
            in_ch=in_ch, out_ch=out_ch,
            stride=2 if (stage > 0 and block == 0) else 1, norm=norm,
            activation=self.activation, block_order=block_order,
            skipinit=self.skipinit, zero_init_last=self.zero_init_last,
            stochdepth_rate=self.stochdepth_rate * index / num_blocks,
            name='res_block'))
        self.is_transition.append(1.0 if block == 0 else 0.0)
        in_ch = out_ch
    self.final_norm = _make_norm(norm, in_ch, 'final_norm')
    self.linear = hk.Linear(num_classes,
                            w_init=hk.initializers.RandomNormal(0.01),
                            name='linear')

  def __call__(self, images: jnp.ndarray, is_training: bool,
               return_metrics: bool = False) -> Dict[str, Any]:
    """Forward pass.

    Args:
      images: [N, H, W, C] with H, W >= ``min_resolution``.
      is_training: batch statistics + EMA updates for BatchNorm, dropout and
        stochastic depth on. BatchNorm eval uses the moving averages, which
        Haiku initialises to zero: evaluate after at least one training step.
      return_metrics: also return per-block signal-propagation statistics.

    Returns:
      ``{'logits': float32 [N, num_classes]}`` plus ``'spp'`` (arrays of
      shape [num_blocks]) when ``return_metrics``.
    """
    out = self.initial_conv(images)
    out = hk.max_pool(out, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1),
                      padding='SAME')
    stats = {k: [] for k in ('avg_sq_mean', 'avg_var', 'res_avg_var')}
    for block in self.blocks:
      out, res = block(out, is_training)
      if return_metrics:
        sq_mean, var = _channel_stats(out)
        stats['avg_sq_mean'].append(sq_mean)
        stats['avg_var'].append(var)
        stats['res_avg_var'].append(_channel_stats(res)[1])

    if self.block_order == 'bn_relu_conv':
      out = self.activation(_apply_norm(self.final_norm, out, is_training))
    else:
      out = _apply_norm(self.final_norm, self.activation(out), is_training)
    pooled = jnp.mean(out, axis=(1, 2))
    if is_training and self.drop_rate > 0.0:
      pooled = hk.dropout(hk.next_rng_key(), self.drop_rate, pooled)
    logits = self.linear(pooled)
    outputs = {'logits': logits.astype(jnp.float32)}
    if return_metrics:
      spp = {k: jnp.stack(v) for k, v in stats.items()}
      spp['is_transition'] = jnp.asarray(self.is_transition, jnp.float32)
      spp['expected_var'] = jnp.full((len(self.blocks),), jnp.nan, jnp.float32)
      outputs['spp'] = spp
    return outputs


def _is_number(v) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def validate_config(model_kwargs: Mapping[str, Any],
                    num_classes: Optional[int] = None) -> None:
  """Checks ResNet constructor kwargs without tracing anything.

  Args:
    model_kwargs: the keys of ``config.model`` except ``name`` (a dict or
      ConfigDict); missing keys take the constructor defaults, None means
      "the default".
    num_classes: optionally checked to be a positive int.

  Raises:
    ValueError: naming ``config.model.<field>``, the bad value and what is
      allowed.
  """
  kw = dict(model_kwargs)
  kw.pop('name', None)

  def bad(field, value, allowed):
    raise ValueError(f'config.model.{field}={value!r} is not valid for the ResNet '
                     f'baselines; allowed: {allowed}')

  known = {'variant', 'norm', 'block_order', 'width', 'activation', 'drop_rate',
           'stochdepth_rate', 'zero_init_last', 'skipinit', 'depths', 'widths',
           'stem_width', 'alpha', 'se_ratio', 'conv_impl'}
  for field in kw:
    if field not in known:
      bad(field, kw[field], f'one of the fields {sorted(known)}')

  if num_classes is not None and (not isinstance(num_classes, (int, np.integer))
                                  or num_classes < 1):
    raise ValueError(f'num_classes={num_classes!r} must be a positive int')
  variant = kw.get('variant') or 'ResNet50'
  if variant not in VARIANTS:
    bad('variant', variant, list(VARIANTS))
  norm = kw.get('norm') or 'batchnorm'
  if norm not in NORMS:
    bad('norm', norm, list(NORMS))
  order = kw.get('block_order') or 'bn_relu_conv'
  if order not in BLOCK_ORDERS:
    bad('block_order', order, list(BLOCK_ORDERS))
  act = kw.get('activation') or 'relu'
  if act not in ACTIVATIONS:
    bad('activation', act, list(ACTIVATIONS))
  width = kw.get('width')
  if width is not None and (not _is_number(width) or width <= 0):
    bad('width', width, 'a positive number')
  for field in ('drop_rate', 'stochdepth_rate'):
    v = kw.get(field)
    if v is not None and (not _is_number(v) or not 0.0 <= v < 1.0):
      bad(field, v, 'a number in [0, 1)')
  for field in ('zero_init_last', 'skipinit'):
    v = kw.get(field)
    if v is not None and not isinstance(v, (bool, np.bool_)):
      bad(field, v, 'True or False')
  if kw.get('zero_init_last') and norm == 'ws_groupnorm':
    bad('zero_init_last', True,
        "False with norm='ws_groupnorm' (weight standardisation undoes a zero "
        'kernel)')
  depths, widths = kw.get('depths'), kw.get('widths')
  for field, v in (('depths', depths), ('widths', widths)):
    if v is not None and (isinstance(v, (str, bytes)) or not hasattr(v, '__len__')
                          or len(v) == 0 or not all(
                              isinstance(d, (int, np.integer)) and d > 0 for d in v)):
      bad(field, v, 'None or a non-empty list of positive ints')
  n_depths = len(depths) if depths is not None else len(VARIANTS[variant])
  n_widths = len(widths) if widths is not None else len(DEFAULT_WIDTHS)
  if n_depths != n_widths:
    bad('widths', widths, f'a list with one width per stage ({n_depths} stages '
        'from depths/variant)')
  stem = kw.get('stem_width')
  if stem is not None and (not isinstance(stem, (int, np.integer)) or stem < 1):
    bad('stem_width', stem, 'None or a positive int')
  for field in _NF_ONLY_FIELDS:
    v = kw.get(field)
    if v is not None:
      bad(field, v, 'None (NF-model field, unused by normalized baselines)')
  impl = kw.get('conv_impl')
  if impl is not None and impl not in ('auto', 'xla', 'split'):
    bad('conv_impl', impl, "None, 'auto', 'xla' or 'split'")


def min_resolution(model_kwargs: Optional[Mapping[str, Any]] = None) -> int:
  """Smallest input side length: stem /4, then /2 per later stage."""
  kw = dict(model_kwargs or {})
  depths = kw.get('depths') or VARIANTS[kw.get('variant') or 'ResNet50']
  return 4 * 2 ** (len(depths) - 1)
