"""Building blocks against independent computations (numpy, analytic, official table)."""
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax import nn as nfnn


def np_standardize(w, gain, eps=1e-4):
  """Scaled WS written from the paper: gain * (w - mean) / (std * sqrt(N)), with the floor."""
  fan_in = np.prod(w.shape[:-1])
  flat = w.reshape(-1, w.shape[-1]).astype(np.float64)
  mean = flat.mean(0)
  var = flat.var(0)
  return (gain * (w - mean) / np.sqrt(np.maximum(var * fan_in, eps))).astype(np.float64)


def np_conv_same(x, w, stride, groups):
  """Direct NHWC x HWIO grouped conv with TF 'SAME' padding (asymmetric at stride 2)."""
  n, h, wd, c = x.shape
  kh, kw, cin_g, o = w.shape
  oh, ow = -(-h // stride), -(-wd // stride)
  ph = max((oh - 1) * stride + kh - h, 0)
  pw = max((ow - 1) * stride + kw - wd, 0)
  xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
  out = np.zeros((n, oh, ow, o))
  og = o // groups
  for g in range(groups):
    xg = xp[..., g * cin_g:(g + 1) * cin_g]
    wg = w[..., g * og:(g + 1) * og]
    for i in range(oh):
      for j in range(ow):
        patch = xg[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
        out[:, i, j, g * og:(g + 1) * og] = np.einsum('nhwc,hwco->no', patch, wg)
  return out


def test_standardize_weight_matches_numpy():
  rng = np.random.default_rng(0)
  w = rng.normal(0.3, 2.0, (3, 3, 8, 5)).astype(np.float32)
  gain = rng.uniform(0.5, 2.0, 5).astype(np.float32)
  got = np.asarray(nfnn.standardize_weight(jnp.asarray(w), jnp.asarray(gain)))
  np.testing.assert_allclose(got, np_standardize(w, gain), rtol=1e-5, atol=1e-6)
  # Each output unit has zero mean and squared norm gain^2 (unit fan-in variance * N).
  np.testing.assert_allclose(got.reshape(-1, 5).mean(0), 0, atol=1e-6)
  np.testing.assert_allclose((got.reshape(-1, 5) ** 2).sum(0), gain ** 2, rtol=1e-5)


def test_standardize_weight_variance_floor():
  # var * fan_in ~ 1e-6 < 1e-4: the floor (not an added eps) sets the scale.
  w = np.zeros((3, 3, 8, 2), np.float32)
  w[0, 0, 0, :] = 1e-3
  got = np.asarray(nfnn.standardize_weight(jnp.asarray(w), jnp.ones(2)))
  mean = w.reshape(-1, 2).mean(0)
  np.testing.assert_allclose(got, (w - mean) / np.sqrt(1e-4), rtol=1e-5, atol=1e-7)
  # A constant kernel standardizes to exactly zero instead of NaN.
  zero = nfnn.standardize_weight(jnp.ones((1, 1, 4, 3)), jnp.ones(3))
  assert np.all(np.asarray(zero) == 0)


@pytest.mark.parametrize('stride,groups,impl', [(1, 1, 'auto'), (2, 1, 'xla'),
                                                (1, 2, 'split'), (2, 4, 'xla')])
def test_wsconv2d_matches_numpy_conv(stride, groups, impl):
  x = np.random.default_rng(1).normal(size=(2, 7, 6, 8)).astype(np.float32)
  fn = hk.transform(lambda x: nfnn.WSConv2D(4, kernel_shape=3, stride=stride,
                                            feature_group_count=groups, conv_impl=impl,
                                            name='conv')(x))
  params = fn.init(jax.random.PRNGKey(0), x)
  p = params['conv']
  assert p['w'].shape == (3, 3, 8 // groups, 4)
  assert p['gain'].shape == (4,) and p['bias'].shape == (4,)
  np.testing.assert_array_equal(p['gain'], 1.0)
  np.testing.assert_array_equal(p['bias'], 0.0)
  # Non-trivial gain and bias so both enter the comparison.
  gain = np.linspace(0.5, 1.5, 4).astype(np.float32)
  bias = np.linspace(-1, 1, 4).astype(np.float32)
  params = {'conv': {'w': p['w'], 'gain': jnp.asarray(gain), 'bias': jnp.asarray(bias)}}
  got = np.asarray(fn.apply(params, None, x))
  w_hat = np_standardize(np.asarray(p['w']), gain)
  want = np_conv_same(x.astype(np.float64), w_hat, stride, groups) + bias
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_wsconv2d_init_is_fan_in_normal():
  fn = hk.transform(lambda x: nfnn.WSConv2D(256, kernel_shape=3, name='c')(x))
  w = np.asarray(fn.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 64)))['c']['w'])
  fan_in = 3 * 3 * 64
  # 147k draws: the sample std of N(0, 1/fan_in) is within 1% with overwhelming probability.
  assert abs(w.std() * np.sqrt(fan_in) - 1.0) < 0.01
  assert abs(w.mean()) < 5 / np.sqrt(fan_in * w.size)


