"""BatchNorm under pmap / shard_map: per-device statistics, and the synced option.

By default ``ResNet(norm='batchnorm')`` normalizes each device's examples with
their own batch statistics (as the official experiments do: their
cross-replica axis is commented out). ``bn_cross_replica=True`` averages the
statistics over the train step's ``'batch'`` axis, so 8 devices of 2 images
compute what one device computes on the global batch of 16. Checked against
numpy statistics of each shard / of the whole batch, against one-device runs,
and through the real train step.
"""
import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from nfnet_jax import models as models_lib
from nfnet_jax.models import resnet
from nfnet_jax.train import parallel as parallel_lib
from nfnet_jax.train import step as step_lib

DEVICES = 8
PER_DEVICE = 2
NUM_CLASSES = 3
TINY = dict(name='ResNet', norm='batchnorm', depths=(1, 1), widths=(8, 16), stem_width=4)


def _x(seed=0, shape=(DEVICES * PER_DEVICE, 4, 4, 3)):
  rng = np.random.RandomState(seed)
  # Shards with different means/scales, so per-shard and global stats differ.
  x = rng.randn(*shape).astype(np.float32)
  x *= np.repeat(np.arange(1, DEVICES + 1, dtype=np.float32), shape[0] // DEVICES)[:, None, None, None]
  x += np.repeat(np.arange(DEVICES, dtype=np.float32), shape[0] // DEVICES)[:, None, None, None]
  return x


def _bn_layer(cross):
  def f(x):
    return resnet._make_norm('batchnorm', x.shape[-1], 'bn', bn_cross_replica=cross)(x, True)
  return hk.transform_with_state(f)


def _numpy_bn(x):
  mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
  var = x.var(axis=(0, 1, 2), dtype=np.float64)
  return (x - mean) / np.sqrt(var + resnet.NORM_EPS), mean, var


def _mapped(fn, mode):
  """fn(x_shard) -> (y, mean, var) over the 8 devices; outputs stacked per device."""
  mesh = parallel_lib.make_mesh(jax.devices()[:DEVICES])
  if mode == 'pmap':
    def run(x):
      y, m, v = jax.pmap(fn, axis_name=step_lib.AXIS)(x.reshape((DEVICES, -1) + x.shape[1:]))
      return y.reshape((-1,) + y.shape[2:]), m, v
    return run
  def per_device(x):
    y, m, v = fn(x)
    return y, m[None], v[None]
  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P(step_lib.AXIS),
                               out_specs=P(step_lib.AXIS), check_vma=False))


def test_axis_name_is_the_train_steps():
  assert resnet.BN_CROSS_REPLICA_AXIS == step_lib.AXIS


@pytest.mark.parametrize('mode', ['pmap', 'shard_map'])
@pytest.mark.parametrize('cross', [False, True])
def test_batchnorm_statistics_per_device_or_global(mode, cross):
  assert jax.device_count() >= DEVICES
  layer = _bn_layer(cross)
  x = _x()
  params, state = layer.init(None, x[:PER_DEVICE])

  def fn(xs):
    y, new_state = layer.apply(params, state, None, xs)
    # The EMAs are zero-debiased: after one update they hold the batch stats.
    return y, new_state['bn/~/mean_ema']['average'].reshape(-1), \
        new_state['bn/~/var_ema']['average'].reshape(-1)

  y, means, variances = (np.asarray(a) for a in _mapped(fn, mode)(x))
  shards = x.reshape((DEVICES, PER_DEVICE) + x.shape[1:])
  if cross:
    want_y, m, v = _numpy_bn(x)
    want_means, want_vars = np.broadcast_to(m, means.shape), np.broadcast_to(v, variances.shape)
  else:
    per = [_numpy_bn(s) for s in shards]
    want_y = np.concatenate([p[0] for p in per])
    want_means, want_vars = np.stack([p[1] for p in per]), np.stack([p[2] for p in per])
  # The two settings differ by far more than the tolerance on this data.
  assert np.abs(_numpy_bn(x)[1] - np.stack([s.mean(axis=(0, 1, 2)) for s in shards])).max() > 1
  np.testing.assert_allclose(means, want_means, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(variances, want_vars, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-4)


def _tiny_model(cross):
  return models_lib.create_model(dict(TINY, bn_cross_replica=cross), NUM_CLASSES)


@pytest.mark.parametrize('mode', ['pmap', 'shard_map'])
def test_resnet_outputs_match_one_device_runs(mode):
  """Per device: each shard on its own; synced: the whole batch on one device."""
  x = _x(1, (DEVICES * PER_DEVICE, 8, 8, 3))
  plain = _tiny_model(False)
  params, state = plain.init(jax.random.PRNGKey(0), x[:1], is_training=True)
  single = jax.jit(lambda xs: plain.apply(params, state, None, xs, True)[0]['logits'])
  want_global = np.asarray(single(x))
  want_local = np.concatenate([np.asarray(single(s)) for s in np.split(x, DEVICES)])
  assert np.abs(want_global - want_local).max() > 1e-3   # the two truly differ
  for cross, want in ((False, want_local), (True, want_global)):
    model = _tiny_model(cross)
    fn = lambda xs, m=model: (m.apply(params, state, None, xs, True)[0]['logits'],
                              jnp.zeros(1), jnp.zeros(1))
    got = np.asarray(_mapped(fn, mode)(x)[0])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _xent(logits, labels):
  return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))


