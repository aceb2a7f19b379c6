"""Squeeze-excite, efficient channel attention, stochastic depth, SkipInit gain."""
import math
from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp


class SqueezeExcite(hk.Module):
  """Squeeze + excite: mean over H, W -> Linear -> ReLU -> Linear -> sigmoid.

  Returns the gate of shape [N, 1, 1, out_ch] (the caller multiplies, NFNet
  blocks use `2 * gate * x`). Official names: `squeeze_excite/~/linear` and
  `squeeze_excite/~/linear_1`.
  """

  def __init__(self, in_ch: int, out_ch: int, se_ratio: Optional[float] = 0.5,
               hidden_ch: Optional[int] = None, name: Optional[str] = None):
    """Builds the module.

    Args:
      in_ch: channels of the input.
      out_ch: channels of the gate.
      se_ratio: hidden width = max(1, int(in_ch * se_ratio)).
      hidden_ch: explicit hidden width, used when `se_ratio` is None.
      name: Haiku module name (default 'squeeze_excite').
    """
    super().__init__(name=name)
    if se_ratio is None:
      if hidden_ch is None:
        raise ValueError('SqueezeExcite needs se_ratio or hidden_ch')
      self.hidden_ch = hidden_ch
    else:
      self.hidden_ch = max(1, int(in_ch * se_ratio))
    self.in_ch, self.out_ch = in_ch, out_ch
    # Created here (not in __call__) so the names are `squeeze_excite/~/linear`.
    self.fc0 = hk.Linear(self.hidden_ch, with_bias=True)
    self.fc1 = hk.Linear(self.out_ch, with_bias=True)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = jnp.mean(x, axis=(1, 2))
    h = self.fc1(jax.nn.relu(self.fc0(h)))
    return jax.nn.sigmoid(h)[:, None, None, :]


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
  """ECA's adaptive 1-D kernel size for `channels` (Wang et al. 2020, eq. 12).

  `t = int(|log2(C) + beta| / gamma)`, rounded up to the next odd number and
  at least 3 (the rule timm's EcaModule uses): C = 256, 512 and 1536 all give 5.
  """
  t = int(abs(math.log2(channels) + beta) / gamma)
  return max(t if t % 2 else t + 1, 3)


class EfficientChannelAttention(hk.Module):
  """ECA gate: mean over H, W -> 1-D conv across channels (no bias) -> sigmoid.

  The conv slides one shared kernel of odd size k over the channel axis with
  zero padding (k-1)/2 (cross-correlation, as PyTorch's Conv1d), so the gate
  costs k parameters (`w`, shape [k]). Returns the gate [N, 1, 1, C]; NF
  blocks use `2 * gate * x`, like squeeze-excite.
  """

  def __init__(self, channels: int, kernel_size: Optional[int] = None,
               name: Optional[str] = 'eca'):
    super().__init__(name=name)
    self.channels = channels
    self.kernel_size = kernel_size or eca_kernel_size(channels)
    if self.kernel_size % 2 != 1:
      raise ValueError(f'ECA kernel size must be odd, got {self.kernel_size}')

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = self.kernel_size
    # PyTorch's Conv1d default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = k.
    w = hk.get_parameter('w', (k,), x.dtype,
                         init=hk.initializers.VarianceScaling(1.0 / 3, 'fan_in', 'uniform'))
    y = jnp.mean(x, axis=(1, 2))
    pad = (k - 1) // 2
    yp = jnp.pad(y, ((0, 0), (pad, pad)))
    c = y.shape[-1]
    y = sum(w[j] * yp[:, j:j + c] for j in range(k))
    return jax.nn.sigmoid(y)[:, None, None, :]


class StochDepth(hk.Module):
  """Per-example stochastic depth (drops a whole residual branch).

  Each example's branch is kept with probability `1 - drop_rate` and, as in
  the official code, NOT rescaled by `1 / keep` (unless `scale_by_keep`), so
  the expected branch output shrinks during training. Identity at eval.
  """

  def __init__(self, drop_rate: float, scale_by_keep: bool = False,
               name: Optional[str] = None):
    super().__init__(name=name)
    if not 0.0 <= drop_rate < 1.0:
      raise ValueError(f'StochDepth drop_rate must be in [0, 1), got {drop_rate}')
    self.drop_rate = drop_rate
    self.scale_by_keep = scale_by_keep

  def __call__(self, x: jnp.ndarray, is_training: bool) -> jnp.ndarray:
    if not is_training or self.drop_rate == 0.0:
      return x
    keep_prob = 1.0 - self.drop_rate
    r = jax.random.uniform(hk.next_rng_key(), (x.shape[0],) + (1,) * (x.ndim - 1))
    # floor(keep + U[0,1)) is 1 with probability keep.
    mask = jnp.floor(keep_prob + r).astype(x.dtype)
    if self.scale_by_keep:
      x = x / keep_prob
    return x * mask


def stoch_depth_or_none(rate: Optional[float]) -> Optional[StochDepth]:
  """A block's `StochDepth(rate)`, or None where the rate drops nothing (None or 0)."""
  return StochDepth(rate) if rate is not None and 0.0 < rate < 1.0 else None


def skip_gain(dtype=jnp.float32, init=jnp.zeros) -> jnp.ndarray:
  """The SkipInit scalar `skip_gain` (shape (), init 0) of the current module."""
  return hk.get_parameter('skip_gain', (), dtype, init=init)