def test_relu_gamma_analytic():
  analytic = 1.0 / np.sqrt(0.5 * (1.0 - 1.0 / np.pi))  # = sqrt(2 / (1 - 1/pi))
  assert abs(nfnn.estimate_gamma(jax.nn.relu) - analytic) < 1e-7
  assert abs(nfnn.estimate_gamma(lambda z: np.maximum(z, 0.0)) - analytic) < 1e-7
  # The official table entry is a Monte Carlo estimate, 6.4e-4 above the exact value.
  assert abs(nfnn.ACTIVATIONS['relu'][1] / analytic - 1) < 1e-3


def test_estimate_gamma_exact_cases():
  assert abs(nfnn.estimate_gamma(lambda z: z) - 1.0) < 1e-9
  assert abs(nfnn.estimate_gamma(lambda z: 3.0 * z + 1.0) - 1 / 3.0) < 1e-9
  assert abs(nfnn.estimate_gamma(lambda z: z ** 2) - 1 / np.sqrt(2.0)) < 1e-9  # Var(z^2) = 2
  # Gauss-Hermite is exact for polynomials; both rules agree on smooth functions.
  assert abs(nfnn.estimate_gamma(lambda z: z ** 2, method='hermite', num_points=20)
             - 1 / np.sqrt(2.0)) < 1e-9
  assert abs(nfnn.estimate_gamma(np.tanh, method='hermite', num_points=150)
             - nfnn.estimate_gamma(np.tanh)) < 1e-7


ELEMENTWISE = sorted(set(nfnn.ACTIVATIONS) - set(nfnn.CHANNEL_AXIS_ACTIVATIONS))


@pytest.mark.parametrize('name', ELEMENTWISE)
def test_gamma_table_reproduced(name):
  fn, gamma = nfnn.ACTIVATIONS[name]
  est = nfnn.estimate_gamma(fn)
  # The official constants are Monte Carlo estimates over 262,144 samples
  # (see nn/activations.py); the largest deviation from the exact value is
  # tanh's 8.6e-4.
  assert abs(est / gamma - 1) < 1e-3, (name, est, gamma)
  # And the scaled activation really has unit variance on N(0, 1).
  z, w = nfnn.gaussian_nodes()
  y = np.asarray(nfnn.get_activation(name)(jnp.asarray(z, jnp.float32)), np.float64)
  var = np.sum(w * (y - np.sum(w * y)) ** 2) / np.sum(w)
  assert abs(var * (est / gamma) ** 2 - 1) < 1e-5


def test_glu_gamma_two_input_quadrature():
  exact = nfnn.estimate_gamma(jax.nn.glu, num_inputs=2)
  # Independent check: glu(a, b) = a * sigmoid(b) with a independent of b, so
  # Var = E[a^2] E[sigmoid(b)^2] = E[sigmoid^2] (1-D quadrature).
  z, w = nfnn.gaussian_nodes()
  es2 = np.sum(w / (1 + np.exp(-z)) ** 2) / np.sum(w)
  assert abs(exact - es2 ** -0.5) < 1e-6
  # The table entry (Monte Carlo over 1024 x 128 glu outputs, ddof=0 row
  # variances) is 1.19e-3 above the exact value: one Monte Carlo draw of that
  # size has ~1.5e-3 relative std, so only 2e-3 agreement is guaranteed.
  assert abs(exact / nfnn.ACTIVATIONS['glu'][1] - 1) < 2e-3


def test_log_softmax_gamma_is_one():
  # log_softmax subtracts one constant per example, so the within-example
  # variance (what the official protocol measures) equals the input's: gamma=1
  # in the many-channel limit. A scalar-input estimator cannot see this.
  x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
  y = np.asarray(jax.nn.log_softmax(jnp.asarray(x)))
  np.testing.assert_allclose(y.var(-1), x.var(-1), rtol=1e-4)
  assert abs(nfnn.ACTIVATIONS['log_softmax'][1] - 1.0) < 1e-3
  # The Monte Carlo estimator reproduces the official protocol's value: its
  # expectation is sqrt(C / (C - 1)) (ddof=0), std ~1.4e-3 at 1024 x 256.
  mc = nfnn.estimate_gamma_monte_carlo(jax.nn.log_softmax, seed=0)
  assert abs(mc - np.sqrt(256 / 255)) < 6e-3


