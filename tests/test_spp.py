"""Tests for the Signal Propagation Plot tools (nfnet_jax/analysis/spp.py, scripts/spp.py)."""
import csv
import json
import os

import numpy as np
import pytest

from nfnet_jax.analysis import spp as spp_lib

from conftest import ROOT
from conftest import load_repo_config
from conftest import load_repo_module


def test_resolve_spec_table_patterns_and_overrides():
  assert spp_lib.resolve_spec('nf_resnet50')['name'] == 'NFResNet'
  bn = spp_lib.resolve_spec('bn_resnet101_relu_bn_conv')
  assert (bn['name'], bn['variant'], bn['norm'], bn['block_order']) == (
      'ResNet', 'ResNet101', 'batchnorm', 'relu_bn_conv')
  plain = spp_lib.resolve_spec('resnet152_plain')
  assert (plain['variant'], plain['norm']) == ('ResNet152', 'none')
  assert spp_lib.resolve_spec('gn_resnet26')['norm'] == 'groupnorm'
  assert spp_lib.resolve_spec('nfnet_f3+')['variant'] == 'F3+'
  cfg = spp_lib.resolve_spec('nf_resnet101:alpha=0.5; activation=gelu;width=1')
  assert (cfg['variant'], cfg['alpha'], cfg['activation'], cfg['width']) == (
      'ResNet101', 0.5, 'gelu', 1)
  # Analysis runs never sample stochastic depth or dropout.
  assert cfg['stochdepth_rate'] == 0.0 and cfg['drop_rate'] == 0.0
  assert spp_lib.split_models('a:widths=(1,2);x=3, b ,c:d=[1,2]') == [
      'a:widths=(1,2);x=3', 'b', 'c:d=[1,2]']
  with pytest.raises(ValueError, match='unknown model spec'):
    spp_lib.resolve_spec('vgg16')
  with pytest.raises(ValueError, match='key=value'):
    spp_lib.resolve_spec('nf_resnet50:alpha')


def test_global_overrides_reach_only_models_with_the_field():
  nf = spp_lib.apply_overrides(spp_lib.resolve_spec('nf_resnet50'), {'alpha': 0.7})
  bn = spp_lib.apply_overrides(spp_lib.resolve_spec('bn_resnet50_bn_relu_conv'), {'alpha': 0.7})
  assert nf['alpha'] == 0.7
  assert 'alpha' not in bn  # baselines refuse alpha values
  bn = spp_lib.apply_overrides(spp_lib.resolve_spec('bn_resnet50_bn_relu_conv'), {'width': 0.5})
  assert bn['width'] == 0.5


def test_expected_variance_staircase_by_hand():
  trans = [1, 0, 0, 1, 0, 1, 0, 0, 0]
  a = 0.3
  want = [1 + a * a, 1 + 2 * a * a, 1 + 3 * a * a, 1 + a * a, 1 + 2 * a * a,
          1 + a * a, 1 + 2 * a * a, 1 + 3 * a * a, 1 + 4 * a * a]
  np.testing.assert_allclose(spp_lib.expected_variance(trans, a), want, rtol=1e-12)
  assert spp_lib.stage_ends(trans) == [2, 4, 8]


