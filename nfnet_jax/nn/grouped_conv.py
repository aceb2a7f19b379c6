"""Grouped 2-D convolution with a backend-selected implementation.

Kernels always keep the official HWIO layout with I = in_channels / groups,
so official checkpoints load whatever implementation runs.

NOTE: initial version (owner: performance work, issue 8) — only the plain XLA
path and a per-group split path; the fast CPU path will be tuned there.
"""
from typing import Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'xla', 'split')


def resolve_impl(impl: str) -> str:
  """Maps 'auto' to the implementation that is fastest on the default backend."""
  if impl not in IMPLS:
    raise ValueError(f'conv_impl must be one of {IMPLS}, got {impl!r}')
  if impl == 'auto':
    return 'split' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def grouped_conv(x: jnp.ndarray, w: jnp.ndarray, stride: Union[int, Sequence[int]] = 1,
                 padding: str = 'SAME', groups: int = 1, impl: str = 'auto') -> jnp.ndarray:
  """NHWC x HWIO convolution with `groups` feature groups.

  Args:
    x: input [N, H, W, C].
    w: kernel [kh, kw, C // groups, O].
    stride: int or (sh, sw).
    padding: 'SAME' or 'VALID' (TF semantics).
    groups: number of feature groups (C and O must be divisible by it).
    impl: 'auto' | 'xla' (feature_group_count) | 'split' (one dense conv per group).
  """
  strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
  dn = ('NHWC', 'HWIO', 'NHWC')
  impl = resolve_impl(impl)
  if groups == 1 or impl == 'xla':
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn,
                                    feature_group_count=groups)
  cin_g = w.shape[2]
  cout_g = w.shape[3] // groups
  outs = [lax.conv_general_dilated(x[..., g * cin_g:(g + 1) * cin_g],
                                   w[..., g * cout_g:(g + 1) * cout_g], strides, padding,
                                   dimension_numbers=dn)
          for g in range(groups)]
  return jnp.concatenate(outs, axis=-1)
