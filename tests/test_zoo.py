"""Model zoo (issue 13): NF-RegNets, the light NFNets, their counts, names and SPP."""
import functools
import math
import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax import models
from nfnet_jax import nn as nfnn
from nfnet_jax.models import nf_regnet
from nfnet_jax.models import nfnet as nfnet_mod

from conftest import load_repo_module


def param_shapes(model_config, num_classes=1000, res=32):
  """{module: {param: shape}} via eval_shape (nothing is compiled)."""
  f = models.create_model(model_config, num_classes)
  params, _ = jax.eval_shape(functools.partial(f.init, is_training=False),
                             jax.random.PRNGKey(0),
                             jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32))
  return {m: {n: v.shape for n, v in d.items()} for m, d in params.items()}


def count(shapes):
  return int(sum(math.prod(s) for d in shapes.values() for s in d.values()))


# Measured from DeepMind's official nf_regnet.py (1000 classes, activation='silu').
OFFICIAL_NF_REGNET_PARAMS = {
    'B0': 8_595_372, 'B1': 10_019_208, 'B2': 13_785_904, 'B3': 18_136_667,
    'B4': 29_315_830, 'B5': 48_707_138, 'B6': 70_045_805, 'B7': 101_743_204,
    'B8': 142_314_441}
# Measured with timm 1.0.31 (1000 classes).
TIMM_LIGHT_PARAMS = {
    'nfnet_l0': 35_074_488, 'eca_nfnet_l0': 24_143_924, 'eca_nfnet_l1': 41_407_728,
    'eca_nfnet_l2': 56_722_348, 'eca_nfnet_l3': 72_036_968}


def traced_forward(config, num_classes=1000, res=32):
  """Parameter shapes and the outputs of a full training forward, traced.

  eval_shape traces init and apply (the whole network at `res` px) without
  compiling anything.
  """
  f = models.create_model(config, num_classes)
  x = jax.ShapeDtypeStruct((2, res, res, 3), jnp.float32)
  params, state = jax.eval_shape(functools.partial(f.init, is_training=True),
                                 jax.random.PRNGKey(0), x)
  out, _ = jax.eval_shape(functools.partial(f.apply, is_training=True, return_metrics=True),
                          params, state, jax.random.PRNGKey(1), x)
  shapes = {m: {n: v.shape for n, v in d.items()} for m, d in params.items()}
  return shapes, out


@pytest.mark.parametrize('variant', sorted(OFFICIAL_NF_REGNET_PARAMS))
def test_nf_regnet_param_counts_equal_the_official_code(variant):
  shapes, out = traced_forward({'name': 'NFRegNet', 'variant': variant})
  assert count(shapes) == OFFICIAL_NF_REGNET_PARAMS[variant]
  # The forward of every variant at 32 px (real computation: tiny and B0 runs below).
  depth = sum(nf_regnet.NF_REGNET_VARIANTS[variant]['depth'])
  assert out['logits'].shape == (2, 1000) and out['logits'].dtype == jnp.float32
  assert out['spp']['avg_var'].shape == (depth,)


@pytest.mark.parametrize('variant', sorted(TIMM_LIGHT_PARAMS))
def test_light_nfnet_param_counts_equal_timm(variant):
  shapes, out = traced_forward({'name': 'NFNet', 'variant': variant})
  assert count(shapes) == TIMM_LIGHT_PARAMS[variant]
  depth = sum(nfnet_mod.NFNET_VARIANTS[variant]['depth'])
  assert out['logits'].shape == (2, 1000) and out['spp']['avg_var'].shape == (depth,)
  # timm's SkipInit form has no scalar skip_gain; the attention is SE or ECA.
  assert not any('skip_gain' in d for d in shapes.values())
  kind = 'eca' if variant.startswith('eca') else 'squeeze_excite'
  blocks = sum(nfnet_mod.NFNET_VARIANTS[variant]['depth'])
  assert sum(m.endswith('/~/' + kind) or m.endswith('/~/' + kind + '/~/linear')
             for m in shapes) == blocks


