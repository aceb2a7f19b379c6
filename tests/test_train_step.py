"""The per-device train step under pmap and shard_map vs one-device math.

A tiny throwaway Haiku model keeps these fast; the whole loop with a real
NFNet is covered by test_train_loop.py.
"""
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nfnet_jax.train import parallel as parallel_lib
from nfnet_jax.train import step as step_lib

NUM_CLASSES = 5
GLOBAL_BATCH = 16
LS = 0.1
EMA = 0.9


def _toy_model():
  def forward(images, is_training, return_metrics=False):
    del is_training, return_metrics
    x = hk.Conv2D(4, 3, name='conv')(images)
    x = jax.nn.gelu(x)
    x = jnp.mean(x, axis=(1, 2))
    return {'logits': hk.Linear(NUM_CLASSES, name='linear')(x)}
  return hk.transform_with_state(forward)


def _batch(seed=0, n=GLOBAL_BATCH):
  rng = np.random.RandomState(seed)
  images = rng.randn(n, 8, 8, 3).astype(np.float32)
  # Soft targets (a MixUp-like mixture of two one-hots).
  a, b = rng.randint(0, NUM_CLASSES, n), rng.randint(0, NUM_CLASSES, n)
  lam = rng.uniform(0.3, 1.0, (n, 1)).astype(np.float32)
  eye = np.eye(NUM_CLASSES, dtype=np.float32)
  labels = lam * eye[a] + (1 - lam) * eye[b]
  return {'images': images, 'labels': labels}


def _tx():
  return optax.sgd(0.5, momentum=0.9, nesterov=True)


def _init_state(model, tx, ema=True):
  params, state = model.init(jax.random.PRNGKey(0),
                             jnp.zeros((1, 8, 8, 3)), is_training=True)
  return step_lib.TrainState(
      step=np.zeros((), np.int32), params=params, model_state=state,
      opt_state=tx.init(params),
      ema_params=jax.tree.map(jnp.array, params) if ema else {},
      rng=np.asarray(jax.random.key_data(jax.random.PRNGKey(1))),
      nonfinite_total=np.zeros((), np.int32),
      nonfinite_consecutive=np.zeros((), np.int32))


def _reference_run(model, tx, batches, sam_rho=None):
  """Independent one-device math on the whole global batch."""
  st = _init_state(model, tx)
  params, opt_state, ema = st.params, st.opt_state, st.ema_params

  def loss(p, batch):
    logits = model.apply(p, {}, None, batch['images'], True)[0]['logits']
    t = batch['labels'] * (1 - LS) + LS / NUM_CLASSES
    return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(logits), -1))

  for i, batch in enumerate(batches):
    g = jax.grad(loss)(params, batch)
    if sam_rho is not None:
      norm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g)))
      g = jax.grad(loss)(jax.tree.map(lambda p, gg: p + sam_rho * gg / norm,
                                      params, g), batch)
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
    d = min(EMA, (1.0 + i) / (10.0 + i))
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
  return params, ema


def _run(mode, num_devices, batches, compute_dtype='float32', sam_rho=None):
  model, tx = _toy_model(), _tx()
  par = parallel_lib.Parallel(mode, jax.devices()[:num_devices])
  fn = par.wrap_train_step(step_lib.make_train_step(
      model.apply, tx,
      {'label_smoothing': LS, 'ema_decay': EMA, 'sam_rho': sam_rho},
      compute_dtype=compute_dtype))
  state = par.put_replicated(_init_state(model, tx))
  metrics = []
  for b in batches:
    state, m = fn(state, par.put_batch(b))
    metrics.append(par.get_metrics(m))
  return par.get_replicated(state), metrics


def _assert_tree_close(a, b, rtol=2e-5, atol=2e-6):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol)


