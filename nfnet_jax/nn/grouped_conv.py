"""Grouped 2-D convolution with a backend-selected implementation.

Kernels always keep the official HWIO layout with I = in_channels / groups,
so official checkpoints load whatever implementation runs.

Why two implementations: XLA:CPU lowers `feature_group_count > 1` (and its
gradients, above all the kernel gradient) to a slow generic loop, while a
dense convolution goes to the optimised Eigen/oneDNN kernels. Running each
group as its own dense convolution and concatenating is 8-25x faster on CPU
for NFNet-F0's grouped 3x3 convs, forward + backward
(`benchmarks/grouped_conv_micro.py`; figures in docs/performance.md). Other
CPU formulations were measured and lost to the per-group split: a
block-diagonal dense kernel (G times the FLOPs), im2col + batched matmul, vmap
over groups (JAX batches it back into `feature_group_count`), and a
space-to-depth rewrite of the strided convs.

'auto' follows a per-backend table, AUTO_IMPL, whose entries come from
measurements of the whole F0 train step (`benchmarks/gpu_check.py` times
both implementations and prints which one won and whether 'auto' agrees).

The CPU path also runs 1x1 convolutions (groups == 1) as one matrix
multiplication over the flattened N*H*W rows: XLA:CPU computes a 1x1 conv's
kernel gradient as a convolution whose window is the whole feature map, after
transposing both operands, while the matmul's gradients are plain GEMMs with
transposed operands; fwd+bwd is ~2x faster on NFNet's 1x1 shapes.
"""
import functools
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'xla', 'split')

# 'auto' splits only up to this many groups: beyond it (depthwise-like convs)
# the number of small dense convs makes compile time and dispatch grow
# linearly in the group count, for convs that are cheap anyway.
MAX_SPLIT_GROUPS = 64

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')

# The CPU path ('split') runs a dense conv whose output has at most this many
# pixels per image as one matmul of the im2col patches: XLA:CPU's gradients
# of such convs are 3-8x slower than the matmul's (measured fwd + both
# gradients, CPU ms: 128 channels 3x3/2 on 4x4 maps at batch 256: 80 -> 11;
# 3x3 maps: 45 -> 10; 2x2 maps at batch 64, stride 1: 11.6 -> 2.6), while at
# 3x3 outputs and above the conv wins (6x6 -> 3x3, 64 channels: 6.5 vs 9.1).
MAX_IM2COL_OUTPUT_PIXELS = 4
# ... and a strided conv of at most this many input channels (the stems
# reading grey or RGB images) as a stride-1 conv of the space-to-depth input
# (s*s*C channels): XLA:CPU's forward of a 1-channel 7x7/2 conv is ~2.7x
# slower (batch 256 at 48 px: 25 -> 9 CPU ms); its input gradient stays XLA's,
# its kernel gradient is a matmul of the input patches (see the backward).
MAX_S2D_INPUT_CHANNELS = 4

# What 'auto' resolves to per backend, and the measurement behind it.
#   cpu: 'split', measured: F0's grouped 3x3 fwd+bwd 8-25x faster than
#     feature_group_count (benchmarks/grouped_conv_micro.py), whole F0 train
#     step 3.5-3.9x faster (benchmarks/timm_compare.py --impls auto,xla;
#     docs/performance.md, "CPU").
#   gpu: 'xla', NOT yet measured: cuDNN runs grouped convs natively, so the
#     one-kernel form is the expected winner, but no GPU was available when
#     this was written; benchmarks/gpu_check.py measures it (xla vs split on
#     the F0 train step) and prints the entry to set here.
#   tpu (and any other backend): 'xla', not measured.
AUTO_IMPL = {'cpu': 'split', 'gpu': 'xla', 'tpu': 'xla'}


def resolve_impl(impl: str, groups: Optional[int] = None) -> str:
  """Maps 'auto' to the implementation that is fastest on the default backend.

  Args:
    impl: one of IMPLS (config field `config.model.conv_impl`).
    groups: number of feature groups of the conv, if known (only 'auto'
      looks at it: more than MAX_SPLIT_GROUPS groups stay on 'xla').

  Returns:
    'xla' or 'split'.

  Raises:
    ValueError: for an unknown `impl`.
  """
  if impl not in IMPLS:
    raise ValueError(
        f'config.model.conv_impl={impl!r} is not supported; allowed: {IMPLS}')
  if impl == 'auto':
    impl = AUTO_IMPL.get(jax.default_backend(), 'xla')
    if impl == 'split' and groups is not None and groups > MAX_SPLIT_GROUPS:
      return 'xla'
  return impl


