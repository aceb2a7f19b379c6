"""Optimizer builder, schedule, masks, EMA and config validation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nfnet_jax import config as config_lib
from nfnet_jax import optim

CLASSIFIER = 'NFNet/~/linear'
SE = 'NFNet/~/nf_block/~/squeeze_excite/~/linear'


def _params(seed=0):
  rng = np.random.RandomState(seed)
  n = lambda *s: np.asarray(rng.normal(size=s), np.float32)
  return {
      'NFNet/~/stem_conv0': {'w': n(3, 3, 3, 4), 'gain': 1 + 0.1 * n(4),
                             'bias': 0.1 * n(4)},
      'NFNet/~/nf_block': {'skip_gain': np.asarray(0.3, np.float32)},
      SE: {'w': n(4, 2), 'b': 0.1 * n(2)},
      CLASSIFIER: {'w': 0.1 * n(4, 3), 'b': 0.1 * n(3)},
  }


def _grads(step, params):
  rng = np.random.RandomState(100 + step)
  # Mix of small and huge gradients so AGC engages on some units only.
  return jax.tree_util.tree_map(
      lambda p: np.asarray(rng.normal(size=p.shape) *
                           rng.choice([1e-3, 5.0], size=p.shape), np.float32),
      params)


def _opt_config(**overrides):
  c = config_lib.base_config().optimizer
  c.warmup_steps = 2
  c.weight_decay = 1e-2     # large, so a wrong mask shows in the numbers
  c.clipping = 0.05
  for k, v in overrides.items():
    c[k] = v
  return c


# ---------------------------------------------------------------- reference
def _np_unorm(x):
  x = np.asarray(x, np.float64)
  if np.squeeze(x).ndim <= 1:
    return np.sqrt(np.sum(x * x))
  axes = tuple(range(x.ndim - 1))
  return np.sqrt(np.sum(x * x, axis=axes, keepdims=True))


def _official_lr(itr, max_val, warmup, num_steps):
  """nfnets/optim.py WarmupCosineDecay(start_val=0, min_val=0)."""
  warm = max_val * itr / warmup
  cos_itr = (itr - warmup) / (num_steps - warmup)
  cos = 0.5 * max_val * (1 + math.cos(math.pi * cos_itr))
  return warm if not warmup < itr else cos


def _official_sgd_agc(params, grads_seq, lr_fn, wd, mom, clip, eps, nesterov,
                      no_wd, no_clip):
  """numpy transcription of the official SGD_AGC.update_param, per param."""
  p = {k: {n: np.asarray(v, np.float64) for n, v in m.items()}
       for k, m in params.items()}
  buf = {k: {n: np.zeros_like(v) for n, v in m.items()} for k, m in p.items()}
  for t, grads in enumerate(grads_seq):
    lr = lr_fn(t)
    for mod in p:
      for name in p[mod]:
        path = f'{mod}/{name}'
        g = np.asarray(grads[mod][name], np.float64)
        w = p[mod][name]
        if clip is not None and not no_clip(path):
          max_norm = np.maximum(_np_unorm(w), eps) * clip
          g_norm = _np_unorm(g)
          g = np.where(g_norm > max_norm,
                       g * (max_norm / np.maximum(g_norm, 1e-6)), g)
        if not no_wd(path):
          g = g + w * wd
        buf[mod][name] = mom * buf[mod][name] + g
        g = g + mom * buf[mod][name] if nesterov else buf[mod][name]
        p[mod][name] = w - lr * g
  return p


def _run(tx, params, grads_seq, **update_kwargs):
  state = tx.init(params)
  update = jax.jit(tx.update)
  for g in grads_seq:
    u, state = update(g, state, params, **update_kwargs)
    params = optax.apply_updates(params, u)
  return params


def _official_wd_excluded(path):
  name = path.split('/')[-1]
  return name in ('scale', 'offset', 'b') or 'gain' in name or 'bias' in name


def _official_clip_excluded(path):
  mod, name = path.rsplit('/', 1)
  return ('linear' in mod and 'squeeze_excite' not in mod
          and not _official_wd_excluded(path))


@pytest.mark.parametrize('nesterov', [True, False])
def test_chain_equals_official_update_order(nesterov):
  batch, total, steps = 512, 6, 5
  c = _opt_config(nesterov=nesterov)
  params = _params()
  grads_seq = [_grads(t, params) for t in range(steps)]
  tx, sched = optim.build_optimizer(c, batch, total)
  got = _run(tx, params, grads_seq)
  peak = 0.1 * batch / 256
  lr_fn = lambda t: _official_lr(t, peak, 2, total)
  want = _official_sgd_agc(params, grads_seq, lr_fn, 1e-2, 0.9, 0.05, 1e-3,
                           nesterov, _official_wd_excluded,
                           _official_clip_excluded)
  for mod in want:
    for name in want[mod]:
      np.testing.assert_allclose(got[mod][name], want[mod][name], rtol=2e-5,
                                 atol=1e-7, err_msg=f'{mod}/{name}')
  for t in range(steps):
    np.testing.assert_allclose(sched(t), lr_fn(t), rtol=1e-6, atol=1e-7)
  # Sanity that the reference is sensitive to the masks (a wrong mask fails).
  wrong = _official_sgd_agc(params, grads_seq, lr_fn, 1e-2, 0.9, 0.05, 1e-3,
                            nesterov, lambda p: False, _official_clip_excluded)
  assert not np.allclose(wrong['NFNet/~/stem_conv0']['gain'],
                         want['NFNet/~/stem_conv0']['gain'], rtol=1e-4)


def test_clipping_none_is_plain_sgd_with_wd():
  params = _params(1)
  grads_seq = [_grads(t, params) for t in range(3)]
  tx, _ = optim.build_optimizer(_opt_config(clipping=None), 256, 6)
  got = _run(tx, params, grads_seq)
  lr_fn = lambda t: _official_lr(t, 0.1, 2, 6)
  want = _official_sgd_agc(params, grads_seq, lr_fn, 1e-2, 0.9, None, 1e-3,
                           True, _official_wd_excluded, lambda p: True)
  for mod in want:
    for name in want[mod]:
      np.testing.assert_allclose(got[mod][name], want[mod][name], rtol=2e-5,
                                 atol=1e-7)


def test_default_masks_match_official_rules():
  c = config_lib.base_config().optimizer
  params = _params()
  params['ResNet/~/bn'] = {'scale': np.ones(3), 'offset': np.zeros(3)}
  paths = optim.param_paths(params)
  wd_mask = jax.tree_util.tree_leaves(optim.make_mask(params, c.wd_exclude))
  clip_mask = jax.tree_util.tree_leaves(
      optim.make_mask(params, c.clip_exclude))
  assert [p for p, m in zip(paths, wd_mask) if m] == [
      p for p in paths if _official_wd_excluded(p)]
  assert [p for p, m in zip(paths, clip_mask) if m] == [f'{CLASSIFIER}/w']
  assert optim.CLASSIFIER_REGEX == c.clip_exclude


def test_param_paths_and_make_mask():
  params = {'NFNet/~/linear': {'w': 1.0, 'b': 2.0}, 'NFNet/~/conv': {'gain': 3.}}
  assert optim.param_paths(params) == [
      'NFNet/~/conv/gain', 'NFNet/~/linear/b', 'NFNet/~/linear/w']
  assert optim.make_mask(params, r'linear/w$') == {
      'NFNet/~/linear': {'w': True, 'b': False}, 'NFNet/~/conv': {'gain': False}}
  assert optim.make_mask(params, None)['NFNet/~/linear']['w'] is False
  assert optim.make_mask(params, lambda p, x: x > 1.5) == {
      'NFNet/~/linear': {'w': False, 'b': True}, 'NFNet/~/conv': {'gain': True}}
  assert optim.param_paths({'a': [1, 2], 'b': (3,)}) == ['a/0', 'a/1', 'b/0']


def test_schedule_values():
  tx, sched = optim.build_optimizer(
      _opt_config(warmup_steps=100, base_lr=0.1, lr_batch_base=256), 4096,
      1000)
  del tx
  peak = 0.1 * 4096 / 256
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(sched(50), peak / 2, rtol=1e-6)
  np.testing.assert_allclose(sched(100), peak, rtol=1e-6)     # warm-up end
  np.testing.assert_allclose(sched(550), peak / 2, rtol=1e-5)  # cosine middle
  np.testing.assert_allclose(sched(1000), 0.0, atol=1e-6)      # end
  np.testing.assert_allclose(sched(1200), 0.0, atol=1e-6)      # clamped after
  for t in (1, 99, 101, 777, 999):
    np.testing.assert_allclose(sched(t), _official_lr(t, peak, 100, 1000),
                               rtol=1e-5, atol=1e-6)
  _, const = optim.build_optimizer(
      _opt_config(warmup_steps=10, schedule='constant'), 256, 100)
  np.testing.assert_allclose([const(5), const(10), const(100)],
                             [0.05, 0.1, 0.1], rtol=1e-6)
  _, nowarm = optim.build_optimizer(_opt_config(warmup_steps=0), 256, 100)
  np.testing.assert_allclose([nowarm(0), nowarm(50), nowarm(100)],
                             [0.1, 0.05, 0.0], rtol=1e-5, atol=1e-7)
  # Default recipe: 1.6 peak at batch 4096 after 5 epochs of warm-up, which
  # end between steps 1563 and 1564 (1563.92 steps).
  c = config_lib.base_config()
  _, rec = optim.build_optimizer(c.optimizer, c.train.batch_size,
                                 c.train.total_steps)
  np.testing.assert_allclose(rec(1563), 1.6 * 1563 / 1563.9245605, rtol=1e-6)
  np.testing.assert_allclose(rec(1564), 1.6, rtol=1e-6)


def test_adam_coupled_and_adamw_decoupled_weight_decay():
  params = _params(2)
  zero = jax.tree_util.tree_map(np.zeros_like, params)
  kw = dict(warmup_steps=0, schedule='constant', clipping=None,
            weight_decay=0.1)
  # adamw with zero gradients: only the decoupled decay p -= lr * wd * p.
  tx, _ = optim.build_optimizer(_opt_config(name='adamw', **kw), 256, 10)
  u, _ = jax.jit(tx.update)(zero, tx.init(params), params)
  for path, du, p in zip(optim.param_paths(params),
                         jax.tree_util.tree_leaves(u),
                         jax.tree_util.tree_leaves(params)):
    want = 0.0 if _official_wd_excluded(path) else -0.1 * 0.1 * p
    np.testing.assert_allclose(du, want, rtol=1e-6, atol=1e-12, err_msg=path)
  # adam (coupled): g = wd * p goes through Adam; first bias-corrected step
  # is -lr * g / (|g| + eps) = -lr * sign(p) (approximately).
  tx, _ = optim.build_optimizer(_opt_config(name='adam', **kw), 256, 10)
  u, _ = jax.jit(tx.update)(zero, tx.init(params), params)
  for path, du, p in zip(optim.param_paths(params),
                         jax.tree_util.tree_leaves(u),
                         jax.tree_util.tree_leaves(params)):
    g = 0.1 * np.asarray(p, np.float64)
    want = (0.0 if _official_wd_excluded(path)
            else -0.1 * g / (np.abs(g) + 1e-8))
    np.testing.assert_allclose(du, want, rtol=1e-5, atol=1e-12, err_msg=path)


def test_gradient_accumulation_equals_big_batch():
  params = _params(3)
  micro = [_grads(t, params) for t in range(4)]
  tx_k, sched_k = optim.build_optimizer(
      _opt_config(accum_steps=2, warmup_steps=2), 256, 8)
  tx_1, sched_1 = optim.build_optimizer(
      _opt_config(accum_steps=1, warmup_steps=1), 512, 4)
  state = tx_k.init(params)
  p_k = params
  update_k = jax.jit(tx_k.update)
  for t, g in enumerate(micro):
    u, state = update_k(g, state, p_k)
    if t % 2 == 0:  # mid-accumulation calls leave the params alone
      assert all(np.all(x == 0) for x in jax.tree_util.tree_leaves(u))
    p_k = optax.apply_updates(p_k, u)
  means = [jax.tree_util.tree_map(lambda a, b: (a + b) / 2, micro[i],
                                  micro[i + 1]) for i in (0, 2)]
  p_1 = _run(tx_1, params, means)
  for a, b in zip(jax.tree_util.tree_leaves(p_k),
                  jax.tree_util.tree_leaves(p_1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # The train-step schedule reports the LR of the update a step feeds.
  np.testing.assert_allclose([sched_k(t) for t in range(8)],
                             [sched_1(t // 2) for t in range(8)], rtol=1e-6)


def _quadratic():
  a = {'m': {'w': np.asarray([[1.0, 2.0], [3.0, 0.5]], np.float32)},
       'n': {'b': np.asarray([0.7, 1.5], np.float32)}}
  loss = lambda p: 0.5 * sum(jnp.sum(a[k][n] * p[k][n] ** 2)
                             for k in a for n in a[k])
  params = {'m': {'w': np.asarray([[1.0, -1.0], [0.5, 2.0]], np.float32)},
            'n': {'b': np.asarray([0.2, -0.4], np.float32)}}
  return a, loss, params


def test_sam_opaque_uses_gradient_at_perturbed_point():
  rho, lr = 0.05, 0.1
  a, loss, params = _quadratic()
  c = _opt_config(sam_rho=rho, clipping=None, weight_decay=0.0, momentum=0.0,
                  nesterov=False, warmup_steps=0, schedule='constant')
  tx, _ = optim.build_optimizer(c, 256, 10, sam_mode='opaque')
  grad_fn = lambda p, _: jax.grad(loss)(p)
  g = jax.grad(loss)(params)
  u, _ = tx.update(g, tx.init(params), params, grad_fn=grad_fn)
  # numpy: w_adv = w + rho * g / ||g|| (global norm), update = -lr * g(w_adv).
  flat = lambda t: [np.asarray(t['m']['w'], np.float64),
                    np.asarray(t['n']['b'], np.float64)]
  w, am = flat(params), flat(a)
  gw = [x * y for x, y in zip(am, w)]
  norm = np.sqrt(sum(np.sum(x * x) for x in gw))
  want = [-lr * x * (y + rho * z / norm) for x, y, z in zip(am, w, gw)]
  for got, exp in zip(flat(u), want):
    np.testing.assert_allclose(got, exp, rtol=1e-5)
  with pytest.raises(ValueError, match='grad_fn'):
    tx.update(g, tx.init(params), params)
  # Without SAM, passing grad_fn is accepted and ignored.
  c2 = _opt_config(clipping=None, weight_decay=0.0, momentum=0.0,
                   nesterov=False, warmup_steps=0, schedule='constant')
  tx2, _ = optim.build_optimizer(c2, 256, 10)
  u2, _ = tx2.update(g, tx2.init(params), params, grad_fn=grad_fn)
  for got, exp in zip(flat(u2), gw):
    np.testing.assert_allclose(got, -lr * exp, rtol=1e-6)


def test_sam_train_step_mode_equals_opaque_mode():
  # Full chain (AGC, wd, Nesterov, warm-up) for 3 steps: perturbing in the
  # train step and calling the plain chain == optax's opaque SAM.
  rho = 0.05
  _, loss, params = _quadratic()
  c = _opt_config(sam_rho=rho, warmup_steps=1)
  tx_step, _ = optim.build_optimizer(c, 256, 5)
  tx_opaque, _ = optim.build_optimizer(c, 256, 5, sam_mode='opaque')
  grad = jax.grad(loss)
  s1, s2 = tx_step.init(params), tx_opaque.init(params)
  p1 = p2 = params
  for _ in range(3):
    g1 = grad(optim.sam_perturbation(grad(p1), p1, rho))
    u1, s1 = tx_step.update(g1, s1, p1)
    p1 = optax.apply_updates(p1, u1)
    u2, s2 = tx_opaque.update(grad(p2), s2, p2, grad_fn=lambda p, _: grad(p))
    p2 = optax.apply_updates(p2, u2)
  for x, y in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
    np.testing.assert_allclose(x, y, rtol=1e-6)
  assert not np.allclose(p1['m']['w'], params['m']['w'])
  with pytest.raises(ValueError, match="sam_mode='x'"):
    optim.build_optimizer(c, 256, 5, sam_mode='x')


def test_sam_zero_gradient_is_finite():
  params = {'m': {'w': np.ones((2, 2), np.float32)}}
  zero = {'m': {'w': np.zeros((2, 2), np.float32)}}
  np.testing.assert_array_equal(
      optim.sam_perturbation(zero, params, 0.05)['m']['w'], 1.0)
  tx, _ = optim.build_optimizer(_opt_config(sam_rho=0.05), 256, 10,
                                sam_mode='opaque')
  u, _ = tx.update(zero, tx.init(params), params,
                   grad_fn=lambda p, _: zero)
  assert np.all(np.isfinite(u['m']['w']))


# --------------------------------------------------------------------- EMA
def test_ema_decay_warmup_values():
  np.testing.assert_allclose(optim.ema_decay(0, 0.99999), 0.1, rtol=1e-6)
  np.testing.assert_allclose(optim.ema_decay(1, 0.99999), 2 / 11, rtol=1e-6)
  np.testing.assert_allclose(optim.ema_decay(90, 0.99999), 0.91, rtol=1e-6)
  np.testing.assert_allclose(optim.ema_decay(10**7, 0.99999), 0.99999,
                             rtol=1e-7)
  np.testing.assert_allclose(optim.ema_decay(5, 0.5), 0.4, rtol=1e-6)
  np.testing.assert_allclose(optim.ema_decay(20, 0.5), 0.5, rtol=1e-7)
  np.testing.assert_allclose(optim.ema_decay(jnp.arange(3), 0.9),
                             [0.1, 2 / 11, 3 / 12], rtol=1e-6)


def test_update_ema_hand_values():
  ema = {'m': {'w': jnp.full((2,), 10.0)}}
  # Step 0: d = 0.1 -> 0.1 * 10 + 0.9 * 0 = 1.0
  ema = optim.update_ema(ema, {'m': {'w': jnp.zeros(2)}}, 0, 0.99999)
  np.testing.assert_allclose(ema['m']['w'], 1.0, rtol=1e-6)
  # Step 2: d = 3/12 = 0.25 -> 0.25 * 1 + 0.75 * 5 = 4.0
  ema = optim.update_ema(ema, {'m': {'w': jnp.full((2,), 5.0)}}, 2, 0.99999)
  np.testing.assert_allclose(ema['m']['w'], 4.0, rtol=1e-6)
  # Far past warm-up with decay 0.5: average of the two.
  ema = optim.update_ema(ema, {'m': {'w': jnp.full((2,), 8.0)}}, 1000, 0.5)
  np.testing.assert_allclose(ema['m']['w'], 6.0, rtol=1e-6)
  bf = optim.update_ema({'x': jnp.ones(2, jnp.bfloat16)}, {'x': jnp.zeros(2)},
                        0, 0.9)
  assert bf['x'].dtype == jnp.bfloat16


# -------------------------------------------------------------- validation
BAD_FIELDS = [
    ('name', 'lamb', "one of ('sgd', 'adam', 'adamw')"),
    ('momentum', 1.0, '[0, 1)'),
    ('momentum', -0.1, '[0, 1)'),
    ('nesterov', 'yes', 'True or False'),
    ('base_lr', -1.0, '>= 0'),
    ('base_lr', float('inf'), 'finite'),
    ('lr_batch_base', 0, '> 0'),
    ('schedule', 'linear', "one of ('cosine', 'constant')"),
    ('warmup_steps', -1, '>= 0'),
    ('warmup_steps', 'five', 'number >= 0'),
    ('weight_decay', -1e-5, '>= 0'),
    ('wd_exclude', '(gain', 'not a valid regular expression'),
    ('wd_exclude', 5, 'regex string'),
    ('clipping', 0.0, '> 0'),
    ('clipping', -0.01, '> 0'),
    ('clip_eps', -1e-3, '> 0'),
    ('clip_eps', 0.0, 'pins zero-initialised'),
    ('clip_exclude', '[linear', 'not a valid regular expression'),
    ('sam_rho', 0.0, '> 0'),
    ('accum_steps', 0, '>= 1'),
    ('accum_steps', 1.5, 'integer'),
    ('ema_decay', 1.0, '[0, 1)'),
    ('ema_decay', -0.5, '[0, 1)'),
    ('label_smoothing', 1.0, '[0, 1)'),
    ('label_smoothing', -0.1, '[0, 1)'),
]


@pytest.mark.parametrize('field,value,allowed', BAD_FIELDS)
def test_each_bad_field_is_named(field, value, allowed):
  d = dict(config_lib.base_config().optimizer.to_dict())
  d[field] = value
  with pytest.raises(ValueError) as e:
    optim.validate_optimizer_config(d)
  msg = str(e.value)
  assert f'config.optimizer.{field}={value!r}' in msg
  assert allowed in msg
  assert msg.count('config.optimizer.') == 1  # only the bad field is reported


def test_cross_field_and_total_steps_errors():
  d = dict(config_lib.base_config().optimizer.to_dict())
  d.update(sam_rho=0.05, accum_steps=4)
  with pytest.raises(ValueError, match=r'config.optimizer.sam_rho=0.05 .*'
                     r'accum_steps=4'):
    optim.validate_optimizer_config(d)
  d = dict(config_lib.base_config().optimizer.to_dict())
  d['warmup_steps'] = 11
  with pytest.raises(ValueError, match=r'config.optimizer.warmup_steps=11 .*'
                     r'total_steps \(10\)'):
    optim.build_optimizer(d, 256, 10)
  optim.validate_optimizer_config(d)  # fine when total_steps is unknown
  d.update(name='bogus', clipping=-1.0, label_smoothing=2.0)
  with pytest.raises(ValueError) as e:
    optim.validate_optimizer_config(d, total_steps=10)
  for field in ('name', 'clipping', 'label_smoothing', 'warmup_steps'):
    assert f'config.optimizer.{field}=' in str(e.value)
  with pytest.raises(ValueError, match='batch_size=0'):
    optim.build_optimizer(config_lib.base_config().optimizer, 0, 10)
  with pytest.raises(ValueError, match='total_steps=0'):
    optim.build_optimizer(config_lib.base_config().optimizer, 256, 0)


def test_defaults_and_partial_dicts_validate():
  optim.validate_optimizer_config(config_lib.base_config().optimizer)
  optim.validate_optimizer_config({'name': 'adamw'})  # rest from defaults
  optim.validate_optimizer_config({'clipping': None, 'sam_rho': 0.1,
                                   'ema_decay': None, 'weight_decay': None})
  tx, _ = optim.build_optimizer({'name': 'sgd', 'momentum': 0.0,
                                 'clipping': None, 'warmup_steps': 0}, 128, 5)
  assert isinstance(tx, optax.GradientTransformation)
