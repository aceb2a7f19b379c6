"""Adaptive Gradient Clipping: against optax, numpy and the exclusion rules."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nfnet_jax.optim import agc
from nfnet_jax.optim import masks

CLIP = 0.05
EPS = 1e-3

# One tensor of every shape kind AGC distinguishes, with the axes a unit's
# norm is taken over in nfnet_jax (None = whole tensor).
SHAPES = {
    'scalar': ((), None),
    'vector': ((8,), None),
    'linear': ((6, 5), (0,)),
    'conv_hwio': ((3, 3, 4, 7), (0, 1, 2)),
    'conv1d_wio': ((3, 4, 6), (0, 1)),
    'conv3d_dhwio': ((2, 3, 3, 2, 5), (0, 1, 2, 3)),
    'squeezable': ((1, 1, 1, 6), None),   # [1,1,1,O]: one non-unit dim
}


def _np_unitwise_norm(x, axes):
  return np.sqrt(np.sum(np.square(x, dtype=np.float64), axis=axes,
                        keepdims=True))


def _np_agc(g, p, axes, clip=CLIP, eps=EPS):
  """The paper's formula, straight in numpy (float64)."""
  g = g.astype(np.float64)
  gn = _np_unitwise_norm(g, axes)
  mx = clip * np.maximum(_np_unitwise_norm(p, axes), eps)
  return np.where(gn > mx, g * mx / np.maximum(gn, 1e-6), g)


def _tree(seed=0):
  """Params and grads where some units get clipped and others do not."""
  rng = np.random.RandomState(seed)
  params, grads = {}, {}
  for name, (shape, axes) in SHAPES.items():
    # np.asarray: optax rejects numpy scalars for the 0-d leaf.
    p = np.asarray(rng.normal(size=shape), np.float32)
    g = np.asarray(rng.normal(size=shape) * 0.01, np.float32)
    # Blow up every other unit (or the whole tensor) far past the threshold.
    big = np.ones(shape, np.float32)
    if axes is not None:
      big[..., ::2] = 100.0
    else:
      big[...] = 100.0 if name != 'scalar' else 1.0
    params[name] = {'w': p}
    grads[name] = {'w': np.asarray(g * big)}
  return params, grads


def test_reduce_axes_conventions():
  for shape, axes in SHAPES.values():
    assert agc.unitwise_reduce_axes(shape) == axes, shape


def test_matches_numpy_on_every_shape_kind():
  params, grads = _tree()
  tx = agc.adaptive_grad_clip(CLIP, EPS, exclude=None)
  out, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  n_clipped = 0
  for name, (_, axes) in SHAPES.items():
    want = _np_agc(grads[name]['w'], params[name]['w'], axes)
    np.testing.assert_allclose(out[name]['w'], want, rtol=2e-6, atol=1e-9,
                               err_msg=name)
    n_clipped += int(not np.allclose(want, grads[name]['w']))
  # The test is only meaningful if clipping actually engaged somewhere.
  assert n_clipped >= 5


def test_matches_optax_where_conventions_overlap():
  # optax.adaptive_grad_clip uses the same rules as ours for scalars,
  # vectors, squeezable tensors, [in, out] linears, HWIO and DHWIO kernels.
  # For 3-D tensors optax (like the official code) reduces only axis 0,
  # reading them as multi-head linears [in, heads, head_dim]; we read them as
  # WIO conv kernels and reduce (0, 1), so that leaf is compared against
  # optax with an explicit axis=(0, 1) instead.
  params, grads = _tree(1)
  ours, _ = jax.jit(agc.adaptive_grad_clip(CLIP, EPS, exclude=None).update)(
      grads, None, params)
  ref = optax.adaptive_grad_clip(CLIP, EPS)
  theirs, _ = jax.jit(ref.update)(grads, ref.init(params), params)
  for name in SHAPES:
    if name == 'conv1d_wio':
      continue
    np.testing.assert_allclose(ours[name]['w'], theirs[name]['w'],
                               rtol=1e-6, atol=1e-9, err_msg=name)
  ref3 = optax.adaptive_grad_clip(CLIP, EPS, axis=(0, 1))
  sub_p, sub_g = params['conv1d_wio'], grads['conv1d_wio']
  theirs3, _ = ref3.update(sub_g, ref3.init(sub_p), sub_p)
  np.testing.assert_allclose(ours['conv1d_wio']['w'], theirs3['w'],
                             rtol=1e-6, atol=1e-9)
  # And the conventions really differ for 3-D (so the comment above is true).
  theirs_default, _ = optax.adaptive_grad_clip(CLIP, EPS).update(
      sub_g, None, sub_p)
  assert not np.allclose(ours['conv1d_wio']['w'], theirs_default['w'])