def grouped_conv(x: jnp.ndarray,
                 w: jnp.ndarray,
                 stride: Union[int, Sequence[int]] = 1,
                 padding: Union[str, Sequence[tuple[int, int]]] = 'SAME',
                 groups: int = 1,
                 impl: str = 'auto') -> jnp.ndarray:
  """NHWC x HWIO convolution with `groups` feature groups.

  Every implementation computes the same function as
  `lax.conv_general_dilated(..., feature_group_count=groups)` (outputs and
  gradients agree to float rounding), so `impl` is a pure speed choice.

  Args:
    x: input [N, H, W, C].
    w: kernel [kh, kw, C // groups, O]; O must be divisible by `groups`.
    stride: int or (sh, sw).
    padding: 'SAME' or 'VALID' (TF semantics) or explicit [(lo, hi), (lo, hi)].
    groups: number of feature groups.
    impl: 'auto' (fast path for the backend) | 'xla' (feature_group_count) |
      'split' (the CPU fast path: one dense conv per group, concatenated, and
      1x1 convs as matrix multiplications).

  Returns:
    The output [N, H', W', O].

  Raises:
    ValueError: for shapes inconsistent with `groups` or an unknown `impl`.
  """
  strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
  if groups < 1:
    raise ValueError(f'groups must be >= 1, got {groups}')
  c, cin_g, o = x.shape[-1], w.shape[2], w.shape[3]
  if cin_g * groups != c or o % groups:
    raise ValueError(
        f'grouped_conv: input channels {c} and kernel {tuple(w.shape)} do not '
        f'fit groups={groups} (need kernel I = C / groups and O divisible by '
        'groups)')
  impl = resolve_impl(impl, groups)
  if impl == 'split' and groups == 1 and w.shape[:2] == (1, 1) and isinstance(padding, str):
    return _conv1x1_as_matmul(x, w, strides)
  if impl == 'split' and groups == 1:
    pads = explicit_padding(padding, x.shape[1:3], w.shape[:2], strides)
    out_hw = [(n + lo + hi - k) // s + 1
              for n, (lo, hi), k, s in zip(x.shape[1:3], pads, w.shape[:2], strides)]
    if out_hw[0] * out_hw[1] <= MAX_IM2COL_OUTPUT_PIXELS:
      return _conv_as_im2col_matmul(x, w, strides, pads, out_hw)
    if c <= MAX_S2D_INPUT_CHANNELS and strides[0] == strides[1] > 1:
      return _strided_conv_s2d(x, w, strides[0], tuple(pads))
  if groups == 1 or impl == 'xla':
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=_DIMENSION_NUMBERS,
        feature_group_count=groups)
  cout_g = o // groups
  outs = [
      lax.conv_general_dilated(
          x[..., g * cin_g:(g + 1) * cin_g], w[..., g * cout_g:(g + 1) * cout_g],
          strides, padding, dimension_numbers=_DIMENSION_NUMBERS)
      for g in range(groups)
  ]
  return jnp.concatenate(outs, axis=-1)