def _official_regnet_tree(variant, num_classes=1000):
  """The official module tree of NF_RegNet, from the rules of its source.

  Written independently of nf_regnet.block_plan: stem int(w0 * 0.75); block
  k expands its input by 2.25 (1 for k = 0), rounds down to groups of 8;
  SE hidden int(width / 2); final conv 1280 * last // 440.
  """
  table = nf_regnet.NF_REGNET_VARIANTS[variant]
  conv = lambda k, i, o: {'w': (k, k, i, o), 'gain': (o,), 'bias': (o,)}
  ch = int(table['width'][0] * 0.75)
  tree = {'NF_RegNet/~/initial_conv': conv(3, 3, ch)}
  k = 0
  for stage_width, depth in zip(table['width'], table['depth']):
    for i in range(depth):
      out = int(stage_width * 0.75)
      width = int(ch * (1 if k == 0 else 2.25)) // 8 * 8
      name = 'NF_RegNet/~/nf_block' + (f'_{k}' if k else '')
      tree[name] = {'skip_gain': ()}
      tree[name + '/~/conv0'] = conv(1, ch, width)
      tree[name + '/~/conv1'] = conv(3, 8, width)
      tree[name + '/~/conv2'] = conv(1, width, out)
      hidden = width // 2
      tree[name + '/~/squeeze_excite/~/linear'] = {'w': (width, hidden), 'b': (hidden,)}
      tree[name + '/~/squeeze_excite/~/linear_1'] = {'w': (hidden, width), 'b': (width,)}
      if i == 0:  # every stage starts strided, so with a projection
        tree[name + '/~/conv_shortcut'] = conv(1, ch, out)
      ch = out
      k += 1
  head = 1280 * ch // 440
  tree['NF_RegNet/~/final_conv'] = conv(1, ch, head)
  tree['NF_RegNet/~/linear'] = {'w': (head, num_classes), 'b': (num_classes,)}
  return tree


@pytest.mark.parametrize('variant', ['B0', 'B5'])
def test_nf_regnet_official_names_and_shapes(variant):
  shapes = param_shapes({'name': 'NFRegNet', 'variant': variant})
  assert shapes == _official_regnet_tree(variant)
  pattern = re.compile(
      r'^NF_RegNet/~/(initial_conv|final_conv|linear|nf_block(_\d+)?'
      r'(/~/(conv0|conv1|conv2|conv_shortcut|squeeze_excite/~/linear(_1)?))?)$')
  assert all(pattern.match(m) for m in shapes)
  if variant == 'B0':
    # Spot values: first block expands by 1 (36 -> 32 = 4 groups of 8), head 960.
    assert shapes['NF_RegNet/~/nf_block/~/conv0']['w'] == (1, 1, 36, 32)
    assert shapes['NF_RegNet/~/final_conv']['w'] == (1, 1, 330, 960)
    assert len(shapes) == 6 * 16 + 4 + 3


def test_light_nfnet_names_and_shapes():
  l0 = param_shapes({'name': 'NFNet', 'variant': 'nfnet_l0'})
  eca = param_shapes({'name': 'NFNet', 'variant': 'eca_nfnet_l1'})
  for shapes in (l0, eca):
    assert [shapes[f'NFNet/~/stem_conv{i}']['w'] for i in range(4)] == [
        (3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 64), (3, 3, 64, 128)]
    # Bottleneck 0.25 x 256 = 64 = one group of 64; 0.25 x 1536 = 384 = 6 groups.
    assert shapes['NFNet/~/nf_block/~/conv1']['w'] == (3, 3, 64, 64)
    assert shapes['NFNet/~/nf_block/~/conv1b']['w'] == (3, 3, 64, 64)
    assert shapes['NFNet/~/nf_block_6/~/conv1']['w'] == (3, 3, 64, 384)  # stage 2
  assert l0['NFNet/~/nf_block/~/squeeze_excite/~/linear']['w'] == (256, 64)
  assert l0['NFNet/~/final_conv']['w'] == (1, 1, 1536, 2304)
  assert eca['NFNet/~/final_conv']['w'] == (1, 1, 1536, 3072)
  # ECA kernel size 5 for 256, 512 and 1536 channels.
  assert {eca[m]['w'] for m in eca if m.endswith('/eca')} == {(5,)}


