"""nfnet_jax.nn.max_pool: the forward and the gradient of JAX's own max pool, bit for bit.

The reference is `lax.reduce_window(max)` differentiated by JAX
(`select_and_scatter_add`), and for the gradient's semantics, independently,
a numpy loop that hands each output's gradient to the first maximal
element of its window (row-major), with padding as -inf. Inputs have ties
(rounded values) so the first-maximum rule is exercised.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nfnet_jax import nn as nfnn

CASES = [
    # (shape, window, stride, padding)
    ((3, 24, 24, 4), 3, 2, 'SAME'),
    ((2, 25, 23, 2), 3, 2, 'SAME'),
    ((2, 9, 9, 3), 3, 2, ((1, 1), (1, 1))),
    ((2, 8, 8, 2), 2, 2, 'VALID'),
    ((2, 7, 6, 1), 3, 1, 'SAME'),
    ((1, 11, 10, 2), (3, 2), (2, 3), 'SAME'),
]


def _pairs(padding, shape, win, stride):
  if not isinstance(padding, str):
    return tuple(padding)
  return tuple(tuple(p) for p in lax.padtype_to_pads(shape[1:3], win, stride, padding))


def _numpy_grad(x, g, win, stride, pads):
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
  dx = np.zeros_like(xp, np.float64)
  n, oh, ow, c = g.shape
  for b in range(n):
    for i in range(oh):
      for j in range(ow):
        for ch in range(c):
          patch = xp[b, i * stride[0]:i * stride[0] + win[0],
                     j * stride[1]:j * stride[1] + win[1], ch]
          a = np.argmax(patch)  # first maximum, row-major
          dx[b, i * stride[0] + a // win[1], j * stride[1] + a % win[1], ch] += g[b, i, j, ch]
  return dx[:, pads[0][0]:pads[0][0] + x.shape[1], pads[1][0]:pads[1][0] + x.shape[2]]


@pytest.mark.parametrize('shape,window,stride,padding', CASES)
def test_max_pool_forward_and_gradient_equal_jax(shape, window, stride, padding):
  win = (window, window) if isinstance(window, int) else window
  strides = (stride, stride) if isinstance(stride, int) else stride
  pads = _pairs(padding, shape, win, strides)
  rng = np.random.default_rng(sum(shape))
  x = rng.standard_normal(shape).astype(np.float32)
  x[:, ::2] = np.round(x[:, ::2])  # ties
  x = jnp.asarray(x)
  ref = lambda a: lax.reduce_window(a, -jnp.inf, lax.max, (1,) + win + (1,),
                                    (1,) + strides + (1,), ((0, 0),) + pads + ((0, 0),))
  ours = lambda a: nfnn.max_pool(a, window, stride, padding)
  y_ref, vjp_ref = jax.vjp(ref, x)
  y, vjp = jax.vjp(jax.jit(ours), x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
  g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  (d,), (d_ref,) = vjp(g), vjp_ref(g)
  np.testing.assert_array_equal(np.asarray(d), np.asarray(d_ref))
  np.testing.assert_allclose(np.asarray(d), _numpy_grad(np.asarray(x), np.asarray(g), win,
                                                       strides, pads), rtol=1e-6, atol=1e-6)


def test_max_pool_matches_haiku_in_a_model_stem():
  import haiku as hk  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 12, 12, 3)), jnp.float32)
  f = lambda a: jnp.sum(jnp.sin(nfnn.max_pool(a, 3, 2, 'SAME')))
  f_ref = lambda a: jnp.sum(jnp.sin(hk.max_pool(a, (1, 3, 3, 1), (1, 2, 2, 1), 'SAME')))
  np.testing.assert_array_equal(np.asarray(jax.grad(f)(x)), np.asarray(jax.grad(f_ref)(x)))


def test_max_pool_rejects_unknown_padding():
  with pytest.raises(ValueError, match='padding'):
    nfnn.max_pool(jnp.zeros((1, 4, 4, 1)), 3, 2, 'FULL')
