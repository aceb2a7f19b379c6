"""Max pooling with a gradient that XLA:CPU computes quickly.

The ResNet stems' 3x3/2 max pool is differentiated by JAX into a
`select_and_scatter_add`, which XLA:CPU expands (SelectAndScatterExpander)
into iotas over the padded input, a variadic (value, index) reduce-window and
a scatter. For the quickstart network (batch 256, 24x24x16 maps) that took
~95 ms of a ~320 ms train step on this machine, more than any convolution
(profile in docs/performance.md). :func:`max_pool` computes the same forward
(`lax.reduce_window`, bit for bit) and the same gradient as JAX's, bit for
bit -- all of an output's gradient goes to the FIRST maximal element of its
window in row-major order, as `select_and_scatter` with `>=` selection does
--, from elementwise loops XLA fuses: one pass finds each output's first
maximal window offset (`kh * kw` strided slices of the padded input compared
with the output), one pass per stride phase of the input sums the shifted
output gradients of the offsets landing in that phase, and one copy
interleaves the phases.
"""
import functools
from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

Padding = Union[str, Sequence[Tuple[int, int]]]


def _explicit(padding: Padding, size: int, window: int, stride: int) -> Tuple[int, int]:
  if not isinstance(padding, str):
    return tuple(padding)
  if padding == 'VALID':
    return (0, 0)
  if padding != 'SAME':
    raise ValueError(f"max_pool: padding must be 'SAME', 'VALID' or explicit pairs, "
                     f'got {padding!r}')
  out = -(-size // stride)
  total = max((out - 1) * stride + window - size, 0)
  return (total // 2, total - total // 2)


def max_pool(x: jnp.ndarray, window: Union[int, Sequence[int]] = 3,
             stride: Union[int, Sequence[int]] = 2, padding: Padding = 'SAME') -> jnp.ndarray:
  """Spatial max pool of an NHWC array; padding counts as -inf.

  Same output and gradient as `hk.max_pool(x, (1, k, k, 1), (1, s, s, 1),
  padding)` / `lax.reduce_window(x, -inf, lax.max, ...)` (with explicit
  pairs: PyTorch's `MaxPool2d(k, s, padding=p)`), for finite inputs.

  Args:
    x: [N, H, W, C].
    window: int or (kh, kw).
    stride: int or (sh, sw).
    padding: 'SAME', 'VALID' or [(lo, hi), (lo, hi)] for H and W.
  """
  win = (window, window) if isinstance(window, int) else tuple(window)
  strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
  if isinstance(padding, str):
    pads = tuple(_explicit(padding, n, k, s) for n, k, s in zip(x.shape[1:3], win, strides))
  else:
    pads = tuple(tuple(p) for p in padding)
  return _max_pool(x, win, strides, pads)


def _forward(x, win, strides, pads):
  return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1,) + win + (1,),
                           (1,) + strides + (1,), ((0, 0),) + pads + ((0, 0),))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, win, strides, pads):
  return _forward(x, win, strides, pads)


def _max_pool_fwd(x, win, strides, pads):
  y = _forward(x, win, strides, pads)
  return y, (x, y)


def _max_pool_bwd(win, strides, pads, res, g):
  x, y = res
  n, h, w, c = x.shape
  (plo_h, phi_h), (plo_w, phi_w) = pads
  xp = jnp.pad(x, ((0, 0), (plo_h, phi_h), (plo_w, phi_w), (0, 0)),
               constant_values=-jnp.inf)
  hp, wp = xp.shape[1], xp.shape[2]
  oh, ow = y.shape[1], y.shape[2]
  sh, sw = strides
  offsets = [(i, j) for i in range(win[0]) for j in range(win[1])]
  # The window offset each output takes its value from: the first maximum.
  first = jnp.full(y.shape, len(offsets), jnp.int32)
  for k in reversed(range(len(offsets))):
    i, j = offsets[k]
    xs = lax.slice(xp, (0, i, j, 0), (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c),
                   (1, sh, sw, 1))
    first = jnp.where(xs == y, k, first)
  zero = jnp.zeros((), g.dtype)
  # The padded input's gradient, one stride phase (p, q) at a time: offset
  # (i, j) = (p + sh*m, q + sw*n) sends output (a, b)'s gradient to phase
  # position (a + m, b + n). Summed with m, n descending, every element gets
  # its windows' gradients in row-major output order, as the scatter of
  # JAX's select_and_scatter_add adds them (identical float rounding).
  hh, wh = -(-hp // sh), -(-wp // sw)
  rows = []
  for p in range(sh):
    cols = []
    for q in range(sw):
      acc = jnp.zeros((n, hh, wh, c), g.dtype)
      for i in reversed(range(p, win[0], sh)):
        for j in reversed(range(q, win[1], sw)):
          m, nn = (i - p) // sh, (j - q) // sw
          part = jnp.where(first == offsets.index((i, j)), g, zero)
          acc = acc + jnp.pad(part, ((0, 0), (m, hh - m - oh), (nn, wh - nn - ow), (0, 0)))
      cols.append(acc)
    rows.append(jnp.stack(cols, axis=3))            # [n, hh, wh, sw, c]
  dxp = jnp.stack(rows, axis=2).reshape(n, hh * sh, wh * sw, c)  # [n, hh, sh, wh, sw, c]
  return (dxp[:, plo_h:plo_h + h, plo_w:plo_w + w, :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
