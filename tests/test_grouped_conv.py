"""The fast grouped-conv paths compute the same function as feature_group_count.

Reference values come from `lax.conv_general_dilated(feature_group_count=g)`
(XLA's own grouped conv) and, independently, from a numpy loop over output
pixels; gradients from jax.grad of the reference.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nfnet_jax.nn import grouped_conv as gc

DN = ('NHWC', 'HWIO', 'NHWC')
RTOL = 1e-5


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


def _reference(x, w, stride, padding, groups):
  return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN,
                                  feature_group_count=groups,
                                  precision=lax.Precision.HIGHEST)


def _numpy_grouped_conv_same(x, w, stride, groups):
  """Direct loop implementation of TF 'SAME' grouped conv (independent of XLA)."""
  n, h, wd, c = x.shape
  kh, kw, ci, o = w.shape
  co = o // groups
  ho, wo = -(-h // stride), -(-wd // stride)
  ph = max((ho - 1) * stride + kh - h, 0)
  pw = max((wo - 1) * stride + kw - wd, 0)
  xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
  y = np.zeros((n, ho, wo, o), np.float64)
  for g in range(groups):
    wg = w[..., g * co:(g + 1) * co].reshape(kh * kw * ci, co)
    for i in range(ho):
      for j in range(wo):
        patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw,
                   g * ci:(g + 1) * ci].reshape(n, -1)
        y[:, i, j, g * co:(g + 1) * co] = patch @ wg
  return y


CASES = list(itertools.product(
    [1, 2],                 # stride
    [(1, 8), (2, 4), (3, 4), (4, 3)],  # (groups, channels per group)
    [(6, 6), (7, 5)],       # spatial size (odd sizes: asymmetric SAME pads)
))


@pytest.mark.parametrize('stride,gc_shape,hw', CASES)
def test_split_matches_feature_group_count(stride, gc_shape, hw):
  groups, cg = gc_shape
  c = groups * cg
  o = groups * 5  # output width per group differs from input width per group
  rng = np.random.default_rng(stride * 100 + groups * 10 + hw[0])
  x = jnp.asarray(rng.standard_normal((2, hw[0], hw[1], c)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, cg, o)), jnp.float32)
  ref = _reference(x, w, stride, 'SAME', groups)
  out = gc.grouped_conv(x, w, stride, 'SAME', groups, impl='split')
  assert out.shape == ref.shape
  assert _rel_err(out, ref) < RTOL

  ct = jnp.asarray(rng.standard_normal(ref.shape), jnp.float32)
  ref_dx, ref_dw = jax.grad(
      lambda a, b: jnp.vdot(_reference(a, b, stride, 'SAME', groups), ct), (0, 1))(x, w)
  dx, dw = jax.grad(
      lambda a, b: jnp.vdot(gc.grouped_conv(a, b, stride, 'SAME', groups, 'split'), ct),
      (0, 1))(x, w)
  assert _rel_err(dx, ref_dx) < RTOL
  assert _rel_err(dw, ref_dw) < RTOL


@pytest.mark.parametrize('impl', ['xla', 'split', 'auto'])
@pytest.mark.parametrize('stride', [1, 2])
def test_against_numpy_loop(impl, stride):
  rng = np.random.default_rng(7)
  groups, cg = 3, 4
  x = rng.standard_normal((2, 7, 6, groups * cg)).astype(np.float32)
  w = rng.standard_normal((3, 3, cg, groups * 2)).astype(np.float32)
  want = _numpy_grouped_conv_same(x.astype(np.float64), w.astype(np.float64), stride, groups)
  got = jax.jit(lambda a, b: gc.grouped_conv(a, b, stride, 'SAME', groups, impl))(x, w)
  assert _rel_err(got, want) < RTOL


def test_valid_padding_and_tuple_stride():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((1, 9, 8, 6)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)
  ref = lax.conv_general_dilated(x, w, (2, 1), 'VALID', dimension_numbers=DN,
                                 feature_group_count=2, precision=lax.Precision.HIGHEST)
  out = gc.grouped_conv(x, w, (2, 1), 'VALID', 2, 'split')
  assert _rel_err(out, ref) < RTOL


def test_grad_under_jit_with_bfloat16_inputs():
  # The split path must keep the dtype (bf16 compute in training).
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((1, 4, 4, 8)), jnp.bfloat16)
  w = jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.bfloat16)
  out = jax.jit(lambda a, b: gc.grouped_conv(a, b, 1, 'SAME', 2, 'split'))(x, w)
  assert out.dtype == jnp.bfloat16
  ref = _reference(x.astype(jnp.float32), w.astype(jnp.float32), 1, 'SAME', 2)
  assert _rel_err(out.astype(jnp.float32), ref) < 2e-2


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('padding', ['SAME', 'VALID'])
def test_1x1_matmul_path_matches_conv(stride, padding):
  rng = np.random.default_rng(11)
  x = jnp.asarray(rng.standard_normal((2, 7, 6, 12)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((1, 1, 12, 5)), jnp.float32)
  ref = _reference(x, w, stride, padding, 1)
  out = gc.grouped_conv(x, w, stride, padding, 1, 'split')
  assert out.shape == ref.shape
  assert _rel_err(out, ref) < RTOL
  ct = jnp.asarray(rng.standard_normal(ref.shape), jnp.float32)
  want = jax.grad(lambda a, b: jnp.vdot(_reference(a, b, stride, padding, 1), ct),
                  (0, 1))(x, w)
  got = jax.jit(jax.grad(
      lambda a, b: jnp.vdot(gc.grouped_conv(a, b, stride, padding, 1, 'split'), ct),
      (0, 1)))(x, w)
  for a, b in zip(got, want):
    assert _rel_err(a, b) < RTOL


def test_resolve_impl():
  assert gc.resolve_impl('xla') == 'xla'
  assert gc.resolve_impl('split', groups=6) == 'split'
  want = 'split' if jax.default_backend() == 'cpu' else 'xla'
  assert gc.resolve_impl('auto') == want
  assert gc.resolve_impl('auto', groups=6) == want
  # Depthwise-like convs stay on XLA: hundreds of tiny convs would only cost compile time.
  assert gc.resolve_impl('auto', groups=gc.MAX_SPLIT_GROUPS + 1) == 'xla'
  assert set(gc.IMPLS) == {'auto', 'xla', 'split'}


def test_auto_follows_the_per_backend_table(monkeypatch):
  backend = jax.default_backend()
  assert set(gc.AUTO_IMPL.values()) <= {'xla', 'split'}
  for entry in ('xla', 'split'):
    monkeypatch.setitem(gc.AUTO_IMPL, backend, entry)
    assert gc.resolve_impl('auto', groups=6) == entry
  monkeypatch.delitem(gc.AUTO_IMPL, backend)
  assert gc.resolve_impl('auto') == 'xla'     # an unmeasured backend


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match=r"config\.model\.conv_impl.*'fast'.*auto"):
    gc.resolve_impl('fast')
  x = jnp.zeros((1, 4, 4, 6))
  with pytest.raises(ValueError, match='groups=4'):
    gc.grouped_conv(x, jnp.zeros((3, 3, 2, 4)), groups=4)
  with pytest.raises(ValueError, match='groups=3'):
    gc.grouped_conv(x, jnp.zeros((3, 3, 2, 4)), groups=3)  # O=4 not divisible by 3


# The CPU path's im2col matmul (convs with tiny outputs) and space-to-depth
# (strided convs of few input channels): shapes that take each route, with
# SAME / VALID / explicit padding, odd sizes and non-square kernels.
_DENSE_ROUTES = [
    # (n, h, w, c, o, kh, kw, stride, padding, route)
    (4, 3, 3, 16, 8, 3, 3, 2, 'SAME', 'im2col'),
    (4, 2, 2, 16, 8, 3, 3, 1, 'SAME', 'im2col'),
    (3, 4, 4, 8, 8, 3, 3, 2, [(1, 1), (1, 1)], 'im2col'),
    (2, 5, 3, 8, 8, 3, 2, 2, 'VALID', 'im2col'),
    (4, 48, 48, 1, 16, 7, 7, 2, 'SAME', 's2d'),
    (3, 17, 15, 3, 8, 3, 3, 2, 'SAME', 's2d'),
    (2, 32, 32, 1, 8, 7, 7, 2, [(3, 3), (3, 3)], 's2d'),
    (2, 9, 9, 2, 4, 4, 4, 2, 'VALID', 's2d'),
    (2, 10, 11, 3, 4, 3, 3, 3, 'SAME', 's2d'),
    (2, 12, 12, 8, 8, 3, 3, 2, 'SAME', 'conv'),
]


@pytest.mark.parametrize('n,h,w,c,o,kh,kw,stride,padding,route', _DENSE_ROUTES)
def test_dense_cpu_routes_match_the_conv(n, h, w, c, o, kh, kw, stride, padding, route,
                                         monkeypatch):
  rng = np.random.default_rng(h * 100 + c)
  x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((kh, kw, c, o)), jnp.float32)
  taken = []
  for name in ('_conv_as_im2col_matmul', '_strided_conv_s2d'):
    orig = getattr(gc, name)
    monkeypatch.setattr(gc, name, lambda *a, _o=orig, _n=name: taken.append(_n) or _o(*a))
  ours = lambda a, b: gc.grouped_conv(a, b, stride, padding, 1, 'split')
  ref = lambda a, b: _reference(a, b, stride, padding, 1)
  y, y_ref = ours(x, k), ref(x, k)
  assert y.shape == y_ref.shape
  assert _rel_err(y, y_ref) < RTOL
  g = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)
  for d, d_ref in zip(jax.vjp(ours, x, k)[1](g), jax.vjp(ref, x, k)[1](g)):
    assert _rel_err(d, d_ref) < RTOL
  expected = {'im2col': ['_conv_as_im2col_matmul'], 's2d': ['_strided_conv_s2d'],
              'conv': []}[route]
  assert sorted(set(taken)) == expected
  if padding == 'SAME' and route != 'conv' and stride <= 2:
    np.testing.assert_allclose(y, _numpy_grouped_conv_same(np.asarray(x, np.float64),
                                                           np.asarray(k, np.float64),
                                                           stride, 1),
                               rtol=RTOL, atol=RTOL * float(jnp.max(jnp.abs(y_ref))))


def test_explicit_padding_is_tf_same():
  # TF SAME: out = ceil(n / s), the odd pixel of padding at the end.
  assert gc.explicit_padding('SAME', (48, 48), (7, 7), (2, 2)) == [(2, 3), (2, 3)]
  assert gc.explicit_padding('SAME', (3, 4), (3, 3), (2, 2)) == [(1, 1), (0, 1)]
  assert gc.explicit_padding('VALID', (5, 5), (3, 3), (1, 1)) == [(0, 0), (0, 0)]
  assert gc.explicit_padding([(1, 2), (0, 0)], (5, 5), (3, 3), (1, 1)) == [(1, 2), (0, 0)]
