"""Tests for the normalized pre-activation ResNet baselines (models/resnet.py)."""
import functools
import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax.models import resnet

# The last stage is 1x1 at 32x32 input. Its bottleneck has 64 channels so
# GroupNorm's 32 groups hold 2 channels each: with one channel per group at
# 1x1, GroupNorm outputs exactly 0 (a true property of GN, not a bug).
TINY = dict(depths=(1, 2, 1, 1), widths=(16, 32, 48, 256), stem_width=8)


def _transform(num_classes=10, return_metrics=False, **kwargs):
  def forward(images, is_training):
    return resnet.ResNet(num_classes, **kwargs)(images, is_training,
                                                return_metrics=return_metrics)
  return hk.transform_with_state(forward)


# Why eager (no jit) and 'rbg' keys: on XLA:CPU compiling a whole-model init
# is dominated by threefry's RNG code (~16 s CPU for the tiny model), while
# eager ops are compiled once per shape and reused by every test below.
def _key(seed):
  return jax.random.key(seed, impl='rbg')


def _init(model, x, is_training=True, seed=0):
  return model.init(_key(seed), x, is_training)


def _images(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape),
                     jnp.float32)


@pytest.mark.parametrize('block_order', resnet.BLOCK_ORDERS)
@pytest.mark.parametrize('norm', resnet.NORMS)
def test_forward_every_norm_and_order(norm, block_order):
  model = _transform(return_metrics=True, norm=norm, block_order=block_order,
                     **TINY)
  x = _images(0, (2, 32, 32, 3))
  params, state = _init(model, x, seed=1)
  apply = model.apply
  out, new_state = apply(params, state, None, x, True)
  # One training step first, so BatchNorm's zero-initialised EMAs are real.
  out_eval, _ = apply(params, new_state, None, x, False)
  for o in (out, out_eval):
    assert o['logits'].shape == (2, 10)
    assert o['logits'].dtype == jnp.float32
    assert np.all(np.isfinite(o['logits']))
  spp = out['spp']
  assert set(spp) == {'avg_sq_mean', 'avg_var', 'res_avg_var', 'expected_var',
                      'is_transition'}
  for v in spp.values():
    assert v.shape == (5,)
  np.testing.assert_array_equal(spp['is_transition'], [1, 1, 0, 1, 1])
  assert np.all(np.isnan(spp['expected_var']))
  assert np.all(np.asarray(spp['avg_var']) > 0)
  assert np.all(np.asarray(spp['res_avg_var']) > 0)
  names = set(params)
  has_norm = norm != 'none'
  assert ('ResNet/~/res_block/~/norm0' in names) == has_norm
  assert ('ResNet/~/final_norm' in names) == has_norm
  assert bool(jax.tree_util.tree_leaves(new_state)) == (norm == 'batchnorm')
  # The projection shortcut exists exactly in the 4 transition blocks.
  shortcuts = sorted(n for n in names if n.endswith('conv_shortcut'))
  assert shortcuts == ['ResNet/~/res_block/~/conv_shortcut',
                       'ResNet/~/res_block_1/~/conv_shortcut',
                       'ResNet/~/res_block_3/~/conv_shortcut',
                       'ResNet/~/res_block_4/~/conv_shortcut']


