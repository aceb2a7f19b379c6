"""Scaled weight-standardized convolution (official numerics; timm's as options).

Two forms of the eps guard exist in the wild: the official code floors the
per-unit `N * var` (`rsqrt(max(N var, 1e-4))`), timm's `ScaledStdConv2d`
adds eps to the variance (`rsqrt(N (var + 1e-5))`). Weights converted from
timm reproduce timm's outputs only with its form (`eps_form='add'`).
"""
from typing import Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from nfnet_jax.nn.grouped_conv import grouped_conv
from nfnet_jax.nn.ws_fused import standardize_weight_fused

# Floor on `var * fan_in` (not added to it), as in the official code.
WS_EPS = 1e-4
# Added to `var` by timm's ScaledStdConv2d in its NF models (NfCfg.std_conv_eps).
TIMM_WS_EPS = 1e-5
EPS_FORMS = ('floor', 'add')
# 'SAME': TF/official (asymmetric at stride 2); 'symmetric': PyTorch/timm's
# `((stride - 1) + (k - 1)) // 2` on both sides.
PADDINGS = ('SAME', 'VALID', 'symmetric')


def symmetric_padding(kernel_shape: Sequence[int], stride: Sequence[int]
                      ) -> list:
  """timm's `get_padding` per spatial dim, as explicit (lo, hi) pairs."""
  return [((s - 1) + (k - 1)) // 2 for k, s in zip(kernel_shape, stride)]


def _explicit_padding(padding, kernel_shape, stride):
  if padding == 'symmetric':
    return [(p, p) for p in symmetric_padding(kernel_shape, stride)]
  return padding
# Added to the kernel variance by plain (unscaled) WS. BiT uses 1e-10: the
# per-unit kernel variance at He init is ~2/fan_in (~4e-4 for a 3x3x512
# kernel), so an eps like 1e-5 would already bias the standardisation by ~1%.
PLAIN_WS_EPS = 1e-10


def standardize_weight(w: jnp.ndarray, gain: jnp.ndarray,
                       eps: float = WS_EPS, eps_form: str = 'floor') -> jnp.ndarray:
  """Scaled Weight Standardization of an HWIO kernel.

  `w_hat = gain * (w - mean) / sqrt(max(var * fan_in, eps))` ('floor') or
  `gain * (w - mean) / sqrt((var + eps) * fan_in)` ('add', timm), with mean and
  variance taken per output unit over its fan-in (axes 0, 1, 2). The shift is
  fused the way the official code does it (`w*scale - mean*scale`) so the
  rounding matches official checkpoints bit for bit as far as XLA allows.

  Args:
    w: kernel [kh, kw, in_per_group, out].
    gain: per-output gain [out].
    eps: floor on `var * fan_in` ('floor') or added to `var` ('add').
    eps_form: 'floor' (official) or 'add' (timm).

  Returns:
    The standardized kernel, same shape and dtype as `w`.
  """
  if eps_form not in EPS_FORMS:
    raise ValueError(f'eps_form must be one of {EPS_FORMS}, got {eps_form!r}')
  mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(w, axis=(0, 1, 2), keepdims=True)
  fan_in = np.prod(w.shape[:-1])
  if eps_form == 'add':
    scale = jax.lax.rsqrt((var + eps) * fan_in) * gain
  else:
    scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, eps)) * gain
  return w * scale - mean * scale