def test_train_step_synced_equals_global_batch_and_per_device_equals_shard_mean():
  """The real train step over 8 devices: gradients and BN moving averages."""
  x = _x(2, (DEVICES * PER_DEVICE, 8, 8, 3))
  labels = np.eye(NUM_CLASSES, dtype=np.float32)[np.arange(len(x)) % NUM_CLASSES]
  plain = _tiny_model(False)
  params, state = plain.init(jax.random.PRNGKey(0), x[:1], is_training=True)
  tx = optax.sgd(0.1)

  @jax.jit
  def one_device(xs, ys):
    def loss(p):
      out, new_state = plain.apply(p, state, None, xs, True)
      return _xent(out['logits'], ys), new_state
    return jax.grad(loss, has_aux=True)(params)

  g_global, s_global = one_device(x, labels)
  shard_runs = [one_device(a, b) for a, b in zip(np.split(x, DEVICES), np.split(labels, DEVICES))]
  g_local = jax.tree.map(lambda *g: np.mean(g, axis=0), *[r[0] for r in shard_runs])
  s_local = jax.tree.map(lambda *s: np.mean(s, axis=0), *[r[1] for r in shard_runs])

  par = parallel_lib.Parallel('shard_map', jax.devices()[:DEVICES])
  for cross, grads, want_state in ((True, g_global, s_global), (False, g_local, s_local)):
    model = _tiny_model(cross)
    fn = par.wrap_train_step(step_lib.make_train_step(
        model.apply, tx, {'label_smoothing': 0.0, 'ema_decay': None, 'sam_rho': None}))
    st = step_lib.TrainState(
        step=np.zeros((), np.int32), params=params, model_state=state,
        opt_state=tx.init(params), ema_params={},
        rng=np.asarray(jax.random.key_data(jax.random.PRNGKey(1))),
        nonfinite_total=np.zeros((), np.int32), nonfinite_consecutive=np.zeros((), np.int32))
    new, _ = fn(par.put_replicated(st), par.put_batch({'images': x, 'labels': labels}))
    new = par.get_replicated(new)
    want_params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want_params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(new.model_state), jax.tree.leaves(want_state)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  # Synced and per-device moving variances differ on this data (not vacuous).
  v = lambda s: np.asarray(s['ResNet/~/res_block/~/norm0/~/var_ema']['average'])
  assert np.abs(v(s_global) - v(s_local)).max() > 1e-3