def test_eca_kernel_size_rule():
  # t = int(|log2 C + 1| / 2), next odd, at least 3.
  assert [nfnn.eca_kernel_size(c) for c in (8, 64, 256, 512, 1536, 2048, 2 ** 13, 2 ** 14)] == [
      3, 3, 5, 5, 5, 7, 7, 7]
  assert nfnn.eca_kernel_size(2 ** 17) == 9


def test_eca_gate_matches_numpy():
  x = np.random.default_rng(0).standard_normal((2, 3, 4, 12)).astype(np.float32)
  fn = hk.transform(lambda x: nfnn.EfficientChannelAttention(12, kernel_size=5)(x))
  params = fn.init(jax.random.PRNGKey(0), x)
  w = np.asarray(params['eca']['w'], np.float64)
  assert w.shape == (5,) and np.all(np.abs(w) <= 1 / np.sqrt(5))
  got = np.asarray(fn.apply(params, None, x))
  y = x.astype(np.float64).mean(axis=(1, 2))
  # PyTorch Conv1d is a cross-correlation with zero padding 2.
  conv = np.stack([np.correlate(np.pad(row, 2), w, mode='valid') for row in y])
  np.testing.assert_allclose(got[:, 0, 0, :], 1 / (1 + np.exp(-conv)), rtol=1e-5)


TINY_LIGHT = dict(depths=(1, 1, 1, 1), widths=(32, 32, 64, 64), stem_widths=(4, 8, 8, 8),
                  group_width=8)


def test_conv2_gain_skipinit_makes_light_blocks_identity_at_init():
  config = dict(name='NFNet', variant='eca_nfnet_l0', **TINY_LIGHT)
  f = models.create_model(config, 5)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  params, state = jax.jit(functools.partial(f.init, is_training=False))(
      jax.random.key(0, impl='rbg'), x)
  assert np.all(np.asarray(params['NFNet/~/nf_block_2/~/conv2']['gain']) == 0)
  assert np.all(np.asarray(params['NFNet/~/nf_block_2/~/conv1']['gain']) == 1)
  out, _ = jax.jit(functools.partial(f.apply, is_training=False, return_metrics=True))(
      params, state, None, x)
  # Every branch outputs conv2's zero bias: the blocks are their shortcuts.
  np.testing.assert_array_equal(out['spp']['res_avg_var'], 0.0)
  assert np.all(np.isfinite(out['logits']))


@pytest.mark.parametrize('config', [
    dict(name='NFRegNet', depths=(1, 1, 2, 1), widths=(16, 24, 32, 48)),
    dict(name='NFNet', variant='nfnet_l0', **TINY_LIGHT),
    dict(name='NFNet', variant='eca_nfnet_l2', **TINY_LIGHT),
], ids=['nf_regnet', 'nfnet_l0', 'eca_nfnet_l2'])
def test_tiny_new_models_run_train_and_eval(config):
  f = models.create_model(config, 5)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
  params, state = jax.jit(functools.partial(f.init, is_training=True))(
      jax.random.key(0, impl='rbg'), x)
  root = next(iter(params)).split('/')[0]
  # Non-zero SkipInit gains and classifier (NF-RegNet's is zero-initialised),
  # so that every path reaches the logits.
  params = {m: {k: (jnp.ones_like(v) if k in ('skip_gain', 'gain') else v)
                for k, v in d.items()} for m, d in params.items()}
  params[f'{root}/~/linear']['w'] = jax.random.normal(
      jax.random.PRNGKey(4), params[f'{root}/~/linear']['w'].shape)

  @jax.jit
  def run(params):
    train, _ = f.apply(params, state, jax.random.key(2, impl='rbg'), x, is_training=True,
                       return_metrics=True)
    train2, _ = f.apply(params, state, jax.random.key(3, impl='rbg'), x, is_training=True)
    evals, _ = f.apply(params, state, None, x, is_training=False)
    return train, train2, evals

  train, train2, evals = run(params)
  for out in (train, train2, evals):
    assert out['logits'].shape == (4, 5) and np.all(np.isfinite(out['logits']))
  assert np.all(np.asarray(train['spp']['avg_var']) > 0)
  assert np.all(np.asarray(train['spp']['res_avg_var']) > 0)
  # Stochastic depth (and dropout where the table sets it) act in training only.
  assert not np.allclose(train['logits'], train2['logits'])