class WSConv2D(hk.Module):
  """2-D convolution with Scaled Weight Standardization, gain and bias.

  Parameters (official names): `w` HWIO (VarianceScaling(1, fan_in, normal)),
  `gain` [O] (ones), `bias` [O] (zeros, always present). With `folded=True`
  (inference, see `nfnet_jax.export`) `w` already is the standardized kernel
  and there is no `gain`.
  """

  def __init__(self, output_channels: int,
               kernel_shape: Union[int, Sequence[int]] = 3,
               stride: Union[int, Sequence[int]] = 1,
               padding: str = 'SAME',
               feature_group_count: int = 1,
               conv_impl: str = 'auto',
               eps: float = WS_EPS,
               eps_form: str = 'floor',
               folded: bool = False,
               gain_init: float = 1.0,
               name: Optional[str] = None):
    """Builds the module.

    Args:
      output_channels: number of output channels O.
      kernel_shape: int or (kh, kw).
      stride: int or (sh, sw).
      padding: 'SAME' (official everywhere), 'VALID' or 'symmetric'
        (PyTorch-style, timm's own NF models).
      feature_group_count: number of groups; the kernel's input dim is C/groups.
      conv_impl: implementation of grouped convs, passed to `grouped_conv`.
      eps: floor on `var * fan_in` ('floor') or added to `var` ('add').
      eps_form: 'floor' (official) or 'add' (timm's ScaledStdConv2d).
      folded: `w` holds the standardized kernel already (no WS, no `gain`).
      gain_init: initial value of every `gain` (1 officially; 0 makes the
        conv output its bias at init, timm's SkipInit variant for the last
        conv of a residual branch).
      name: Haiku module name.
    """
    super().__init__(name=name)
    self.output_channels = output_channels
    self.kernel_shape = ((kernel_shape, kernel_shape) if isinstance(kernel_shape, int)
                         else tuple(kernel_shape))
    self.stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    self.padding = padding
    self.feature_group_count = feature_group_count
    self.conv_impl = conv_impl
    self.eps = eps
    if eps_form not in EPS_FORMS:
      raise ValueError(f'eps_form must be one of {EPS_FORMS}, got {eps_form!r}')
    if padding not in PADDINGS:
      raise ValueError(f'padding must be one of {PADDINGS}, got {padding!r}')
    self.eps_form = eps_form
    self.folded = folded
    self.gain_init = float(gain_init)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    in_ch = x.shape[-1]
    groups = self.feature_group_count
    if in_ch % groups or self.output_channels % groups:
      raise ValueError(f'{self.module_name}: channels in={in_ch} out={self.output_channels} '
                       f'are not divisible by feature_group_count={groups}')
    w_shape = self.kernel_shape + (in_ch // groups, self.output_channels)
    w_init = hk.initializers.VarianceScaling(1.0, 'fan_in', 'normal')
    w = hk.get_parameter('w', w_shape, x.dtype, init=w_init)
    if self.folded:
      w_hat = w
    else:
      gain = hk.get_parameter('gain', (self.output_channels,), x.dtype,
                              init=hk.initializers.Constant(self.gain_init))
      # Same forward numerics as standardize_weight, with a closed-form gradient
      # that is ~10x cheaper on XLA:CPU for large kernels (nn/ws_fused.py).
      w_hat = standardize_weight_fused(w, gain, self.eps, self.eps_form)
    padding = _explicit_padding(self.padding, self.kernel_shape, self.stride)
    out = grouped_conv(x, w_hat, self.stride, padding, groups, self.conv_impl)
    bias = hk.get_parameter('bias', (self.output_channels,), x.dtype, init=jnp.zeros)
    return out + bias


def standardize_weight_plain(w: jnp.ndarray, eps: float = PLAIN_WS_EPS) -> jnp.ndarray:
  """Plain Weight Standardization (Qiao et al. 2019) of an HWIO kernel.

  `w_hat = (w - mean) / sqrt(var + eps)` per output unit over its fan-in:
  no 1/sqrt(fan_in) factor and no gain, because a normalizer follows.
  """
  mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(w, axis=(0, 1, 2), keepdims=True)
  return (w - mean) * jax.lax.rsqrt(var + eps)


class StdConv2D(hk.Module):
  """Dense conv with plain Weight Standardization (BiT-style WS + GroupNorm).

  Kernel `w` HWIO (He init), SAME padding, no bias and no gain: the
  following normalizer fixes scale and offset.
  """

  def __init__(self, output_channels: int, kernel_shape: int, stride: int = 1,
               eps: float = PLAIN_WS_EPS, name: Optional[str] = None):
    super().__init__(name=name)
    self.output_channels = output_channels
    self.kernel_shape = kernel_shape
    self.stride = stride
    self.eps = eps

  def standardized_weight(self, in_channels: int, dtype) -> jnp.ndarray:
    shape = (self.kernel_shape, self.kernel_shape, in_channels, self.output_channels)
    # He et al. 2015 init (WS makes the scale irrelevant, the shape matters).
    w = hk.get_parameter('w', shape, dtype,
                         init=hk.initializers.VarianceScaling(2.0, 'fan_in', 'normal'))
    return standardize_weight_plain(w, self.eps)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    w = self.standardized_weight(x.shape[-1], x.dtype)
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(self.stride, self.stride), padding='SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