def test_nf_resnet_follows_the_expected_staircase():
  """NF-ResNet-50 (alpha 0.5 so the steps are large) on Gaussian input.

  All four stages are 128 wide (the depth pattern, strides and transitions
  are ResNet-50's): equal shapes keep the op-by-op initialisation cheap.

  Three checks, from exact to approximate:
  1. the model's analytic beta^2 (block-input variance) is our staircase
     shifted by one block (exact bookkeeping);
  2. within a stage every block adds alpha^2 * Var(branch) to the variance:
     at init the branch is independent of the skip path, so the covariance
     term is only sampling noise (measured <= 0.012 here; tolerance 0.03);
  3. the measured variance follows 1 + k*alpha^2 within -20%/+8%. The
     analytic model assumes every branch preserves variance; here a branch
     has variance 0.7-1.0 because its 3x3 SAME convs see zero padding on
     small maps (4x4 in the last stage at 128px: about (10/12)^2 = 69% of the
     taps are inside) and because ReLU outputs are positively correlated
     across channels, which the zero-mean WS filters partly cancel. The
     shortfall compounds over stages (measured ratios 1.02 in stage 1 down
     to 0.86 at the last block), hence -20%; +8% covers sampling noise of a
     batch of 8 (measured at most +2%).
  """
  alpha = 0.5
  cfg = spp_lib.apply_overrides(spp_lib.resolve_spec(
      f'nf_resnet50:widths=(128,128,128,128);stem_width=64;alpha={alpha}'), {})
  s = spp_lib.compute_spp(cfg, spp_lib.gaussian_batch(8, 128))
  assert len(s['avg_var']) == 16
  np.testing.assert_array_equal(np.nonzero(s['is_transition'])[0], [0, 3, 7, 13])
  exp = spp_lib.expected_variance(s['is_transition'], alpha)
  # 1. the model's input-side expectation.
  assert s['expected_var'][0] == pytest.approx(1.0)
  np.testing.assert_allclose(s['expected_var'][1:], exp[:-1], rtol=1e-6)
  # 2. additivity inside stages; resets at transitions.
  inner = s['is_transition'][1:] < 0.5
  incr = np.diff(s['avg_var'])
  np.testing.assert_allclose(incr[inner], alpha**2 * s['res_avg_var'][1:][inner], atol=0.03)
  assert np.all(incr[~inner] < 0)  # the variance drops back at each transition
  # 3. the staircase itself.
  ratio = s['avg_var'] / exp
  assert np.all(ratio > 0.8) and np.all(ratio < 1.08), ratio
  # The squared channel mean stays small next to the variance (scaled WS
  # removes the mean shift the ReLU introduces).
  assert np.all(s['avg_sq_mean'] < 0.1 * s['avg_var'])


def test_zero_skip_gain_hides_the_residual_branches():
  cfg = spp_lib.apply_overrides(spp_lib.resolve_spec('nf_resnet26:widths=(64,64,64,64);stem_width=32'), {})
  x = spp_lib.gaussian_batch(4, 32)
  s0 = spp_lib.compute_spp(cfg, x, skip_gain=None)  # SkipInit's init value 0
  inner = s0['is_transition'][1:] < 0.5
  # Output = skip path exactly: nothing is added inside a stage...
  np.testing.assert_allclose(np.diff(s0['avg_var'])[inner], 0.0, atol=1e-5)
  # ...although the branches themselves are active.
  assert np.all(s0['res_avg_var'] > 0.01)


def _spp_main():
  module = load_repo_module('spp_script', 'scripts',
                                                                           'spp.py')
  return module.main


def test_script_writes_csv_json_png_and_shows_the_baselines(tmp_path):
  # Equal stage widths keep the op-by-op initialisation cheap; the stem is
  # narrower so that the first block still has its projection shortcut.
  w = 'widths=(64,64,64,64);stem_width=32'
  models = [f'bn_resnet26_bn_relu_conv:{w}', f'resnet26_plain:{w}', f'nf_resnet26:{w}']
  out = tmp_path / 'spp'
  assert _spp_main()(['--models', ','.join(models), '--out', str(out), '--resolution', '32',
                      '--batch', '4', '--config.model.alpha=0.4']) == 0
  with open(out / 'spp.csv') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['model', 'block', 'avg_sq_mean', 'avg_var', 'res_avg_var']
  assert len(rows) == 1 + 3 * 8  # ResNet-26: 2+2+2+2 blocks, three models
  assert [r[0] for r in rows[1:]] == [m for m in models for _ in range(8)]
  assert [int(r[1]) for r in rows[1:9]] == list(range(8))
  blob = json.loads((out / 'spp.json').read_text())
  assert blob['models'][models[2]]['config']['alpha'] == 0.4       # the global override
  assert 'alpha' not in blob['models'][models[0]]['config']
  for m in models:  # CSV and JSON agree
    csv_var = [float(r[3]) for r in rows[1:] if r[0] == m]
    np.testing.assert_allclose(csv_var, blob['models'][m]['stats']['avg_var'], rtol=1e-6)
  assert (out / 'spp.png').stat().st_size > 10_000
  back, back_cfg, meta = spp_lib.read_json(str(out / 'spp.json'))
  assert meta['resolution'] == 32 and back_cfg[models[2]]['alpha'] == 0.4
  assert list(back) == models and set(back[models[0]]) == set(spp_lib.STAT_KEYS)
  plain = np.array(blob['models'][models[1]]['stats']['avg_var'])
  bn = np.array(blob['models'][models[0]]['stats']['avg_var'])
  nf = np.array(blob['models'][models[2]]['stats']['avg_var'])
  # Unnormalized ResNet with He-init convs: Var(x + f(x)) ~ 2 Var(x) in every
  # non-transition block, so the variance explodes with depth: 2^3 over the
  # first six blocks and at least 1.2x in blocks 1, 3, 5 (less than 2x: at
  # 32px the maps are 8x8 to 2x2, where zero padding hides 15-55% of the 3x3
  # taps; block 7 works on a 1x1 map, where its 3x3 conv sees one tap in nine).
  assert np.all(plain[1:7:2] > 1.2 * plain[0:6:2])
  assert plain[5] > 8 * plain[0]
  # BatchNorm: each block adds a branch of ~constant variance, so the
  # variance grows inside every stage (and resets at transitions).
  assert np.all(bn[1::2] > bn[0::2])
  # NF-ResNet: near 1 + k*alpha^2 in the first three stages (the last one
  # works on 1x1 maps at 32px: 4 samples per channel, and a biased variance
  # estimate of 3/4 of the true value; the staircase test above is the real one).
  assert np.all(np.abs(nf[:6] / spp_lib.expected_variance([1, 0] * 3, 0.4) - 1) < 0.3)


