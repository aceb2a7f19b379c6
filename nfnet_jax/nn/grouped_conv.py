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


def _conv1x1_as_matmul(x: jnp.ndarray, w: jnp.ndarray, strides) -> jnp.ndarray:
  """A 1x1 conv (no padding under SAME or VALID) as [N*H'*W', C] @ [C, O]."""
  if strides != (1, 1):
    x = x[:, ::strides[0], ::strides[1], :]
  n, h, wd, c = x.shape
  y = lax.dot_general(x.reshape(n * h * wd, c), w.reshape(c, w.shape[-1]),
                      (((1,), (0,)), ((), ())))
  return y.reshape(n, h, wd, w.shape[-1])