def _haiku_like_tree():
  rng = np.random.RandomState(2)
  n = lambda *s: rng.normal(size=s).astype(np.float32)
  params = {
      'NFNet/~/stem_conv0': {'w': n(3, 3, 3, 4), 'gain': np.ones(4, np.float32),
                             'bias': np.zeros(4, np.float32)},
      'NFNet/~/nf_block': {'skip_gain': np.zeros((), np.float32)},
      'NFNet/~/nf_block/~/squeeze_excite/~/linear': {'w': n(4, 2),
                                                     'b': np.zeros(2, np.float32)},
      'NFNet/~/linear': {'w': n(4, 3) * 0.01, 'b': np.zeros(3, np.float32)},
  }
  grads = jax.tree_util.tree_map(lambda x: np.full_like(x, 10.0), params)
  return params, grads


def test_default_exclusion_is_only_the_classifier_weight():
  params, grads = _haiku_like_tree()
  out, _ = jax.jit(agc.adaptive_grad_clip(0.01).update)(grads, None, params)
  np.testing.assert_array_equal(out['NFNet/~/linear']['w'],
                                grads['NFNet/~/linear']['w'])
  # Everything else (SE linears, classifier bias, gains, skip gain) is
  # clipped: every gradient here is far above 0.01 * max(||W||, eps).
  se = 'NFNet/~/nf_block/~/squeeze_excite/~/linear'
  np.testing.assert_allclose(
      out[se]['w'], _np_agc(grads[se]['w'], params[se]['w'], (0,), clip=0.01),
      rtol=1e-6)
  for mod, name in [(se, 'b'), ('NFNet/~/linear', 'b'),
                    ('NFNet/~/nf_block', 'skip_gain'),
                    ('NFNet/~/stem_conv0', 'gain'), ('NFNet/~/stem_conv0', 'w')]:
    assert np.all(np.abs(out[mod][name]) < np.abs(grads[mod][name])), (mod, name)
  # Zero-initialised params are clipped to norm clipping * eps.
  np.testing.assert_allclose(np.abs(out['NFNet/~/nf_block']['skip_gain']),
                             0.01 * 1e-3, rtol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(out['NFNet/~/linear']['b']),
                             0.01 * 1e-3, rtol=1e-6)


def test_custom_regex_and_callable_exclusion():
  params, grads = _haiku_like_tree()
  se = 'NFNet/~/nf_block/~/squeeze_excite/~/linear'
  out, _ = agc.adaptive_grad_clip(0.01, exclude=r'squeeze_excite').update(
      grads, None, params)
  np.testing.assert_array_equal(out[se]['w'], grads[se]['w'])
  np.testing.assert_array_equal(out[se]['b'], grads[se]['b'])
  assert np.all(np.abs(out['NFNet/~/linear']['w']) <
                np.abs(grads['NFNet/~/linear']['w']))
  seen = []

  def by_rank(path, leaf):
    seen.append(path)
    return leaf.ndim == 0
  out, _ = agc.adaptive_grad_clip(0.01, exclude=by_rank).update(
      grads, None, params)
  np.testing.assert_array_equal(out['NFNet/~/nf_block']['skip_gain'], 10.0)
  assert np.all(np.abs(out['NFNet/~/linear']['w']) < 10.0)
  assert 'NFNet/~/nf_block/skip_gain' in seen
  assert sorted(seen) == sorted(masks.param_paths(params))