def test_plot_marks_expected_variance_for_nf_models(tmp_path):
  trans = np.array([1., 0, 0, 1, 0])
  fake = {'avg_sq_mean': np.full(5, 1e-3), 'avg_var': np.array([1., 1.1, 1.2, 1., 1.1]),
          'res_avg_var': np.ones(5), 'expected_var': np.ones(5), 'is_transition': trans}
  path = tmp_path / 'p.png'
  spp_lib.plot_spp({'nf': fake, 'bn': dict(fake, expected_var=np.full(5, np.nan))}, str(path),
                   {'nf': {'name': 'NFResNet', 'alpha': 0.3}, 'bn': {'name': 'ResNet'}})
  assert path.stat().st_size > 10_000
  text = spp_lib.summarize({'nf': fake}, {'nf': {'name': 'NFResNet', 'alpha': 0.3}})
  assert 'expected 1.27, 1.18' in text and 'stage-end avg_var 1.2, 1.1' in text


def test_misspelled_model_override_names_the_closest_field():
  from nfnet_jax.config import load as config_load  # pylint: disable=import-outside-toplevel
  cfgs = [spp_lib.resolve_spec('nf_resnet50'), spp_lib.resolve_spec('bn_resnet50_bn_relu_conv')]
  spp_lib.check_model_overrides(cfgs, {'alpha': 0.5, 'width': 0.5})   # known: no error
  with pytest.raises(config_load.ConfigError,
                     match=r'config\.model\.alpah is not a field of any of the models; '
                           r'did you mean config\.model\.alpha\?'):
    spp_lib.check_model_overrides(cfgs, {'alpah': 0.5})


def test_spp_checkpoint_on_an_official_format_file(tmp_path):
  """scripts/spp.py --checkpoint FILE: a tiny NFNet saved in the official format."""
  import json
  import jax
  import jax.numpy as jnp
  from nfnet_jax import models, pretrained
  cfg_path = os.path.join(ROOT, 'configs', 'nfnet.py')
  model_cfg = load_repo_config('nfnet', 'F0,local', 'nfnet_cfg_spp').model
  net = models.create_model(model_cfg, 7)
  params, _ = jax.jit(net.init, static_argnums=2)(jax.random.PRNGKey(3),
                                                  jnp.zeros((1, 32, 32, 3)), True)
  # A "trained" file: skip gains away from their init value 0.
  params = {m: {n: (v + 0.5 if n == 'skip_gain' else v) for n, v in d.items()}
            for m, d in params.items()}
  path = str(tmp_path / 'tiny_haiku.npz')
  pretrained.save_official(params, path)
  script = load_repo_module('spp_script', 'scripts', 'spp.py')
  out = tmp_path / 'out'
  assert script.main(['--checkpoint', path, '--model_config', cfg_path + ':F0,local',
                      '--out', str(out), '--resolution', '32', '--batch', '4', '--jit']) == 0
  with open(out / 'spp.json') as f:
    blob = json.load(f)
  assert list(blob['models']) == ['tiny_haiku.npz']
  stats = blob['models']['tiny_haiku.npz']['stats']
  assert len(stats['avg_var']) == len([m for m in params if m.count('/~/') == 1
                                       and 'nf_block' in m])
  assert all(v > 0 for v in stats['avg_var'])
  # Without --model_config the model cannot be told: one clear error, exit status 2.
  with pytest.raises(SystemExit) as e:
    script.main(['--checkpoint', path, '--out', str(out)])
  assert e.value.code == 2