@pytest.mark.parametrize('mode', ['pmap', 'shard_map'])
def test_step_matches_single_device_math(mode):
  assert jax.device_count() >= 8
  batches = [_batch(0), _batch(1)]
  ref_params, ref_ema = _reference_run(_toy_model(), _tx(), batches)
  state, metrics = _run(mode, 8, batches)
  # Parameters moved (else the comparison would be vacuous) ...
  init = _init_state(_toy_model(), _tx()).params
  assert not np.allclose(state.params['linear']['w'], init['linear']['w'])
  # ... and equal the one-device global-batch result: with shard_map a
  # missing (or doubled) cross-device reduction would make them 8x off.
  _assert_tree_close(state.params, ref_params)
  _assert_tree_close(state.ema_params, ref_ema)
  assert int(state.step) == 2
  assert [int(m['step']) for m in metrics] == [0, 1]
  assert all(float(m['finite']) == 1.0 for m in metrics)


def test_pmap_and_shard_map_agree_and_one_device_agrees():
  batches = [_batch(2), _batch(3)]
  p8, m8 = _run('pmap', 8, batches)
  s8, ms8 = _run('shard_map', 8, batches)
  p1, _ = _run('pmap', 1, batches)
  _assert_tree_close(p8.params, s8.params)
  _assert_tree_close(p8.params, p1.params)
  np.testing.assert_allclose(m8[0]['loss'], ms8[0]['loss'], rtol=1e-6)


def test_sam_step_matches_reference():
  batches = [_batch(4)]
  ref_params, _ = _reference_run(_toy_model(), _tx(), batches, sam_rho=0.05)
  state, _ = _run('shard_map', 4, batches, sam_rho=0.05)
  _assert_tree_close(state.params, ref_params)
  plain, _ = _run('shard_map', 4, batches)
  assert not np.allclose(plain.params['linear']['w'],
                         state.params['linear']['w'])


@pytest.mark.parametrize('mode', ['pmap', 'shard_map'])
def test_nonfinite_step_is_skipped(mode):
  model, tx = _toy_model(), _tx()
  par = parallel_lib.Parallel(mode, jax.devices()[:4])
  fn = par.wrap_train_step(step_lib.make_train_step(
      model.apply, tx, {'label_smoothing': LS, 'ema_decay': EMA}))
  init = _init_state(model, tx)
  state = par.put_replicated(init)
  bad = _batch(5)
  bad['images'][3, 0, 0, 0] = np.nan   # one example on one device
  for expected_consecutive in (1, 2):
    state, m = fn(state, par.put_batch(bad))
    m = par.get_metrics(m)
    assert float(m['finite']) == 0.0
    assert int(m['nonfinite_consecutive']) == expected_consecutive
  host = par.get_replicated(state)
  assert int(host.step) == 2
  assert int(host.nonfinite_total) == 2
  for name in ('params', 'opt_state', 'ema_params', 'model_state'):
    for x, y in zip(jax.tree.leaves(getattr(host, name)),
                    jax.tree.leaves(getattr(init, name))):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # A finite step afterwards applies and resets the consecutive count.
  state, m = fn(state, par.put_batch(_batch(6)))
  m = par.get_metrics(m)
  host = par.get_replicated(state)
  assert float(m['finite']) == 1.0 and int(m['nonfinite_consecutive']) == 0
  assert int(host.nonfinite_total) == 2 and int(host.step) == 3
  assert not np.allclose(host.params['linear']['w'], init.params['linear']['w'])


def test_bf16_compute_keeps_f32_master_weights():
  batches = [_batch(7)]
  f32, m32 = _run('shard_map', 2, batches)
  bf16, m16 = _run('shard_map', 2, batches, compute_dtype='bfloat16')
  for x in jax.tree.leaves(bf16.params):
    assert x.dtype == np.float32
  assert abs(float(m16[0]['loss']) - float(m32[0]['loss'])) < 2e-2
  _assert_tree_close(bf16.params, f32.params, rtol=5e-2, atol=5e-3)