def test_zero_grads_and_zero_weights_are_finite():
  params = {'a': {'w': np.zeros((3, 3, 2, 4), np.float32),
                  'b': np.zeros(4, np.float32)},
            'c': {'w': np.ones((5, 3), np.float32)}}
  zero_g = jax.tree_util.tree_map(np.zeros_like, params)
  tx = agc.adaptive_grad_clip(0.01, exclude=None)
  out, _ = jax.jit(tx.update)(zero_g, None, params)
  for leaf in jax.tree_util.tree_leaves(out):
    assert np.all(np.isfinite(leaf)) and np.all(leaf == 0)
  # eps = 0 with zero weights: the max norm is 0, every gradient clips to 0.
  g = jax.tree_util.tree_map(np.ones_like, params)
  out, _ = agc.adaptive_grad_clip(0.01, eps=0.0, exclude=None).update(
      g, None, params)
  np.testing.assert_array_equal(out['a']['w'], 0.0)
  np.testing.assert_array_equal(out['a']['b'], 0.0)
  # Zero gradient of a zero weight with eps = 0 (0 vs 0): no NaN either.
  out, _ = agc.adaptive_grad_clip(0.01, eps=0.0, exclude=None).update(
      zero_g, None, params)
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(out))


def test_grad_of_clipped_update_is_finite_at_zero():
  # The discarded branch of jnp.where must not produce NaN gradients.
  p = {'m': {'w': jnp.ones((4, 3))}}
  tx = agc.adaptive_grad_clip(0.01, exclude=None)
  f = lambda g: jnp.sum(tx.update(g, None, p)[0]['m']['w'])
  d = jax.grad(f)({'m': {'w': jnp.zeros((4, 3))}})
  assert np.all(np.isfinite(d['m']['w']))


def test_bf16_gradients_keep_their_dtype():
  params, grads = _tree(3)
  g16 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), grads)
  out, _ = jax.jit(agc.adaptive_grad_clip(CLIP, exclude=None).update)(
      g16, None, params)
  for name, (_, axes) in SHAPES.items():
    assert out[name]['w'].dtype == jnp.bfloat16
    want = _np_agc(np.asarray(g16[name]['w'], np.float32), params[name]['w'],
                   axes)
    np.testing.assert_allclose(np.asarray(out[name]['w'], np.float32), want,
                               rtol=1e-2, atol=1e-6)


def test_state_and_argument_errors():
  tx = agc.adaptive_grad_clip(0.01)
  state = tx.init({'x': {'w': jnp.ones(3)}})
  assert isinstance(state, agc.AdaptiveGradClipState)
  assert isinstance(state, tuple) and hasattr(state, '_fields')
  with pytest.raises(ValueError, match='needs the current parameters'):
    tx.update({'x': {'w': jnp.ones(3)}}, state)
  with pytest.raises(ValueError, match=r'clipping must be > 0, got 0'):
    agc.adaptive_grad_clip(0.0)
  with pytest.raises(ValueError, match=r'clipping must be > 0, got -0.1'):
    agc.adaptive_grad_clip(-0.1)
  with pytest.raises(ValueError, match=r'eps must be >= 0, got -1e-05'):
    agc.adaptive_grad_clip(0.01, eps=-1e-5)
  with pytest.raises(ValueError, match=r"clipping must be a number, got 'x'"):
    agc.adaptive_grad_clip('x')
  with pytest.raises(ValueError, match=r"exclude='\(linear' is not a valid "
                     'regular expression'):
    agc.adaptive_grad_clip(0.01, exclude='(linear')
  with pytest.raises(ValueError, match='must be a regex string'):
    agc.adaptive_grad_clip(0.01, exclude=3)
