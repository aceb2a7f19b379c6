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

``fixup=True`` (with ``norm='none'``) builds the Fixup ResNet of Zhang, Dauphin
and Ma (ICLR 2019), the third normalizer-free baseline of the NF-ResNet paper,
as in DeepMind's reference ``fixup_resnet.py``: post-activation bottleneck
blocks ``act(shortcut + branch)``, scalar biases before every conv and
activation (``bias1a``, ``bias1b``, ``bias2a``, ``bias2b``, ``bias3a``,
``bias3b``) and a scalar multiplier ``scale`` (init 1) per branch, the last
conv of every branch zero-initialised and the other two He-initialised (fan-out
form, as the reference) and scaled by ``L**-0.25`` (L residual branches of m = 3
layers: ``L**(-1/(2m-2))``), a scalar ``bias1`` after the stem conv and
``bias2`` before the zero-initialised classifier.

The module returns ``{'logits': ...}`` and, with ``return_metrics=True``,
per-block signal-propagation statistics under ``'spp'`` (see
``docs/architecture.md``).
"""
from typing import Any, Dict, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from nfnet_jax import nn as nfnn
# Re-exported: the plain-WS conv of the WS+GroupNorm baseline lives in nn/.
from nfnet_jax.nn.ws_conv import PLAIN_WS_EPS as WS_EPS  # pylint: disable=unused-import
from nfnet_jax.nn.ws_conv import StdConv2D
from nfnet_jax.utils import is_number

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
# Unscaled (no gamma): the normalizers fix the scale. Channel-count-changing
# activations (glu) cannot sit between convs.
ACTIVATION_NAMES = tuple(sorted(set(nfnn.ACTIVATIONS) - set(nfnn.SHAPE_CHANGING_ACTIVATIONS)))
GN_MAX_GROUPS = 32
# The named axis of the train step's pmap / shard_map (train/step.py AXIS;
# models sit below train/, so the name is repeated here and a test ties them).
BN_CROSS_REPLICA_AXIS = 'batch'
BN_DECAY = 0.9
NORM_EPS = 1e-5
# Config fields that only NF models use. A shared `config.model` may carry
# them (as None) so they are accepted by the constructor, but setting them for
# a ResNet baseline would silently change nothing, so validation refuses it.
_NF_ONLY_FIELDS = ('alpha', 'se_ratio')
# Fixup: layers per residual branch (1x1, 3x3, 1x1).
FIXUP_BRANCH_LAYERS = 3


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


def _he_init() -> hk.initializers.Initializer:
  # He et al. 2015: Var(w) = 2 / fan_in keeps ReLU-network signals O(1).
  return hk.initializers.VarianceScaling(2.0, 'fan_in', 'normal')


class _BatchNorm(hk.BatchNorm):
  """hk.BatchNorm whose moving-average state also exists after an eval init.

  Plain hk.BatchNorm only creates its EMA state when called with
  is_training=True, so ``init(..., is_training=False)`` followed by apply
  fails. Here an eval-mode init creates the same zero state a training init
  does. (Haiku semantics otherwise unchanged: the EMAs are zero-debiased, so
  after the first training step they equal that batch's statistics.)

  With ``cross_replica_axis`` set (``bn_cross_replica=True``), training
  statistics are averaged over that named axis, i.e. over the global batch
  of the train step's pmap / shard_map. Outside such a map (``init``, or a
  tool applying the model on one device) the axis is unbound: init then uses
  the local statistics (they only seed the zero-debiased EMAs' shapes), and
  any other training-mode call raises one ValueError saying so.

  The batch variance is Haiku's one-pass E[x^2] - E[x]^2 (as the official
  code's BatchNorm), clamped at 0 as flax's BatchNorm does: with a few values
  per channel whose mean is large against their spread (2 images per device
  at a 1x1 last stage) the subtraction cancels to below -eps and rsqrt gives
  NaN. Where the variance is >= 0 the clamp returns it unchanged, so outputs
  equal hk.BatchNorm's bit for bit. (The per-device study's divergence at 2
  images per device has another cause, unbounded parameter growth, and stays
  with the clamp: docs/studies/normalizers.md.)
  """

  def __call__(self, x, is_training, **kwargs):
    if hk.running_init() and not is_training:
      stat_shape = (1,) * (x.ndim - 1) + (x.shape[-1],)
      for ema in (self.mean_ema, self.var_ema):
        ema.initialize(stat_shape, x.dtype)
        ema(jnp.zeros(stat_shape, x.dtype), update_stats=False)
    axis = self.cross_replica_axis
    if axis and is_training and not _axis_bound(axis):
      if not hk.running_init():
        raise ValueError(
            'config.model.bn_cross_replica=True averages BatchNorm statistics over the '
            f"{axis!r} axis of the train step's pmap/shard_map, but this call is not inside "
            'one; set bn_cross_replica=False to apply the model outside the train loop')
      self.cross_replica_axis = None
      try:
        return self._normalize(x, is_training, **kwargs)
      finally:
        self.cross_replica_axis = axis
    return self._normalize(x, is_training, **kwargs)

  def _normalize(self, x, is_training, test_local_stats=False):
    """hk.BatchNorm.__call__ (scale and offset created) with the variance clamped at 0."""
    axes = tuple(range(x.ndim - 1))  # channels last
    if is_training or test_local_stats:
      mean = jnp.mean(x, axes, keepdims=True)
      mean_of_squares = jnp.mean(jnp.square(x), axes, keepdims=True)
      if self.cross_replica_axis:
        mean = jax.lax.pmean(mean, self.cross_replica_axis)
        mean_of_squares = jax.lax.pmean(mean_of_squares, self.cross_replica_axis)
      var = jnp.maximum(mean_of_squares - jnp.square(mean), 0)
    else:
      mean = self.mean_ema.average.astype(x.dtype)
      var = self.var_ema.average.astype(x.dtype)
    if is_training:
      self.mean_ema(mean)
      self.var_ema(var)
    w_shape = (1,) * (x.ndim - 1) + (x.shape[-1],)
    scale = hk.get_parameter('scale', w_shape, x.dtype, self.scale_init)
    offset = hk.get_parameter('offset', w_shape, x.dtype, self.offset_init)
    inv = scale * jax.lax.rsqrt(var + jax.lax.convert_element_type(self.eps, var.dtype))
    return (x - mean) * inv + offset


def _axis_bound(name: str) -> bool:
  """Whether the named mapped axis ``name`` exists where we are tracing."""
  try:
    jax.lax.axis_index(name)
  except NameError:
    return False
  return True


def _make_norm(norm: str, channels: int, name: str, bn_cross_replica: bool = False):
  """The configured normalizer module (None for norm='none').

  ``bn_cross_replica``: BatchNorm statistics over the global batch (the
  ``'batch'`` axis) instead of each device's examples.
  """
  if norm == 'batchnorm':
    return _BatchNorm(create_scale=True, create_offset=True,
                      decay_rate=BN_DECAY, eps=NORM_EPS, name=name,
                      cross_replica_axis=BN_CROSS_REPLICA_AXIS if bn_cross_replica else None)
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
               activation, block_order: str, skipinit: bool,
               zero_init_last: bool, stochdepth_rate: float,
               bn_cross_replica: bool = False, name: Optional[str] = None):
    super().__init__(name=name)
    mid = max(1, out_ch // 4)
    self.activation = activation
    self.block_order = block_order
    self.skipinit = skipinit
    self.norm0 = _make_norm(norm, in_ch, 'norm0', bn_cross_replica)
    self.conv0 = _make_conv(norm, mid, 1, 1, 'conv0')
    self.norm1 = _make_norm(norm, mid, 'norm1', bn_cross_replica)
    self.conv1 = _make_conv(norm, mid, 3, stride, 'conv1')
    self.norm2 = _make_norm(norm, mid, 'norm2', bn_cross_replica)
    self.conv2 = _make_conv(norm, out_ch, 1, 1, 'conv2', zero_init=zero_init_last)
    self.conv_shortcut = None
    if stride > 1 or in_ch != out_ch:
      self.conv_shortcut = _make_conv(norm, out_ch, 1, stride, 'conv_shortcut')
    self.stoch_depth = nfnn.stoch_depth_or_none(stochdepth_rate)

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
    if self.stoch_depth is not None:
      out = self.stoch_depth(out, is_training)
    if self.skipinit:
      out = out * nfnn.skip_gain(out.dtype)
    # The branch as added (after SkipInit's gain), so res_avg_var shows it.
    return shortcut + out, out


def _scalar(name: str, dtype, init=jnp.zeros):
  """A Fixup scalar bias (init 0) or multiplier (init 1) of the current module."""
  return hk.get_parameter(name, (), dtype, init=init)


class FixupBlock(hk.Module):
  """Post-activation Fixup bottleneck block (Zhang et al. 2019).

  ``out = act(shortcut + branch)`` with ``shortcut = x + bias1a`` (projected
  by a strided 1x1 conv at transitions) and branch
  ``conv2(act(conv1(act(conv0(x + bias1a) + bias1b) + bias2a) + bias2b) + bias3a)
  * scale + bias3b``. Returns ``(output, branch before stochastic depth)``.
  """

  def __init__(self, in_ch: int, out_ch: int, stride: int, num_branches: int,
               activation, stochdepth_rate: float, name: Optional[str] = None):
    super().__init__(name=name)
    mid = max(1, out_ch // 4)
    self.activation = activation
    # He init (fan-out form, as the reference code) shrunk by L^(-1/(2m-2)).
    shrink = num_branches ** (-1.0 / (2 * FIXUP_BRANCH_LAYERS - 2))
    conv = lambda o, k, s, std, n: hk.Conv2D(
        o, k, stride=s, padding='SAME', with_bias=False, data_format='NHWC', name=n,
        w_init=hk.initializers.RandomNormal(std) if std else jnp.zeros)
    self.conv0 = conv(mid, 1, 1, (2.0 / mid) ** 0.5 * shrink, 'conv0')
    self.conv1 = conv(mid, 3, stride, (2.0 / (mid * 9)) ** 0.5 * shrink, 'conv1')
    self.conv2 = conv(out_ch, 1, 1, None, 'conv2')  # zero init: identity blocks
    self.conv_shortcut = None
    if stride > 1 or in_ch != out_ch:
      self.conv_shortcut = conv(out_ch, 1, stride, (2.0 / out_ch) ** 0.5, 'conv_shortcut')
    self.stoch_depth = nfnn.stoch_depth_or_none(stochdepth_rate)

  def __call__(self, x, is_training):
    dt = x.dtype
    out = x + _scalar('bias1a', dt)
    shortcut = out if self.conv_shortcut is None else self.conv_shortcut(out)
    out = self.activation(self.conv0(out) + _scalar('bias1b', dt))
    out = self.activation(self.conv1(out + _scalar('bias2a', dt)) + _scalar('bias2b', dt))
    out = self.conv2(out + _scalar('bias3a', dt))
    out = out * _scalar('scale', dt, jnp.ones) + _scalar('bias3b', dt)
    branch = out
    if self.stoch_depth is not None:
      out = self.stoch_depth(out, is_training)
    return self.activation(shortcut + out), branch


class ResNet(hk.Module):
  """Pre-activation bottleneck ResNet baseline with a choice of normalizer.

  Args:
    num_classes: classifier outputs.
    variant: one of ``VARIANTS`` (ResNet26/50/101/152/200).
    norm: 'batchnorm' | 'groupnorm' | 'ws_groupnorm' | 'none'.
    block_order: 'bn_relu_conv' | 'relu_bn_conv' (where the normalizer sits
      relative to the activation before each conv, and in the final head).
    width: multiplier on the stage widths and the stem width.
    activation: one of ``ACTIVATION_NAMES`` (unscaled, no gamma).
    drop_rate: dropout rate before the classifier (training only).
    stochdepth_rate: stochastic-depth rate; block i of N drops with
      ``rate * i / N`` (official semantics, no rescale). Needs an rng.
    zero_init_last: zero-initialise the last conv of every residual branch so
      each block starts as the identity (pre-activation analogue of
      zero-init of the last BN scale).
    skipinit: multiply each residual branch by a scalar ``skip_gain``
      initialised to 0 (SkipInit, De & Smith 2020). False gives the plain
      ``x + f(x)`` residual.
    fixup: the Fixup ResNet (module docstring); needs ``norm='none'``.
    depths: blocks per stage; overrides the variant's.
    widths: output channels per stage (before ``width``); the bottleneck is
      a quarter of it. Same length as ``depths``.
    stem_width: channels of the 7x7 stem conv (before ``width``).
    bn_cross_replica: BatchNorm only: training statistics over the global
      batch (averaged over the train step's ``'batch'`` axis, Haiku's
      ``cross_replica_axis``, i.e. synchronized BatchNorm) instead of over
      each device's examples (False, as in the official experiments, whose
      cross-replica axis is commented out). Needs the pmap / shard_map of
      the train loop; at eval the moving averages are used either way.
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
               fixup: bool = False,
               depths: Optional[Sequence[int]] = None,
               widths: Optional[Sequence[int]] = None,
               stem_width: Optional[int] = None,
               bn_cross_replica: bool = False,
               alpha: Optional[float] = None, se_ratio: Optional[float] = None,
               conv_impl: Optional[str] = None, name: str = 'ResNet'):
    super().__init__(name=name)
    kwargs = dict(variant=variant, norm=norm, block_order=block_order,
                  width=width, activation=activation, drop_rate=drop_rate,
                  stochdepth_rate=stochdepth_rate, zero_init_last=zero_init_last,
                  skipinit=skipinit, fixup=fixup, depths=depths, widths=widths,
                  stem_width=stem_width, bn_cross_replica=bn_cross_replica,
                  alpha=alpha, se_ratio=se_ratio)
    validate_config(kwargs, num_classes=num_classes)
    self.num_classes = num_classes
    self.variant = variant
    self.norm = norm
    self.block_order = block_order
    self.activation_name = activation
    self.activation = nfnn.get_activation(activation, scaled=False)
    self.drop_rate = float(drop_rate or 0.0)
    self.stochdepth_rate = float(stochdepth_rate or 0.0)
    self.zero_init_last = bool(zero_init_last)
    self.skipinit = bool(skipinit)
    self.fixup = bool(fixup)
    self.bn_cross_replica = bool(bn_cross_replica)
    self.depths = tuple(depths) if depths is not None else tuple(VARIANTS[variant])
    base_widths = tuple(widths) if widths is not None else DEFAULT_WIDTHS
    self.widths = tuple(max(4, int(round(w * width))) for w in base_widths)
    base_stem = stem_width if stem_width is not None else DEFAULT_STEM_WIDTH
    self.stem_width = max(1, int(round(base_stem * width)))

    # Submodules are built here (not in __call__) so parameter paths read
    # 'ResNet/~/res_block_3/~/conv1/w', the same style as the official models.
    if self.fixup:  # Fixup: the stem conv's bias is the scalar bias1
      self.initial_conv = hk.Conv2D(self.stem_width, 7, stride=2, padding='SAME',
                                    with_bias=False, w_init=_he_init(), name='initial_conv')
    else:
      self.initial_conv = _make_conv(norm, self.stem_width, 7, 2, 'initial_conv')
    self.blocks = []
    self.is_transition = []
    in_ch = self.stem_width
    num_blocks = sum(self.depths)
    for stage, (depth, out_ch) in enumerate(zip(self.depths, self.widths)):
      for block in range(depth):
        index = len(self.blocks)
        stride = 2 if (stage > 0 and block == 0) else 1
        rate = self.stochdepth_rate * index / num_blocks
        if self.fixup:
          self.blocks.append(FixupBlock(in_ch, out_ch, stride, num_blocks,
                                        self.activation, rate, name='res_block'))
        else:
          self.blocks.append(ResBlock(
              in_ch=in_ch, out_ch=out_ch, stride=stride, norm=norm,
              activation=self.activation, block_order=block_order,
              skipinit=self.skipinit, zero_init_last=self.zero_init_last,
              stochdepth_rate=rate, bn_cross_replica=self.bn_cross_replica,
              name='res_block'))
        self.is_transition.append(1.0 if block == 0 else 0.0)
        in_ch = out_ch
    self.final_norm = None if self.fixup else _make_norm(norm, in_ch, 'final_norm',
                                                            self.bn_cross_replica)
    # Fixup initialises the classifier to zero (Zhang et al. 2019, sec. 3).
    fc_init = jnp.zeros if self.fixup else hk.initializers.RandomNormal(0.01)
    self.linear = hk.Linear(num_classes, w_init=fc_init, name='linear')

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
    if self.fixup:  # post-activation stem
      out = self.activation(out + _scalar('bias1', out.dtype))
    out = nfnn.max_pool(out, 3, 2, 'SAME')  # hk.max_pool's numerics, faster gradient
    stats = []
    for block, transition in zip(self.blocks, self.is_transition):
      out, res = block(out, is_training)
      if return_metrics:
        # The analytic expected variance is an NF-model notion: NaN here.
        stats.append(dict(nfnn.signal_stats(out), res_avg_var=nfnn.avg_channel_var(res),
                          expected_var=jnp.nan, is_transition=transition))

    if self.fixup:
      pass  # post-activation blocks end activated; no head norm
    elif self.block_order == 'bn_relu_conv':
      out = self.activation(_apply_norm(self.final_norm, out, is_training))
    else:
      out = _apply_norm(self.final_norm, self.activation(out), is_training)
    pooled = jnp.mean(out, axis=(1, 2))
    if is_training and self.drop_rate > 0.0:
      pooled = hk.dropout(hk.next_rng_key(), self.drop_rate, pooled)
    if self.fixup:
      pooled = pooled + _scalar('bias2', pooled.dtype)
    logits = self.linear(pooled)
    outputs = {'logits': logits.astype(jnp.float32)}
    if return_metrics:
      outputs['spp'] = nfnn.stack_block_stats(stats)
    return outputs


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
           'stochdepth_rate', 'zero_init_last', 'skipinit', 'fixup', 'depths', 'widths',
           'stem_width', 'bn_cross_replica', 'alpha', 'se_ratio', 'conv_impl'}
  for field in kw:
    if field not in known:
      bad(field, kw[field], f'one of the fields {sorted(known)}')

  if num_classes is not None and (not isinstance(num_classes, (int, np.integer))
                                  or num_classes < 1):
    raise ValueError(f'num_classes={num_classes!r} must be a positive int')
  chosen = {}  # the choice fields, None -> the constructor default
  for field, default, allowed in (('variant', 'ResNet50', VARIANTS), ('norm', 'batchnorm', NORMS),
                                  ('block_order', 'bn_relu_conv', BLOCK_ORDERS),
                                  ('activation', 'relu', ACTIVATION_NAMES)):
    chosen[field] = kw.get(field) or default
    if chosen[field] not in allowed:
      bad(field, chosen[field], list(allowed))
  variant, norm, order = chosen['variant'], chosen['norm'], chosen['block_order']
  width = kw.get('width')
  if width is not None and (not is_number(width) or width <= 0):
    bad('width', width, 'a positive number')
  for field in ('drop_rate', 'stochdepth_rate'):
    v = kw.get(field)
    if v is not None and (not is_number(v) or not 0.0 <= v < 1.0):
      bad(field, v, 'a number in [0, 1)')
  for field in ('zero_init_last', 'skipinit', 'fixup', 'bn_cross_replica'):
    v = kw.get(field)
    if v is not None and not isinstance(v, (bool, np.bool_)):
      bad(field, v, 'True or False')
  if kw.get('bn_cross_replica') and norm != 'batchnorm':
    bad('bn_cross_replica', True,
        f"False with norm={norm!r} (it synchronizes BatchNorm statistics across devices; "
        "only norm='batchnorm' has batch statistics)")
  if kw.get('fixup'):
    if norm != 'none':
      bad('norm', norm, "'none' with fixup=True (Fixup replaces the normalizer)")
    for field in ('skipinit', 'zero_init_last'):
      if kw.get(field):
        bad(field, True, 'False with fixup=True (Fixup zero-initialises the last conv '
            'of every branch itself)')
    if order != 'bn_relu_conv':
      bad('block_order', order, "the default with fixup=True (Fixup blocks are "
          'post-activation; the order field would change nothing)')
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
