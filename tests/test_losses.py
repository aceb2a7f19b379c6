"""Cross-entropy with label smoothing / soft targets, and top-k accuracy."""
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax.optim import losses


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _np_ce(logits, soft):
  return -(soft * _np_log_softmax(logits)).sum(-1)


def test_int_labels_match_numpy_and_one_hot():
  rng = np.random.RandomState(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  labels = rng.randint(0, 5, size=6)
  got = losses.softmax_cross_entropy(logits, labels)
  want = -_np_log_softmax(logits)[np.arange(6), labels]
  assert got.shape == (6,)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  one_hot = np.eye(5, dtype=np.float32)[labels]
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, one_hot),
                             want, rtol=1e-5)


def test_label_smoothing_hand_values():
  # K = 4, ls = 0.2: target 0.85 on the label, 0.05 elsewhere.
  logits = np.asarray([[2.0, 0.0, 0.0, 0.0]], np.float32)
  z = np.log(np.exp(2.0) + 3.0)
  want = 0.85 * (z - 2.0) + 3 * 0.05 * z
  got = losses.softmax_cross_entropy(logits, np.asarray([0]), 0.2)
  np.testing.assert_allclose(got, [want], rtol=1e-6)
  # Uniform logits: the loss is log K whatever the targets and smoothing.
  np.testing.assert_allclose(
      losses.softmax_cross_entropy(np.zeros((2, 4)), np.asarray([1, 3]), 0.1),
      [np.log(4.0)] * 2, rtol=1e-6)


def test_soft_targets_are_smoothed_like_the_official_code():
  rng = np.random.RandomState(1)
  logits = rng.normal(size=(4, 10)).astype(np.float32)
  lam = rng.uniform(size=(4, 1))
  a, b = np.eye(10)[[1, 2, 3, 4]], np.eye(10)[[5, 5, 0, 9]]
  mixed = (lam * a + (1 - lam) * b).astype(np.float32)
  want = _np_ce(logits, mixed * 0.9 + 0.1 / 10)
  np.testing.assert_allclose(
      losses.softmax_cross_entropy(logits, mixed, label_smoothing=0.1),
      want, rtol=1e-5)


def test_bf16_logits_give_float32_loss():
  logits = jnp.asarray([[1.0, 2.0, 3.0]], jnp.bfloat16)
  out = losses.softmax_cross_entropy(logits, jnp.asarray([2]))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, -_np_log_softmax([[1., 2., 3.]])[0, 2],
                             rtol=1e-6)


def test_loss_argument_errors():
  with pytest.raises(ValueError, match='do not match'):
    losses.softmax_cross_entropy(np.zeros((2, 3)), np.zeros((2,), np.float32))
  with pytest.raises(ValueError, match='do not match'):
    losses.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(3, np.int32))
  with pytest.raises(ValueError, match=r'label_smoothing must be in \[0, 1\)'):
    losses.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2, np.int32), 1.0)


def test_topk_correct_against_numpy():
  rng = np.random.RandomState(2)
  logits = rng.normal(size=(50, 7)).astype(np.float32)  # no ties
  labels = rng.randint(0, 7, size=50)
  order = np.argsort(-logits, axis=-1)
  for k in (1, 3, 5):
    want = (order[:, :k] == labels[:, None]).any(-1).astype(np.float32)
    got = losses.topk_correct(logits, labels, k)
    assert got.dtype == jnp.float32 and got.shape == (50,)
    np.testing.assert_array_equal(got, want)
    assert 0 < want.sum() < 50
  # Soft labels use their argmax (MixUp/CutMix batches).
  soft = 0.7 * np.eye(7)[labels] + 0.3 * np.eye(7)[(labels + 1) % 7]
  np.testing.assert_array_equal(losses.topk_correct(logits, soft, 1),
                                losses.topk_correct(logits, labels, 1))
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 10), 1.0)
  with pytest.raises(ValueError, match='k must be >= 1'):
    losses.topk_correct(logits, labels, 0)