def explicit_padding(padding, spatial, kernel, strides) -> list:
  """'SAME' / 'VALID' (TF semantics) or explicit pairs -> [(lo, hi), (lo, hi)]."""
  if not isinstance(padding, str):
    return [tuple(p) for p in padding]
  if padding == 'VALID':
    return [(0, 0), (0, 0)]
  out = []
  for n, k, s in zip(spatial, kernel, strides):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    out.append((total // 2, total - total // 2))
  return out


def _patch_columns(x, kernel_hw, strides, pads, out_hw) -> list:
  """The conv's input seen by each kernel tap (i, j), row-major: kh*kw arrays [N, H', W', C]."""
  (kh, kw), (sh, sw), (oh, ow) = kernel_hw, strides, out_hw
  n, c = x.shape[0], x.shape[-1]
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  return [lax.slice(xp, (0, i, j, 0), (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c),
                    (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]


def _conv_as_im2col_matmul(x, w, strides, pads, out_hw) -> jnp.ndarray:
  """A dense conv as [N*H'*W', kh*kw*C] patches @ [kh*kw*C, O] (HWIO order)."""
  kh, kw, c, o = w.shape
  n, (oh, ow) = x.shape[0], out_hw
  cols = _patch_columns(x, (kh, kw), strides, pads, out_hw)
  patches = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]
  y = lax.dot_general(patches.reshape(n * oh * ow, kh * kw * c), w.reshape(kh * kw * c, o),
                      (((1,), (0,)), ((), ())))
  return y.reshape(n, oh, ow, o)


def _xla_conv(x, w, stride, pads):
  return lax.conv_general_dilated(x, w, (stride, stride), pads,
                                  dimension_numbers=_DIMENSION_NUMBERS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _strided_conv_s2d(x, w, stride, pads):
  """A stride-s conv with few input channels; forward through space-to-depth.

  The padded input is cut into its s x s phases, stacked as s*s*C channels,
  and convolved (stride 1, VALID) with the kernel zero-padded to a multiple
  of s and rearranged the same way: the same sums as the strided conv. The
  input gradient is that of the strided conv (XLA's is fast for it); the
  kernel gradient one matmul of the input patches with the output gradient.
  """
  n, h, wd, c = x.shape
  kh, kw, _, o = w.shape
  s = stride
  (plo_h, phi_h), (plo_w, phi_w) = pads
  oh, ow = (h + plo_h + phi_h - kh) // s + 1, (wd + plo_w + phi_w - kw) // s + 1
  kh2, kw2 = -(-kh // s), -(-kw // s)
  th, tw = s * (oh + kh2 - 1), s * (ow + kw2 - 1)  # padded size the phases need
  xp = jnp.pad(x, ((0, 0), (plo_h, max(th - h - plo_h, 0)), (plo_w, max(tw - wd - plo_w, 0)),
                   (0, 0)))[:, :th, :tw, :]
  xs = xp.reshape(n, th // s, s, tw // s, s, c).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(n, th // s, tw // s, s * s * c)
  wp = jnp.pad(w, ((0, s * kh2 - kh), (0, s * kw2 - kw), (0, 0), (0, 0)))
  ws = wp.reshape(kh2, s, kw2, s, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(kh2, kw2, s * s * c, o)
  return lax.conv_general_dilated(xs, ws, (1, 1), 'VALID', dimension_numbers=_DIMENSION_NUMBERS)


def _strided_conv_s2d_fwd(x, w, stride, pads):
  return _strided_conv_s2d(x, w, stride, pads), (x, w)


def _strided_conv_s2d_bwd(stride, pads, res, g):
  x, w = res
  _, vjp = jax.vjp(lambda a: _xla_conv(a, w, stride, list(pads)), x)
  (dx,) = vjp(g)
  # The kernel gradient as one matmul of the patches with g: XLA:CPU computes
  # it as a convolution whose window is the whole output map, ~5 GFLOP/s on
  # the quickstart's 1-channel 7x7/2 stem (batch 256 at 48 px: 46-54 CPU ms
  # vs 19-24 for this; patches stacked along a leading axis, which XLA
  # builds ~6x faster than a concatenation of 1-channel columns).
  kh, kw, c, o = w.shape
  n, oh, ow = g.shape[:3]
  cols = _patch_columns(x, (kh, kw), (stride, stride), pads, (oh, ow))
  patches = jnp.moveaxis(jnp.stack(cols), -1, 1).reshape(kh * kw * c, n * oh * ow)
  dw = lax.dot_general(patches, g.reshape(n * oh * ow, o), (((1,), (0,)), ((), ())))
  return dx, dw.reshape(kh, kw, c, o)


_strided_conv_s2d.defvjp(_strided_conv_s2d_fwd, _strided_conv_s2d_bwd)


def _conv1x1_as_matmul(x: jnp.ndarray, w: jnp.ndarray, strides) -> jnp.ndarray:
  """A 1x1 conv (no padding under SAME or VALID) as [N*H'*W', C] @ [C, O]."""
  if strides != (1, 1):
    x = x[:, ::strides[0], ::strides[1], :]
  n, h, wd, c = x.shape
  y = lax.dot_general(x.reshape(n * h * wd, c), w.reshape(c, w.shape[-1]),
                      (((1,), (0,)), ((), ())))
  return y.reshape(n, h, wd, w.shape[-1])