def test_step_rng_depends_on_step_and_device_only():
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  mesh = parallel_lib.make_mesh(jax.devices()[:4])
  base = jax.random.key_data(jax.random.PRNGKey(3))

  def per_device(step):
    key = step_lib.step_rng(base, step)
    return jax.random.uniform(key, (1,))

  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P(),
                            out_specs=P('batch')))
  a, b, a2 = f(jnp.int32(5)), f(jnp.int32(6)), f(jnp.int32(5))
  assert len(set(np.asarray(a).tolist())) == 4      # devices differ
  assert not np.allclose(a, b)                      # steps differ
  np.testing.assert_array_equal(a, a2)              # pure in (seed, step)


@pytest.mark.parametrize('mode', ['pmap', 'shard_map'])
def test_eval_step_masked_sums(mode):
  model = _toy_model()
  st = _init_state(model, _tx())
  par = parallel_lib.Parallel(mode, jax.devices()[:4])
  fn = par.wrap_eval_step(step_lib.make_eval_step(
      model.apply, compute_dtype='float32', num_classes=NUM_CLASSES))
  rng = np.random.RandomState(0)
  batch = {'images': rng.randn(6, 8, 8, 3).astype(np.float32),
           'labels': rng.randint(0, NUM_CLASSES, 6).astype(np.int32)}
  padded = parallel_lib.pad_batch(batch, 8)
  assert padded['mask'].tolist() == [1] * 6 + [0] * 2
  rep = par.put_replicated(st)
  sums = par.get_metrics(fn(rep.params, rep.model_state, par.put_batch(padded)))
  logits = np.asarray(model.apply(st.params, {}, None, batch['images'],
                                  False)[0]['logits'])
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  labels = batch['labels']
  np.testing.assert_allclose(sums['loss'], -logp[np.arange(6), labels].sum(),
                             rtol=1e-5)
  assert float(sums['count']) == 6.0
  assert float(sums['top1']) == float((logits.argmax(-1) == labels).sum())
  top5 = np.argsort(-logits, -1)[:, :5]
  assert float(sums['top5']) == float((top5 == labels[:, None]).any(-1).sum())


@pytest.mark.parametrize('mode', ['pmap', 'shard_map'])
def test_eval_step_flip_tta_averages_the_mirror_images_logits(mode):
  """config.train.eval_flip_tta: the mean of the logits of x and of x mirrored
  left-right (numpy's flip of the width axis, two separate model calls)."""
  model = _toy_model()
  st = _init_state(model, _tx())
  par = parallel_lib.Parallel(mode, jax.devices()[:4])
  make = lambda tta: par.wrap_eval_step(step_lib.make_eval_step(
      model.apply, compute_dtype='float32', num_classes=NUM_CLASSES, flip_tta=tta))
  rng = np.random.RandomState(1)
  images = rng.randn(8, 8, 8, 3).astype(np.float32)
  labels = rng.randint(0, NUM_CLASSES, 8).astype(np.int32)
  rep = par.put_replicated(st)

  def sums(fn, x):
    batch = parallel_lib.pad_batch({'images': x, 'labels': labels}, 8)
    return par.get_metrics(fn(rep.params, rep.model_state, par.put_batch(batch)))

  apply = lambda x: np.asarray(model.apply(st.params, {}, None, x, False)[0]['logits'],
                               np.float64)
  logits = 0.5 * (apply(images) + apply(np.ascontiguousarray(images[:, :, ::-1, :])))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  got = sums(make(True), images)
  np.testing.assert_allclose(got['loss'], -logp[np.arange(8), labels].sum(), rtol=1e-5)
  assert float(got['top1']) == float((logits.argmax(-1) == labels).sum())
  top5 = np.argsort(-logits, -1)[:, :5]
  assert float(got['top5']) == float((top5 == labels[:, None]).any(-1).sum())
  # Not the plain eval: this model is not mirror-invariant...
  plain = sums(make(False), images)
  assert abs(float(plain['loss']) - float(got['loss'])) > 1e-4
  # ...but on mirror-symmetric images both protocols agree.
  symmetric = images + images[:, :, ::-1, :]
  np.testing.assert_allclose(sums(make(True), symmetric)['loss'],
                             sums(make(False), symmetric)['loss'], rtol=1e-5)