def test_gelu_is_tanh_approximation():
  fn, _ = nfnn.ACTIVATIONS['gelu']
  x = jnp.linspace(-3, 3, 11)
  approx = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  np.testing.assert_allclose(fn(x), approx, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='Unknown activation'):
    nfnn.get_activation('swishy')


def test_stochdepth_keep_rate_and_no_rescale():
  rate, n = 0.3, 20000
  x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (n, 2, 2, 3)), jnp.float32)
  fn = hk.transform(lambda x, t: nfnn.StochDepth(rate)(x, t))
  out = np.asarray(fn.apply({}, jax.random.PRNGKey(3), x, True))
  xs = np.asarray(x)
  kept = np.all(out == xs, axis=(1, 2, 3))
  dropped = np.all(out == 0, axis=(1, 2, 3))
  # Whole examples are kept unchanged (no 1/keep rescaling) or zeroed.
  assert np.all(kept | dropped)
  # Kept fraction ~ Binomial(n, 0.7)/n: std sqrt(0.21/n) = 0.0032; 5 sigma = 0.016.
  assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
  # Eval: identity, no rng needed.
  np.testing.assert_array_equal(fn.apply({}, None, x, False), x)
  # Different keys give different masks (it is random, not a fixed pattern).
  out2 = np.asarray(fn.apply({}, jax.random.PRNGKey(4), x, True))
  assert np.any(out2 != out)


def test_stochdepth_scale_by_keep_option():
  fn = hk.transform(lambda x: nfnn.StochDepth(0.5, scale_by_keep=True)(x, True))
  out = np.asarray(fn.apply({}, jax.random.PRNGKey(0), jnp.ones((1000, 1, 1, 1))))
  assert set(np.unique(out)) <= {0.0, 2.0}


def test_squeeze_excite_shapes_names_and_values():
  x = np.random.default_rng(0).normal(size=(3, 5, 4, 16)).astype(np.float32)
  fn = hk.transform(lambda x: nfnn.SqueezeExcite(16, 16, 0.5)(x))
  params = fn.init(jax.random.PRNGKey(0), x)
  assert {k: {n: v.shape for n, v in d.items()} for k, d in params.items()} == {
      'squeeze_excite/~/linear': {'w': (16, 8), 'b': (8,)},
      'squeeze_excite/~/linear_1': {'w': (8, 16), 'b': (16,)}}
  gate = np.asarray(fn.apply(params, None, x))
  assert gate.shape == (3, 1, 1, 16)
  p0, p1 = params['squeeze_excite/~/linear'], params['squeeze_excite/~/linear_1']
  h = np.maximum(x.mean((1, 2)) @ p0['w'] + p0['b'], 0) @ p1['w'] + p1['b']
  np.testing.assert_allclose(gate[:, 0, 0], 1 / (1 + np.exp(-h)), rtol=1e-5)
  # Hidden width is int(in_ch * ratio), at least 1.
  tiny = hk.transform(lambda x: nfnn.SqueezeExcite(3, 3, 0.25)(x))
  assert tiny.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)))[
      'squeeze_excite/~/linear']['w'].shape == (3, 1)


def test_skip_gain_param():
  fn = hk.transform(lambda: nfnn.skip_gain())
  params = fn.init(jax.random.PRNGKey(0))
  assert params['~']['skip_gain'].shape == () and float(params['~']['skip_gain']) == 0.0


def test_signal_stats_match_numpy():
  x = np.random.default_rng(0).normal(0.5, 2.0, (4, 3, 5, 6)).astype(np.float32)
  flat = x.reshape(-1, 6).astype(np.float64)
  stats = nfnn.signal_stats(jnp.asarray(x))
  np.testing.assert_allclose(stats['avg_sq_mean'], np.mean(flat.mean(0) ** 2), rtol=1e-5)
  np.testing.assert_allclose(stats['avg_var'], np.mean(flat.var(0)), rtol=1e-5)


def test_nf_block_schedule():
  alpha, rate = 0.2, 0.5
  sched = nfnn.nf_block_schedule((2, 3), alpha, rate)
  a2 = alpha ** 2
  # Block input variance: 1 at the start, +alpha^2 per block, reset to 1 (+a^2
  # for the transition block itself) after each stage's first block.
  np.testing.assert_allclose([s['expected_var'] for s in sched],
                             [1, 1 + a2, 1 + 2 * a2, 1 + a2, 1 + 2 * a2])
  np.testing.assert_allclose([s['beta'] for s in sched],
                             [1 / np.sqrt(s['expected_var']) for s in sched])
  assert [s['is_transition'] for s in sched] == [1, 0, 1, 0, 0]
  np.testing.assert_allclose([s['stochdepth_rate'] for s in sched],
                             [rate * i / 5 for i in range(5)])
