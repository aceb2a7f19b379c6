"""Model zoo: official names/shapes/counts (via eval_shape), tiny forward passes, SPP."""
import functools
import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax import models
from nfnet_jax.models import nfnet as nfnet_mod

TINY_NFNET = dict(name='NFNet', depths=(1, 1, 1, 1), widths=(16, 32, 64, 64),
                  stem_widths=(4, 8, 8, 8), group_width=8)
TINY_NFRESNET = dict(name='NFResNet', depths=(1, 1, 1, 1), widths=(16, 32, 64, 64),
                     stem_width=8)


def param_shapes(model_config, num_classes=1000):
  """{module: {param: shape}} via eval_shape (nothing is compiled)."""
  f = models.create_model(model_config, num_classes)
  init = functools.partial(f.init, is_training=False)
  params, state = jax.eval_shape(init, jax.random.PRNGKey(0),
                                 jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  assert not state
  return {m: {n: v.shape for n, v in d.items()} for m, d in params.items()}


def count(shapes):
  return int(sum(np.prod(s) for d in shapes.values() for s in d.values()))


# Official table (NFNet paper, Table 2 / REFERENCE.md).
NFNET_PARAMS_M = {'F0': 71.5, 'F1': 132.6, 'F2': 193.8, 'F3': 254.9}
NFNET_MODULE_KEYS = {'F0': 94, 'F1': 178, 'F2': 262, 'F3': 346, 'F4': 430, 'F5': 514}


@pytest.fixture(scope='module')
def f0_shapes():
  return param_shapes({'name': 'NFNet', 'variant': 'F0'})


@pytest.mark.parametrize('variant', sorted(NFNET_PARAMS_M))
def test_nfnet_param_counts_match_table(variant):
  n = count(param_shapes({'name': 'NFNet', 'variant': variant}))
  # The table rounds to 0.1M: 0.1% is looser than the rounding.
  assert abs(n / (NFNET_PARAMS_M[variant] * 1e6) - 1) < 1e-3, (variant, n)


@pytest.mark.parametrize('variant', sorted(NFNET_MODULE_KEYS))
def test_nfnet_module_key_counts(variant):
  shapes = param_shapes({'name': 'NFNet', 'variant': variant})
  assert len(shapes) == NFNET_MODULE_KEYS[variant]
  # 7 keys per block + 4 transition shortcuts + 4 stem + final_conv + linear.
  blocks = sum(nfnet_mod.NFNET_VARIANTS[variant]['depth'])
  assert len(shapes) == 7 * blocks + 4 + 6


def test_nfnet_official_names_and_shapes(f0_shapes):
  pattern = re.compile(
      r'^NFNet/~/(stem_conv[0-3]|final_conv|linear|nf_block(_\d+)?'
      r'(/~/(conv0|conv1|conv1b|conv2|conv_shortcut|squeeze_excite/~/linear(_1)?))?)$')
  for module, params in f0_shapes.items():
    assert pattern.match(module), module
    if module.endswith(('linear', 'linear_1')):
      assert set(params) == {'w', 'b'}, module
    elif re.search(r'nf_block(_\d+)?$', module):
      assert params == {'skip_gain': ()}, module
    else:
      assert set(params) == {'w', 'gain', 'bias'}, module
      assert params['gain'] == params['bias'] == (params['w'][-1],)
  # Stem: 16/2 -> 32 -> 64 -> 128/2, 3x3 HWIO.
  assert [f0_shapes[f'NFNet/~/stem_conv{i}']['w'] for i in range(4)] == [
      (3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 64), (3, 3, 64, 128)]
  assert f0_shapes['NFNet/~/final_conv']['w'] == (1, 1, 1536, 3072)
  assert f0_shapes['NFNet/~/linear'] == {'w': (3072, 1000), 'b': (1000,)}
  shortcuts = sorted(m for m in f0_shapes if m.endswith('conv_shortcut'))
  # The transition blocks are 0, 1, 3, 9 for depths (1, 2, 6, 3).
  assert shortcuts == [f'NFNet/~/{b}/~/conv_shortcut'
                       for b in ('nf_block', 'nf_block_1', 'nf_block_3', 'nf_block_9')]
  se = f0_shapes['NFNet/~/nf_block_5/~/squeeze_excite/~/linear']
  assert se == {'w': (1536, 768), 'b': (768,)}  # hidden = int(1536 * 0.5)


def test_nfnet_grouped_conv_shapes(f0_shapes):
  for module, params in f0_shapes.items():
    if module.endswith(('/conv1', '/conv1b')):
      kh, kw, cin, cout = params['w']
      assert (kh, kw) == (3, 3)
      assert cin == 128, module  # group width: input dim of a grouped kernel
      assert cout % 128 == 0
  # Stage 3 bottleneck: 0.5 * 1536 = 768 = 6 groups of 128.
  assert f0_shapes['NFNet/~/nf_block_5/~/conv1']['w'] == (3, 3, 128, 768)
  assert f0_shapes['NFNet/~/nf_block_5/~/conv0']['w'] == (1, 1, 1536, 768)


def test_nfnet_plus_variant_widths():
  shapes = param_shapes({'name': 'NFNet', 'variant': 'F0+'})
  assert shapes['NFNet/~/stem_conv3']['w'] == (3, 3, 64, 192)  # widths[0] // 2
  assert shapes['NFNet/~/linear']['w'] == (4096, 1000)
  # 0.5 * 384 = 192 rounds down to one group of 128 (official rounding).
  assert shapes['NFNet/~/nf_block/~/conv1']['w'] == (3, 3, 128, 128)


def _torchvision_resnet_params(depths, num_classes=1000):
  """BN-ResNet parameter count, computed layer by layer (torchvision layout)."""
  n = 7 * 7 * 3 * 64 + 2 * 64
  cin = 64
  for stage, depth in enumerate(depths):
    out = 256 * 2 ** stage
    mid = out // 4
    for b in range(depth):
      n += cin * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * out + 2 * out
      if b == 0:
        n += cin * out + 2 * out
      cin = out
  return n + cin * num_classes + num_classes


@pytest.mark.parametrize('variant,depths,published', [
    ('ResNet50', (3, 4, 6, 3), 25_557_032), ('ResNet101', (3, 4, 23, 3), 44_549_160)])
def test_nf_resnet_param_counts(variant, depths, published):
  # Independent count: torchvision's BN-ResNet (published 25,557,032 / 44,549,160);
  # WS gain+bias replace BN scale+offset one for one, plus one skip_gain per
  # block (the stem conv's bias replaces the stem BN's offset likewise).
  assert _torchvision_resnet_params(depths) == published
  shapes = param_shapes({'name': 'NFResNet', 'variant': variant})
  assert count(shapes) == published + sum(depths)
  assert len(shapes) == 1 + 4 * sum(depths) + 4 + 1
  assert shapes['NF_ResNet/~/initial_conv']['w'] == (7, 7, 3, 64)
  assert shapes['NF_ResNet/~/nf_res_block/~/conv_shortcut']['w'] == (1, 1, 64, 256)
  assert shapes['NF_ResNet/~/nf_res_block_3/~/conv1']['w'] == (3, 3, 128, 128)
  assert shapes['NF_ResNet/~/linear']['w'] == (2048, 1000)


def test_nf_resnet_se_names():
  shapes = param_shapes({'name': 'NFResNet', 'variant': 'ResNet26', 'se_ratio': 0.25})
  assert shapes['NF_ResNet/~/nf_res_block_7/~/squeeze_excite/~/linear']['w'] == (2048, 512)
  assert len(shapes) == 1 + 6 * 8 + 4 + 1


def numpy_params(shapes, seed=0, skip_gain=0.0):
  """Params with the documented init, drawn with numpy.

  Compiling `init` (one threefry draw per parameter) costs several times more
  than compiling the forward pass on this CPU, so forward tests draw params
  here from the eval_shape tree: kernels N(0, 1/fan_in), gains 1, biases 0,
  skip gains `skip_gain`. (The real initializers are tested in test_nn.py.)
  """
  rng = np.random.default_rng(seed)
  params = {}
  for module, d in shapes.items():
    params[module] = {}
    for name, shape in d.items():
      if name == 'w':
        value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
      elif name == 'gain':
        value = np.ones(shape)
      elif name == 'skip_gain':
        value = np.full(shape, skip_gain)
      else:
        value = np.zeros(shape)
      params[module][name] = jnp.asarray(value, jnp.float32)
  return params


def _run_tiny(model_config, res=32, batch=4, num_classes=5, skip_gain=0.0):
  """Two training forwards (different keys) and one eval forward, in one jit.

  Compiling is what costs time on CPU, so each tiny model is compiled once and
  shared by the tests below.
  """
  f = models.create_model(model_config, num_classes)
  params = numpy_params(param_shapes(model_config, num_classes), skip_gain=skip_gain)
  x = jax.random.normal(jax.random.PRNGKey(1), (batch, res, res, 3))

  @jax.jit
  def run(params, x):
    train1, _ = f.apply(params, {}, jax.random.PRNGKey(2), x, True, True)
    train2, _ = f.apply(params, {}, jax.random.PRNGKey(3), x, True)
    evals, _ = f.apply(params, {}, None, x, False)
    return train1, train2, evals

  return (params,) + jax.tree.map(np.asarray, run(params, x))


@pytest.fixture(scope='module')
def tiny_nfnet():
  return _run_tiny(dict(TINY_NFNET, drop_rate=0.5))


@pytest.fixture(scope='module')
def tiny_nfresnet():
  return _run_tiny(dict(TINY_NFRESNET, se_ratio=0.25, activation='gelu', drop_rate=0.5))


@pytest.mark.parametrize('fixture', ['tiny_nfnet', 'tiny_nfresnet'])
def test_tiny_forward_and_metrics(fixture, request):
  params, train, train2, evals = request.getfixturevalue(fixture)
  for out in (train, train2, evals):
    assert out['logits'].shape == (4, 5) and out['logits'].dtype == np.float32
    assert np.all(np.isfinite(out['logits']))
  spp = train['spp']
  assert set(spp) == {'avg_sq_mean', 'avg_var', 'res_avg_var', 'expected_var',
                      'is_transition'}
  for v in spp.values():
    assert v.shape == (4,)
  np.testing.assert_array_equal(spp['is_transition'], [1, 1, 1, 1])
  np.testing.assert_allclose(spp['expected_var'], [1, 1.04, 1.04, 1.04], rtol=1e-6)
  assert 'spp' not in evals and 'spp' not in train2
  assert np.all(spp['res_avg_var'] > 0) and np.all(spp['avg_var'] > 0)
  # Dropout (rate 0.5) acts in training only: two keys differ, eval does not.
  assert not np.allclose(train['logits'], train2['logits'])


def test_tiny_nfnet_uses_se_and_two_convs(tiny_nfnet):
  params = tiny_nfnet[0]
  assert params['NFNet/~/nf_block_3/~/conv1b']['w'].shape == (3, 3, 8, 32)
  assert params['NFNet/~/nf_block_3/~/squeeze_excite/~/linear']['w'].shape == (64, 32)


def test_nfnet_knobs_change_the_tree():
  shapes = param_shapes(dict(TINY_NFNET, use_two_convs=False, se_ratio=0.0,
                             final_conv_mult=None, final_conv_ch=24), 5)
  assert not any('conv1b' in m or 'squeeze_excite' in m for m in shapes)
  assert shapes['NFNet/~/final_conv']['w'] == (1, 1, 64, 24)
  shapes = param_shapes(dict(TINY_NFNET, width=2.0, bottleneck_ratio=0.25), 5)
  assert shapes['NFNet/~/nf_block_3/~/conv2']['w'] == (1, 1, 32, 128)


def test_every_registered_model_builds_and_traces():
  """Every registry entry traces at a small resolution (eval_shape: no compile).

  The NF models also run for real in test_tiny_forward_and_metrics.
  """
  tiny = {'NFNet': TINY_NFNET, 'NFResNet': TINY_NFRESNET,
          'NFRegNet': dict(name='NFRegNet', depths=(1, 1, 1, 1), widths=(16, 24, 32, 48)),
          'ResNet': dict(name='ResNet', depths=(1, 1, 1, 1), widths=(16, 32, 64, 64),
                         stem_width=8, se_ratio=None, stochdepth_rate=None,
                         activation=None, alpha=None)}
  assert set(models.MODELS) == set(tiny)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  for name, config in tiny.items():
    models.validate_model_config(config, 5)
    f = models.create_model(config, 5)
    params, state = jax.eval_shape(functools.partial(f.init, is_training=True),
                                   jax.random.PRNGKey(0), x)
    out, _ = jax.eval_shape(functools.partial(f.apply, is_training=True, return_metrics=True),
                            params, state, jax.random.PRNGKey(1), x)
    assert out['logits'].shape == (2, 5) and out['logits'].dtype == jnp.float32, name
    assert out['spp']['avg_var'].shape == (4,), name


def test_default_drop_rate_from_table():
  assert nfnet_mod.NFNet.VARIANTS['F0']['drop_rate'] == 0.2
  assert nfnet_mod.NFNet.VARIANTS['F5+']['drop_rate'] == 0.5

  def drop(**kw):
    out = {}

    def fn():
      out['m'] = nfnet_mod.NFNet(10, **kw)

    hk.transform(fn).init(None)
    return out['m'].drop_rate

  assert drop(variant='F1') == 0.3
  assert drop(variant='F1', drop_rate=0.0) == 0.0


def test_nf_resnet_spp_follows_expected_variance():
  """With skip_gain=1 the measured block-output variance tracks the analysis.

  Expected output variance of block i: (1 if transition else expected_var[i])
  + alpha^2. Deviations come from finite width (64 random WS filters: a few %
  per-channel fluctuation) and from SAME zero-padding, which removes kernel
  taps at the borders and so lowers the branch variance: ~5% on the 16x16
  maps of stage 0, ~15% on the 8x8 maps of stage 1 (what the analysis
  ignores). Over 6 seeds the measured/expected ratios were 0.94-1.003 in
  stage 0 and 0.88-0.99 in stage 1; the bounds below (10% / 20%) leave room
  for that spread. Mutation check: with beta fixed to 1 (no downscaling of the
  block input) the stage-1 ratios became 1.84-1.99 and this test fails.
  """
  alpha = 0.5
  config = dict(name='NFResNet', depths=(3, 3, 1, 1), widths=(64, 64, 64, 64),
                stem_width=32, skipinit_gain=1.0, stochdepth_rate=0.0, alpha=alpha)
  f = models.create_model(config, 10)
  params = numpy_params(param_shapes(config, 10), skip_gain=1.0)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 64, 64, 3))
  apply = jax.jit(functools.partial(f.apply, is_training=False, return_metrics=True))
  spp = jax.tree.map(np.asarray, apply(params, {}, None, x)[0]['spp'])
  out_expected = np.where(spp['is_transition'] > 0, 1.0, spp['expected_var']) + alpha ** 2
  ratio = spp['avg_var'][:6] / out_expected[:6]
  assert np.all(np.abs(ratio[:3] - 1) < 0.10), ratio
  assert np.all(np.abs(ratio[3:] - 1) < 0.20), ratio
  # Variance grows within a stage and drops back at the transition.
  assert spp['avg_var'][0] < spp['avg_var'][1] < spp['avg_var'][2] > spp['avg_var'][3]
  # The residual branch itself is ~unit variance (WS + gamma).
  assert np.all(np.abs(spp['res_avg_var'][:3] - 1) < 0.15), spp['res_avg_var']
  assert np.all(np.abs(spp['res_avg_var'][3:6] - 1) < 0.3), spp['res_avg_var']