@pytest.mark.parametrize('config,match', [
    ({'name': 'NFRegNet', 'variant': 'B9'}, 'config.model.variant'),
    ({'name': 'NFRegNet', 'group_size': 64}, 'config.model.group_size'),
    ({'name': 'NFRegNet', 'group_size': 0}, 'config.model.group_size'),
    ({'name': 'NFRegNet', 'expansion': -1.0}, 'config.model.expansion'),
    ({'name': 'NFRegNet', 'width': 0.01}, 'config.model.width'),
    ({'name': 'NFRegNet', 'widths': (16, 32)}, 'config.model.widths'),
    ({'name': 'NFRegNet', 'group_width': 8}, 'config.model.group_width'),
    ({'name': 'NFNet', 'variant': 'eca_nfnet_l9'}, 'config.model.variant'),
    ({'name': 'NFNet', 'variant': 'eca_nfnet_l0', 'group_width': 128},
     'config.model.group_width'),
    ({'name': 'NFNet', 'attention': 'cbam'}, 'config.model.attention'),
    ({'name': 'NFNet', 'skipinit_mode': 'fixup'}, 'config.model.skipinit_mode'),
])
def test_validate_new_fields(config, match):
  with pytest.raises(ValueError, match=re.escape(match)) as info:
    models.validate_model_config(config, num_classes=10)
  msg = str(info.value)
  assert 'allowed' in msg and '\n' not in msg


def test_validate_accepts_the_new_variants():
  for v in OFFICIAL_NF_REGNET_PARAMS:
    models.validate_model_config({'name': 'NFRegNet', 'variant': v}, 1000)
  for v in TIMM_LIGHT_PARAMS:
    models.validate_model_config({'name': 'NFNet', 'variant': v}, 1000)
  # B0's smallest expanded width is 32 (its first block): group size 32 fits, 40 not.
  models.validate_model_config({'name': 'NFRegNet', 'group_size': 32}, 10)
  with pytest.raises(ValueError, match='smallest grouped width 36'):
    models.validate_model_config({'name': 'NFRegNet', 'group_size': 40}, 10)
  assert models.model_min_resolution({'name': 'NFRegNet'}) == 32


# ---------------------------------------------------------------------------
# Model table (scripts/model_table.py): counted and measured FLOPs.


def test_official_macs_reproduce_the_nfnet_papers_flops():
  from nfnet_jax.analysis import zoo
  # NFNet paper, Table 2 (REFERENCE.md): FLOPs at the test resolution.
  for variant, res, published in (('F0', 256, 12.38), ('F1', 320, 35.54), ('F6', 576, 377.28)):
    macs = zoo.official_macs({'name': 'NFNet', 'variant': variant}, res)
    assert abs(macs / 1e9 - published) < 0.005, (variant, macs)
  assert zoo.official_macs({'name': 'NFResNet', 'variant': 'ResNet50'}, 224) is None