def test_cross_replica_outside_a_mapped_axis_is_one_clear_error():
  model = _tiny_model(True)
  x = _x(3, (DEVICES * PER_DEVICE, 8, 8, 3))
  # init works outside the map (it only shapes the EMAs) ...
  params, state = model.init(jax.random.PRNGKey(0), x[:1], is_training=True)
  # ... eval uses the moving averages, no axis needed ...
  model.apply(params, state, None, x, False)
  # ... and a training-mode call outside pmap/shard_map says what to do.
  with pytest.raises(ValueError, match=r'bn_cross_replica=True.*not inside') as e:
    model.apply(params, state, None, x, True)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('norm', ['groupnorm', 'ws_groupnorm', 'none'])
def test_cross_replica_needs_batchnorm(norm):
  with pytest.raises(ValueError, match=r"config.model.bn_cross_replica=True.*norm='batchnorm'") as e:
    models_lib.validate_model_config(dict(TINY, norm=norm, bn_cross_replica=True), NUM_CLASSES)
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match='bn_cross_replica'):
    models_lib.validate_model_config(dict(TINY, bn_cross_replica='yes'), NUM_CLASSES)
  models_lib.validate_model_config(dict(TINY, bn_cross_replica=True), NUM_CLASSES)


def _hk_batchnorm(x, is_training):
  return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=resnet.BN_DECAY,
                      eps=resnet.NORM_EPS, name='bn')(x, is_training)


def _our_batchnorm(x, is_training):
  return resnet._make_norm('batchnorm', x.shape[-1], 'bn')(x, is_training)


def test_batchnorm_equals_haiku_bit_for_bit_where_the_variance_is_positive():
  x = _x(3)
  outs = []
  for fn in (_hk_batchnorm, _our_batchnorm):
    f = hk.transform_with_state(fn)
    params, state = f.init(jax.random.PRNGKey(0), x, True)
    y_train, state = f.apply(params, state, None, x, True)
    y_train2, state = f.apply(params, state, None, x * 2 + 1, True)
    y_eval, _ = f.apply(params, state, None, x, False)
    outs.append((params, state, y_train, y_train2, y_eval))
  for ours, theirs in zip(jax.tree_util.tree_leaves(outs[1]), jax.tree_util.tree_leaves(outs[0])):
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_batchnorm_variance_is_clamped_at_zero_where_one_pass_cancels():
  # Two values per channel near 30 (2 images at a 1x1 last stage): in float32
  # E[x^2] - E[x]^2 cancels to below -eps for some channels, and Haiku's
  # BatchNorm returns NaN there.
  rng = np.random.RandomState(0)
  x = (30 + 1e-3 * rng.randn(2, 1, 1, 1000)).astype(np.float32)
  mean_sq = np.mean(np.square(x), axis=(0, 1, 2))
  one_pass = mean_sq - np.square(np.mean(x, axis=(0, 1, 2)))
  assert (one_pass < -resnet.NORM_EPS).any(), 'the example must cancel below -eps'
  hk_y, _ = hk.transform_with_state(_hk_batchnorm).apply(
      {'bn': {'scale': jnp.ones((1, 1, 1, 1000)), 'offset': jnp.zeros((1, 1, 1, 1000))}},
      {'bn/~/mean_ema': {'counter': jnp.zeros((), jnp.int32), 'hidden': jnp.zeros((1, 1, 1, 1000)),
                          'average': jnp.zeros((1, 1, 1, 1000))},
       'bn/~/var_ema': {'counter': jnp.zeros((), jnp.int32), 'hidden': jnp.zeros((1, 1, 1, 1000)),
                         'average': jnp.zeros((1, 1, 1, 1000))}}, None, x, True)
  assert np.isnan(np.asarray(hk_y)).any()
  f = hk.transform_with_state(_our_batchnorm)
  params, state = f.init(jax.random.PRNGKey(0), x, True)
  y, state = f.apply(params, state, None, x, True)
  # numpy: the same one-pass variance in float32, clamped at 0.
  mean = np.mean(x, axis=(0, 1, 2))
  var = np.maximum(one_pass, 0)
  expected = (x - mean) / np.sqrt(var + np.float32(resnet.NORM_EPS))
  assert np.isfinite(np.asarray(y)).all()
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)
  assert np.asarray(state['bn/~/var_ema']['average']).min() >= 0