@pytest.mark.parametrize('field,value,match', [
    ('variant', 'F9', 'config.model.variant'),
    ('activation', 'swish9', 'config.model.activation'),
    ('activation', 'glu', 'halves the channel count'),
    ('alpha', 0.0, 'config.model.alpha'),
    ('alpha', -1, 'config.model.alpha'),
    ('stochdepth_rate', 1.0, 'config.model.stochdepth_rate'),
    ('drop_rate', -0.1, 'config.model.drop_rate'),
    ('se_ratio', -0.5, 'config.model.se_ratio'),
    ('conv_impl', 'cudnn', 'config.model.conv_impl'),
    ('widths', (16, 32), 'config.model.widths'),
    ('group_width', 256, 'config.model.group_width'),
    ('bogus_knob', 1, 'config.model.bogus_knob'),
])
def test_validate_model_config_errors(field, value, match):
  config = {'name': 'NFNet', 'variant': 'F0', field: value}
  with pytest.raises(ValueError, match=re.escape(match)) as info:
    models.validate_model_config(config, num_classes=10)
  assert repr(value) in str(info.value) and 'allowed' in str(info.value)


def test_validate_model_config_accepts_defaults_and_nfresnet():
  from nfnet_jax.config import base_config
  models.validate_model_config(base_config().model, num_classes=1000)
  models.validate_model_config({'name': 'NFResNet', 'variant': 'ResNet101',
                                'se_ratio': 0.25, 'drop_rate': None}, 10)
  with pytest.raises(ValueError, match='config.model.variant'):
    models.validate_model_config({'name': 'NFResNet', 'variant': 'F0'})
  with pytest.raises(ValueError, match='config.model.name'):
    models.validate_model_config({'name': 'VGG'})
  with pytest.raises(ValueError, match='num_classes'):
    models.validate_model_config({'name': 'NFNet'}, num_classes=0)
  assert models.model_min_resolution({'name': 'NFNet'}) == 32
  assert models.model_min_resolution({'name': 'NFResNet'}) == 32
  assert models.get_model_class('NFNet') is nfnet_mod.NFNet


@pytest.mark.parametrize('config', [TINY_NFNET, TINY_NFRESNET], ids=['nfnet', 'nfresnet'])
def test_bfloat16_compute_gives_float32_logits(config):
  """Callers cast params and images to bf16; logits come back in float32."""
  f = models.create_model(config, 5)
  params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.bfloat16),
                        param_shapes(config, 5), is_leaf=lambda s: isinstance(s, tuple))
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.bfloat16)
  out, _ = jax.eval_shape(functools.partial(f.apply, is_training=True, return_metrics=True),
                          params, {}, jax.random.PRNGKey(0), x)
  assert out['logits'].dtype == jnp.float32
  assert out['spp']['avg_var'].dtype == jnp.float32
