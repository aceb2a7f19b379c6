"""The fused-gradient weight standardization equals autodiff of the reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax.nn import ws_fused


def _reference(w, gain, eps):
  # Independent transcription of the official formula (float64 numpy-style).
  mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
  var = jnp.mean(jnp.square(w - mean), axis=(0, 1, 2), keepdims=True)
  fan_in = np.prod(w.shape[:-1])
  return gain * (w - mean) / jnp.sqrt(jnp.maximum(var * fan_in, eps))


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


@pytest.mark.parametrize('shape', [(3, 3, 4, 6), (1, 1, 16, 8), (3, 3, 1, 5)])
@pytest.mark.parametrize('scale', [1.0, 1e-4])  # 1e-4: the eps floor is active
def test_forward_and_grads_match_autodiff(shape, scale):
  rng = np.random.default_rng(sum(shape))
  w = jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32)
  gain = jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32)
  ct = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  eps = 1e-4
  want = _reference(w, gain, eps)
  got = ws_fused.standardize_weight_fused(w, gain, eps)
  assert _rel(got, want) < 1e-5
  loss = lambda f: (lambda a, b: jnp.vdot(f(a, b, eps), ct))
  want_g = jax.grad(loss(_reference), (0, 1))(w, gain)
  got_g = jax.jit(jax.grad(loss(ws_fused.standardize_weight_fused), (0, 1)))(w, gain)
  for a, b in zip(got_g, want_g):
    assert _rel(a, b) < 1e-5


def test_mixed_active_and_floored_units():
  # Some output units above the floor, some below: the variance term must be
  # dropped per unit, not globally.
  rng = np.random.default_rng(0)
  w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
  w[..., 1] *= 1e-4
  w[..., 3] = 0.5  # constant unit: var = 0
  w = jnp.asarray(w)
  gain = jnp.ones((4,), jnp.float32)
  ct = jnp.asarray(rng.standard_normal(w.shape), jnp.float32)
  f = lambda fn: (lambda a, b: jnp.vdot(fn(a, b, 1e-4), ct))
  for a, b in zip(jax.grad(f(ws_fused.standardize_weight_fused), (0, 1))(w, gain),
                  jax.grad(f(_reference), (0, 1))(w, gain)):
    assert _rel(a, b) < 1e-5


def test_forward_bit_identical_to_official_op_order():
  # The official code computes w * scale - mean * scale; checkpoints' outputs
  # depend on that rounding, so the fused version keeps it exactly.
  def official(w, gain, eps=1e-4):
    mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
    var = jnp.var(w, axis=(0, 1, 2), keepdims=True)
    scale = jax.lax.rsqrt(jnp.maximum(var * np.prod(w.shape[:-1]), eps)) * gain
    return w * scale - mean * scale
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.standard_normal((3, 3, 8, 16)), jnp.float32)
  gain = jnp.asarray(rng.uniform(0.5, 1.5, 16), jnp.float32)
  a = jax.jit(ws_fused.standardize_weight_fused)(w, gain)
  b = jax.jit(official)(w, gain)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