def test_official_macs_of_a_tiny_regnet_by_hand():
  """One-block-per-stage NF-RegNet at 32 px, counted conv by conv."""
  from nfnet_jax.analysis import zoo
  config = dict(name='NFRegNet', depths=(1, 1, 1, 1), widths=(16, 24, 32, 48), width=1.0,
                group_size=8, expansion=2.0)
  conv = lambda o, hw, i, k=1, g=1: o * hw * (i / g) * k * k
  want = conv(16, 16 * 16, 3, 3)       # stem 3x3/2 on 32 px -> 16 x 16
  h, ch = 16, 16
  for i, out in enumerate((16, 24, 32, 48)):
    width = ch * (1 if i == 0 else 2) // 8 * 8
    want += conv(width, h * h, ch)                     # conv0 at the input size
    want += conv(width, (h / 2) ** 2, width, 3, width // 8)  # conv1, stride 2
    h /= 2
    want += conv(out, h * h, ch)                       # shortcut after the pool
    want += (width // 2) * width * 2                   # SE linears
    want += conv(out, h * h, width)                    # conv2
    ch = out
  want += conv(1280 * 48 // 440, h * h, 48) + (1280 * 48 // 440) * 10
  assert zoo.official_macs(config, 32, num_classes=10) == pytest.approx(want, rel=1e-12)
  # XLA counts a multiply-add as 2 FLOPs, skips padded taps (fewer at the
  # borders of these small maps) and adds WS (per weight), activations, SE
  # and pooling: measured 2.63x here (1.98x for F0 at 256 px, compiled).
  xla = zoo.xla_flops(config, 32, num_classes=10, compiled=False)
  assert 1.5 * want < xla < 3.5 * want, (xla, want)


def test_model_table_script_on_one_variant(tmp_path, capsys):
  import json
  script = load_repo_module('model_table_script', 'scripts', 'model_table.py')
  assert script.main(['--models', 'NFRegNet:B0', '--lowered', '--json',
                      str(tmp_path / 'zoo.json')]) == 0
  out = capsys.readouterr().out
  assert '| NFRegNet | B0 | 224 | 8,595,372 | 8,595,372 |' in out
  row = json.loads((tmp_path / 'zoo.json').read_text())['rows'][0]
  assert 0.44 < row['official_gmacs'] < 0.45 and 0.8 < row['xla_gflops'] < 1.1
  with pytest.raises(SystemExit):
    script.main(['--models', 'NFRegNet:B9'])


def test_cosine_floor_of_the_schedule():
  from nfnet_jax.optim.builder import warmup_cosine_schedule
  peak, floor, warm, total = 0.4, 0.001, 10, 110
  f = warmup_cosine_schedule(peak, warm, total, 'cosine', min_value=floor)
  assert float(f(0)) == 0.0 and float(f(warm)) == pytest.approx(peak)
  # Official WarmupCosineDecay: min + (max - min) * (1 + cos(pi * t')) / 2.
  for t in (35, 60, 85):
    frac = (t - warm) / (total - warm)
    want = floor + 0.5 * (peak - floor) * (1 + np.cos(np.pi * frac))
    assert float(f(t)) == pytest.approx(want, rel=1e-6)
  assert float(f(total)) == pytest.approx(floor) and float(f(total + 50)) == pytest.approx(floor)


# ---------------------------------------------------------------------------
# Configs


def _load_config(name):
  return load_repo_module(f'cfg_zoo_{name}', 'configs', f'{name}.py')


@pytest.mark.parametrize('variant', sorted(OFFICIAL_NF_REGNET_PARAMS))
def test_nf_regnet_configs_follow_the_official_experiment(variant):
  from nfnet_jax import optim
  c = _load_config('nf_regnet').get_config(variant)
  table = nf_regnet.NF_REGNET_VARIANTS[variant]
  assert (c.model.name, c.model.variant) == ('NFRegNet', variant)
  assert (c.data.image_size, c.data.eval_image_size) == (table['train_imsize'],
                                                         table['test_imsize'])
  assert c.train.batch_size == 1024
  assert c.train.total_steps == (1281167 * 360) // 1024 == 450410
  assert c.optimizer.warmup_steps == pytest.approx(5 * 1281167 / 1024)
  # LR 0.4, not scaled by the batch; cosine floor 0.001; no AGC.
  assert c.optimizer.base_lr * c.train.batch_size / c.optimizer.lr_batch_base == 0.4
  assert c.optimizer.min_lr == 0.001 and c.optimizer.clipping is None
  level = int(variant[1:])
  assert c.optimizer.weight_decay == pytest.approx(5e-5 + 1e-5 * level)
  assert (c.optimizer.ema_decay, c.optimizer.label_smoothing) == (0.99999, 0.1)
  assert c.data.randaugment_layers == 0 and c.data.mixup_alpha == 0.2 and c.data.cutmix
  assert c.compute_dtype == 'float32'
  models.validate_model_config(c.model, num_classes=1000)
  optim.validate_optimizer_config(c.optimizer, total_steps=c.train.total_steps)


@pytest.mark.parametrize('variant', sorted(TIMM_LIGHT_PARAMS))
def test_light_configs(variant):
  from nfnet_jax import optim
  c = _load_config('nfnet_light').get_config(variant)
  table = nfnet_mod.NFNET_VARIANTS[variant]
  assert (c.model.name, c.model.variant) == ('NFNet', variant)
  assert (c.data.image_size, c.data.eval_image_size) == (table['train_imsize'],
                                                         table['test_imsize'])
  assert c.data.eval_crop_padding == 0
  models.validate_model_config(c.model, num_classes=1000)
  optim.validate_optimizer_config(c.optimizer, total_steps=c.train.total_steps)
  with pytest.raises(ValueError, match='eca_nfnet_l9'):
    _load_config('nfnet_light').get_config('eca_nfnet_l9')


@pytest.mark.skipif(not __import__('os').path.exists(
    '/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz'),
    reason='Debian dataset-fashion-mnist not installed')
@pytest.mark.parametrize('name,arg', [('nf_regnet', 'B0,local'), ('nfnet_light', 'nfnet_l0,local'),
                                      ('resnet', '50,fixup,local')])
def test_local_zoo_configs_validate(name, arg):
  from nfnet_jax.train.validate import validate_config
  validate_config(_load_config(name).get_config(arg))


def test_nfnet_config_reads_the_model_table():
  c = _load_config('nfnet')
  assert set(c.VARIANTS) == {f'F{i}' for i in range(8)}
  for v, (train, test, drop, mag) in c.VARIANTS.items():
    t = nfnet_mod.NFNET_VARIANTS[v]
    assert (train, test, drop, mag) == (t['train_imsize'], t['test_imsize'], t['drop_rate'],
                                        t['randaugment'][1])


# ---------------------------------------------------------------------------
# Signal propagation (scripts/spp.py's path: analysis.spp.compute_spp)


def test_spp_specs_of_the_new_models():
  from nfnet_jax.analysis import spp as spp_lib
  b0 = spp_lib.resolve_spec('nf_regnet_b0')
  assert (b0['name'], b0['variant'], b0['stochdepth_rate']) == ('NFRegNet', 'B0', 0.0)
  assert spp_lib.is_nf_model(b0) and spp_lib.model_alpha(b0) == 0.2
  assert spp_lib.resolve_spec('eca_nfnet_l2')['variant'] == 'eca_nfnet_l2'
  assert spp_lib.resolve_spec('nfnet_l0')['variant'] == 'nfnet_l0'
  fix = spp_lib.resolve_spec('fixup_resnet50')
  assert (fix['norm'], fix['fixup']) == ('none', True) and not spp_lib.is_nf_model(fix)
  assert set(spp_lib.apply_overrides(b0, {'alpha': 0.5, 'group_size': 4})) >= {
      'alpha', 'group_size'}
  x = np.asarray(spp_lib.smooth_gaussian_batch(2, 64, 32))
  assert x.shape == (2, 64, 64, 3) and np.all(x[:, :32, :32] == x[:, :1, :1])
  with pytest.raises(ValueError, match='cell'):
    spp_lib.smooth_gaussian_batch(2, 64, 24)


def test_nf_regnet_b0_spp_follows_the_staircase():
  """NF-RegNet-B0 at init (skip_gain 1): variance grows as 1 + k * alpha^2 per stage.

  alpha = 0.5 makes the staircase steep (1.25 .. 2.5 over a 6-block stage).
  Input: Gaussian values constant over 32 x 32 cells at 64 px, so that the
  2x2 average pools of the strided shortcuts preserve variance (on white
  noise each transition quarters it; docs/models.md). What the analysis
  leaves out, measured: the 3-channel stem conv on locally constant input
  keeps ~(C-1)/C = 2/3 of the variance (WS kernels sum to zero over their
  27 inputs), so the measured variance is a constant *multiple* (~0.75) of
  the staircase. Stage 3 runs on 2x2 maps where SAME padding dominates and
  is left out. Tolerances: the measured ratio within stages 0-2 was
  0.735-0.832 (constant within each stage to 4%); bounds 0.6-0.95 and +-8%
  around each stage's mean ratio. (Block-by-block increments are too noisy
  here to test: 16 examples x 4 independent cells.) Mutation check: with
  every beta fixed to 1 (no downscaling by the expected std) the ratios rise
  to 1.03-1.19 in stage 1 and 1.97-3.90 in stage 2, and this test fails.
  """
  from nfnet_jax.analysis import spp as spp_lib
  alpha = 0.5
  cfg = spp_lib.apply_overrides(spp_lib.resolve_spec('nf_regnet_b0'), {'alpha': alpha})
  x = spp_lib.smooth_gaussian_batch(16, 64, 32)
  s = spp_lib.compute_spp(cfg, x, skip_gain=1.0, num_classes=10, jit=True)
  expected = spp_lib.expected_variance(s['is_transition'], alpha)
  np.testing.assert_array_equal(s['is_transition'],
                                [1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
  # The model's own bookkeeping: block i's input has expected variance
  # 1 + k alpha^2 (k blocks since the transition), i.e. the previous output's.
  np.testing.assert_allclose(s['expected_var'][1:], np.where(
      s['is_transition'][1:] > 0, s['expected_var'][1:], expected[:-1]), rtol=1e-6)
  ratio = s['avg_var'] / expected
  for start, end in ((0, 1), (1, 4), (4, 10)):
    r = ratio[start:end]
    assert np.all((r > 0.6) & (r < 0.95)), (start, ratio)
    assert np.all(np.abs(r / r.mean() - 1) < 0.08), (start, ratio)
  # The staircase over a 6-block stage is steep: 2.5 / 1.25 = 2x.
  assert s['avg_var'][9] > 1.8 * s['avg_var'][4]


def test_set_skip_gain_reaches_conv2_gains_of_the_light_family():
  from nfnet_jax.analysis import spp as spp_lib
  assert spp_lib.uses_conv2_gain({'name': 'NFNet', 'variant': 'eca_nfnet_l1'})
  assert not spp_lib.uses_conv2_gain({'name': 'NFNet', 'variant': 'F0'})
  assert not spp_lib.uses_conv2_gain({'name': 'NFNet', 'variant': 'eca_nfnet_l1',
                                      'skipinit_mode': 'skip_gain'})
  assert not spp_lib.uses_conv2_gain({'name': 'NFRegNet', 'variant': 'B0'})
  params = {'NFNet/~/nf_block_2/~/conv2': {'gain': np.zeros(3), 'bias': np.zeros(3)},
            'NFNet/~/nf_block_2/~/conv1': {'gain': np.ones(3)},
            'NFNet/~/nf_block_2': {'skip_gain': np.zeros(())}}
  out = spp_lib.set_skip_gain(params, 0.5, conv2_gain=True)
  np.testing.assert_array_equal(out['NFNet/~/nf_block_2/~/conv2']['gain'], 0.5)
  np.testing.assert_array_equal(out['NFNet/~/nf_block_2/~/conv2']['bias'], 0.0)
  np.testing.assert_array_equal(out['NFNet/~/nf_block_2/~/conv1']['gain'], 1.0)
  np.testing.assert_array_equal(out['NFNet/~/nf_block_2']['skip_gain'], 0.5)
  out = spp_lib.set_skip_gain(params, 0.5)
  np.testing.assert_array_equal(out['NFNet/~/nf_block_2/~/conv2']['gain'], 0.0)


def test_infer_nfnet_config_tells_the_light_family_apart():
  from nfnet_jax import pretrained
  for variant in ('F0', 'F1+', 'nfnet_l0', 'eca_nfnet_l0', 'eca_nfnet_l2'):
    shapes = pretrained.expected_param_shapes({'name': 'NFNet', 'variant': variant}, 1000)
    tree = {m: {n: np.zeros(s) if m.endswith(('stem_conv3', 'final_conv')) and n == 'w'
                else np.zeros(1) for n, s in d.items()} for m, d in shapes.items()}
    assert pretrained.infer_nfnet_config(tree) == {'name': 'NFNet', 'variant': variant}