def _stem_reference(params, x):
  """Input of the first block's norm0: 7x7/2 SAME conv then 3x3/2 max-pool."""
  w = params['ResNet/~/initial_conv']['w']
  y = jax.lax.conv_general_dilated(x, w, (2, 2), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y = np.asarray(y, np.float64)
  # SAME max-pool by hand: pad with -inf (TF puts the extra pad at the end).
  n, h, wd, c = y.shape
  oh, ow = -(-h // 2), -(-wd // 2)
  pad_h, pad_w = max((oh - 1) * 2 + 3 - h, 0), max((ow - 1) * 2 + 3 - wd, 0)
  yp = np.pad(y, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                  (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
              constant_values=-np.inf)
  out = np.full((n, oh, ow, c), -np.inf)
  for i in range(3):
    for j in range(3):
      out = np.maximum(out, yp[:, i:i + 2 * oh:2, j:j + 2 * ow:2, :])
  return out


def test_batchnorm_state_updates_in_training_and_is_used_at_eval():
  model = _transform(norm='batchnorm', **TINY)
  x1, x2 = _images(2, (2, 32, 32, 3)), _images(3, (2, 32, 32, 3)) + 0.5
  params, state0 = _init(model, x1)
  apply = model.apply
  key = 'ResNet/~/res_block/~/norm0/~/mean_ema'
  var_key = 'ResNet/~/res_block/~/norm0/~/var_ema'
  assert int(state0[key]['counter']) == 0

  train1, state1 = apply(params, state0, None, x1, True)
  train2, state2 = apply(params, state1, None, x2, True)
  stem1, stem2 = _stem_reference(params, x1), _stem_reference(params, x2)
  m1, m2 = stem1.mean(axis=(0, 1, 2)), stem2.mean(axis=(0, 1, 2))
  v1 = stem1.var(axis=(0, 1, 2))
  # decay 0.9 with Haiku's zero-debiasing: after one step the EMA is the
  # batch statistic, after two it is (0.9*0.1*m1 + 0.1*m2) / (1 - 0.9**2).
  assert int(state1[key]['counter']) == 1 and int(state2[key]['counter']) == 2
  np.testing.assert_allclose(state1[key]['average'].reshape(-1), m1,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(state1[var_key]['average'].reshape(-1), v1,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(state2[key]['average'].reshape(-1),
                             (0.09 * m1 + 0.1 * m2) / (1 - 0.81),
                             rtol=1e-4, atol=1e-5)

  # Every EMA equals its batch-1 statistic after one step, so eval with
  # state1 on x1 reproduces the training-mode logits on x1 ...
  # (Tolerance: the EMA round-trips through hidden*0.1/(1-0.9) in float32,
  # and BatchNorm over 2 samples in the 1x1 last stage amplifies that
  # rounding to ~1e-4 in the logits; the contrasts below differ by >1e-2.)
  eval1, _ = apply(params, state1, None, x1, False)
  np.testing.assert_allclose(eval1['logits'], train1['logits'], atol=5e-4)
  # ... and eval uses the state, not batch statistics: each example's logits
  # do not depend on the rest of the batch, unlike in training mode.
  eval_one, _ = apply(params, state1, None, x1[:1], False)
  np.testing.assert_allclose(eval_one['logits'][0], eval1['logits'][0],
                             rtol=1e-4, atol=1e-6)
  train_one, _ = apply(params, state1, None, x1[:1], True)
  assert np.max(np.abs(train_one['logits'][0] - train1['logits'][0])) > 1e-2
  eval2, _ = apply(params, state2, None, x1, False)
  assert np.max(np.abs(eval2['logits'] - eval1['logits'])) > 1e-2
  # Eval leaves the state alone.
  _, state_after_eval = apply(params, state1, None, x2, False)
  chex_equal = jax.tree.map(np.array_equal, state_after_eval, state1)
  assert all(jax.tree_util.tree_leaves(chex_equal))


def test_eval_mode_init_creates_the_same_state_as_training_init():
  model = _transform(norm='batchnorm', **TINY)
  x = _images(0, (2, 32, 32, 3))
  _, s_train = _init(model, x, True)
  _, s_eval = _init(model, x, False)
  assert jax.tree.structure(s_train) == jax.tree.structure(s_eval)


def test_groupnorm_matches_numpy():
  assert [resnet.gn_groups(c) for c in (256, 64, 48, 24, 8, 7)] == [
      32, 32, 24, 24, 8, 7]
  x = np.asarray(_images(4, (2, 3, 5, 48)) * 3.0 + 1.0)

  def f(x):
    return resnet._apply_norm(resnet._make_norm('groupnorm', 48, 'gn'), x, True)

  fn = hk.transform(f)
  params = fn.init(_key(0), x)
  rng = np.random.default_rng(0)
  # Non-trivial affine parameters so the per-channel scale/offset is tested too.
  scale = rng.normal(size=48).astype(np.float32)
  offset = rng.normal(size=48).astype(np.float32)
  params = {'gn': {'scale': scale.reshape(params['gn']['scale'].shape),
                   'offset': offset.reshape(params['gn']['offset'].shape)}}
  got = np.asarray(fn.apply(params, None, x))

  groups = 24
  xg = x.astype(np.float64).reshape(2, 3, 5, groups, 48 // groups)
  mean = xg.mean(axis=(1, 2, 4), keepdims=True)
  var = xg.var(axis=(1, 2, 4), keepdims=True)
  want = ((xg - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * scale + offset
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_ws_conv_matches_numpy_standardisation():
  x = _images(5, (2, 6, 6, 5))

  def f(x):
    conv = resnet.StdConv2D(7, 3, stride=2, name='ws')
    return conv(x), conv.standardized_weight(5, jnp.float32)

  fn = hk.transform(f)
  params = fn.init(_key(0), x)
  # Give the kernel a non-zero per-unit mean and scale so standardisation
  # has something to undo.
  w = np.asarray(params['ws']['w'], np.float64)
  w = w * np.arange(1, 8) + np.linspace(-1, 1, 7)
  params = {'ws': {'w': jnp.asarray(w, jnp.float32)}}
  y, w_hat = fn.apply(params, None, x)

  fan_in = w.reshape(-1, 7)
  want = ((fan_in - fan_in.mean(0)) / np.sqrt(fan_in.var(0) + resnet.WS_EPS))
  np.testing.assert_allclose(np.asarray(w_hat).reshape(-1, 7), want,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(w_hat).reshape(-1, 7).std(0), 1.0,
                             rtol=1e-4)
  y_ref = jax.lax.conv_general_dilated(
      x, jnp.asarray(want.reshape(w.shape), jnp.float32), (2, 2), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  assert y.shape == (2, 3, 3, 7)


def _expected_param_count(depths, widths, stem, num_classes, norm):
  """Counts parameters by formula, independently of the Haiku module."""
  bias = norm == 'none'
  norm_params = (lambda c: 0) if norm == 'none' else (lambda c: 2 * c)
  conv = lambda k, i, o: k * k * i * o + (o if bias else 0)
  total = conv(7, 3, stem)
  in_ch = stem
  for stage, (depth, out) in enumerate(zip(depths, widths)):
    mid = out // 4
    for block in range(depth):
      total += norm_params(in_ch) + conv(1, in_ch, mid)
      total += norm_params(mid) + conv(3, mid, mid)
      total += norm_params(mid) + conv(1, mid, out)
      if block == 0:
        total += conv(1, in_ch, out)
      in_ch = out
  return total + norm_params(in_ch) + in_ch * num_classes + num_classes


@pytest.mark.parametrize('norm', ['batchnorm', 'none'])
def test_resnet50_param_count(norm):
  model = _transform(num_classes=1000, norm=norm)
  shapes = jax.eval_shape(
      functools.partial(model.init, is_training=True),
      _key(0), jnp.zeros((1, 32, 32, 3)))[0]
  count = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes))
  want = _expected_param_count((3, 4, 6, 3), (256, 512, 1024, 2048), 64, 1000,
                               norm)
  assert count == want
  if norm == 'batchnorm':
    # External anchor: Keras' ResNet50V2 has 25,568,360 trainable params; it
    # adds biases to the stem conv (64), every last bottleneck conv (15,104)
    # and the 4 shortcuts (3,840) that this model leaves out before a norm.
    assert count == 25_568_360 - 64 - 15_104 - 3_840 == 25_549_352


def test_bn_resnet50_variance_grows_linearly_within_stages():
  """The BN-ReLU-Conv SPP of the NF-ResNet paper (fig. 1) at init.

  Training-mode forward (batch statistics, as the paper's SPPs use; in eval
  mode Haiku's zero-initialised EMAs would make the net unnormalized) of
  ResNet-50 on N(0,1) input, 32x32, batch 8.

  Why these tolerances: the branch ends in conv2(relu(bn(.))) with He init,
  so its second moment is fan_in * (2/fan_in) * E[relu(z)^2] = 1 and its
  squared channel mean is fan_in * (2/fan_in) * E[relu(z)]^2 = 1/pi; the
  branch variance is therefore 1 - 1/pi = 0.682 and, with the branch
  uncorrelated with the skip at init, each block adds it to avg_var. Over
  five seeds the measured per-stage slopes were 0.645-0.700 (<= 5.5% off the
  analytic value), the worst deviation of a stage from its straight line was
  5% of the slope, and each block's increment matched its branch variance to
  <= 7%. The bounds below (15%, 15%, 20%) are ~3x those, wide enough for the
  sampling noise of BN over only 8 samples in the 1x1 last stage, and far
  tighter than what an unnormalized (doubling) or constant profile gives.
  """
  model = _transform(num_classes=1000, return_metrics=True, norm='batchnorm',
                     block_order='bn_relu_conv')

  @jax.jit
  def spp_at_init(rng, x):
    params, state = model.init(rng, x, True)
    return model.apply(params, state, None, x, True)[0]['spp']

  x = _images(7, (8, 32, 32, 3))
  spp = jax.tree.map(np.asarray, spp_at_init(_key(0), x))
  var, res_var = spp['avg_var'], spp['res_avg_var']
  starts = list(np.flatnonzero(spp['is_transition'])) + [len(var)]
  assert starts == [0, 3, 7, 13, 16]
  branch_var = 1.0 - 1.0 / np.pi
  np.testing.assert_allclose(res_var, branch_var, rtol=0.15)
  for a, b in zip(starts[:-1], starts[1:]):
    steps = np.arange(b - a)
    slope, intercept = np.polyfit(steps, var[a:b], 1)
    assert abs(slope / branch_var - 1) < 0.15, (a, slope)
    fit_dev = np.max(np.abs(var[a:b] - (slope * steps + intercept)))
    assert fit_dev < 0.15 * slope, (a, fit_dev, slope)
    np.testing.assert_allclose(np.diff(var[a:b]), res_var[a + 1:b], rtol=0.2)
    # Transition: the skip is the projection of the normalized input, so the
    # variance resets to (shortcut ~ branch) + branch = 2 * (1 - 1/pi).
    np.testing.assert_allclose(var[a], 2 * branch_var, rtol=0.2)
    if a > 0:
      assert var[a] < 0.6 * var[a - 1]


def test_skipinit_and_zero_init_last_make_blocks_identity_at_init():
  x = _images(8, (2, 32, 32, 3))
  for kwargs in (dict(skipinit=True), dict(zero_init_last=True)):
    model = _transform(return_metrics=True, norm='groupnorm', **kwargs, **TINY)
    params, state = _init(model, x)
    spp = model.apply(params, state, None, x, True)[0]['spp']
    np.testing.assert_array_equal(spp['res_avg_var'], 0.0)
    # Non-transition block 2 passes its input through unchanged.
    np.testing.assert_allclose(spp['avg_var'][2], spp['avg_var'][1], rtol=1e-6)
    has_gain = 'skip_gain' in params.get('ResNet/~/res_block', {})
    assert has_gain == bool(kwargs.get('skipinit'))


def test_dropout_and_stochdepth_use_the_rng_only_in_training():
  model = _transform(norm='groupnorm', drop_rate=0.5, stochdepth_rate=0.5,
                     **TINY)
  x = _images(9, (2, 32, 32, 3))
  params, state = _init(model, x)
  apply = model.apply
  a = apply(params, state, _key(1), x, True)[0]['logits']
  b = apply(params, state, _key(2), x, True)[0]['logits']
  assert not np.allclose(a, b)
  e1 = apply(params, state, None, x, False)[0]['logits']
  e2 = apply(params, state, _key(3), x, False)[0]['logits']
  np.testing.assert_array_equal(e1, e2)


@pytest.mark.parametrize('field,value', [
    ('variant', 'ResNet34'), ('norm', 'layernorm'), ('block_order', 'conv_bn_relu'),
    ('activation', 'swish9'), ('width', 0), ('drop_rate', 1.5),
    ('depths', [3, 0]), ('alpha', 0.2), ('se_ratio', 0.5), ('conv_impl', 'fast'),
    ('bogus_field', 1)])
def test_validate_config_names_field_value_and_allowed(field, value):
  with pytest.raises(ValueError) as err:
    resnet.validate_config({field: value})
  msg = str(err.value)
  assert f'config.model.{field}' in msg
  assert repr(value) in msg
  assert 'allowed' in msg
  if field == 'norm':
    for allowed in resnet.NORMS:
      assert allowed in msg


def test_validate_config_accepts_defaults_and_checks_consistency():
  resnet.validate_config({})
  resnet.validate_config(dict(variant='ResNet200', norm='ws_groupnorm',
                              block_order='relu_bn_conv', drop_rate=None,
                              alpha=None, se_ratio=None, conv_impl='auto'))
  with pytest.raises(ValueError, match='config.model.widths'):
    resnet.validate_config(dict(depths=[1, 1]))  # 4 default widths
  with pytest.raises(ValueError, match='config.model.zero_init_last'):
    resnet.validate_config(dict(norm='ws_groupnorm', zero_init_last=True))
  with pytest.raises(ValueError, match='config.model.norm'):
    _transform(norm='layernorm').init(_key(0),
                                      jnp.zeros((1, 32, 32, 3)), True)
  assert resnet.min_resolution({}) == 32


def test_fixup_init_facts():
  """Fixup (Zhang et al. 2019): zero last conv, scalar biases and multipliers."""
  depths = (1, 2, 1, 1)
  model = _transform(return_metrics=True, norm='none', fixup=True, **dict(
      TINY, depths=depths))
  x = jnp.abs(_images(10, (4, 32, 32, 3)))
  params, state = _init(model, x)
  assert params['ResNet']['bias1'].shape == () and params['ResNet']['bias2'].shape == ()
  np.testing.assert_array_equal(params['ResNet/~/linear']['w'], 0.0)
  scalars = {'bias1a', 'bias1b', 'bias2a', 'bias2b', 'bias3a', 'bias3b', 'scale'}
  num_branches = sum(depths)
  for i in range(num_branches):
    name = 'ResNet/~/res_block' + (f'_{i}' if i else '')
    assert set(params[name]) == scalars
    for k in scalars:
      assert params[name][k].shape == ()
      assert float(params[name][k]) == (1.0 if k == 'scale' else 0.0)
    np.testing.assert_array_equal(params[name + '/~/conv2']['w'], 0.0)
    assert set(params[name + '/~/conv0']) == {'w'}  # no conv biases
  # Branch convs: He (fan-out) std shrunk by L^(-1/4), L = 5 branches here.
  w = np.asarray(params['ResNet/~/res_block_3/~/conv1']['w'])  # 3x3, 12 -> 12
  mid = w.shape[-1]
  want = np.sqrt(2.0 / (mid * 9)) * num_branches ** -0.25
  assert abs(w.std() / want - 1) < 0.1, (w.std(), want)
  # At init every branch is zero, so a block is act(shortcut): after the
  # transition, block 2 passes its (post-ReLU, non-negative) input unchanged.
  spp = model.apply(params, state, None, x, True)[0]['spp']
  np.testing.assert_array_equal(spp['res_avg_var'], 0.0)
  np.testing.assert_allclose(spp['avg_var'][2], spp['avg_var'][1], rtol=1e-6)


def test_fixup_validation():
  for kwargs, field in ((dict(fixup=True), 'norm'),
                        (dict(fixup=True, norm='none', skipinit=True), 'skipinit'),
                        (dict(fixup=True, norm='none', block_order='relu_bn_conv'),
                         'block_order'),
                        (dict(fixup=1), 'fixup')):
    with pytest.raises(ValueError, match=f'config.model.{field}'):
      resnet.validate_config(kwargs)
  resnet.validate_config(dict(fixup=True, norm='none'))
