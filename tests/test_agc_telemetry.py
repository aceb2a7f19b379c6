"""AGC telemetry (nfnet_jax/optim/agc.py) against an independent numpy count.

The params and gradients are a real small model's (the quickstart NF-ResNet
at width 0.25, one real loss gradient), scaled so that some units of every
kind are clipped and some are not.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax import models
from nfnet_jax.optim import agc

from conftest import load_repo_module


def _np_unit_norms(x):
  """Per-unit Frobenius norms, written from the paper's definition."""
  x = np.asarray(x, np.float64)
  if sum(d != 1 for d in x.shape) <= 1:  # gains, biases, scalars: one unit
    return np.array([np.sqrt(np.sum(x * x))])
  return np.sqrt(np.sum(x.reshape(-1, x.shape[-1]) ** 2, axis=0))  # per output


def _np_telemetry(grads, params, clipping, eps, exclude):
  groups = {}
  for module, sub in params.items():
    for name, w in sub.items():
      if re.search(exclude, f'{module}/{name}'):
        continue
      g_n = _np_unit_norms(grads[module][name])
      w_n = np.maximum(_np_unit_norms(w), eps)
      groups.setdefault(module, []).append(g_n / w_n)
  return {m: (np.mean(np.concatenate(r) > clipping), np.median(np.concatenate(r)),
              np.max(np.concatenate(r))) for m, r in groups.items()}


@pytest.fixture(scope='module')
def model_grads():
  module = load_repo_module('fm_cfg', 'configs', 'fashion_mnist.py')
  cfg = module.get_config('local')
  net = models.create_model(cfg.model, 10)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 1))
  params, state = jax.jit(net.init, static_argnums=2)(jax.random.PRNGKey(0), x, True)

  def loss(p):
    out, _ = net.apply(p, state, jax.random.PRNGKey(2), x, is_training=True)
    return jnp.mean(jax.nn.logsumexp(out['logits'], -1) - out['logits'][:, 0])

  grads = jax.jit(jax.grad(loss))(params)
  return params, grads


def test_telemetry_equals_numpy_on_a_small_model(model_grads):
  params, grads = model_grads
  # A lambda at the median ratio: about half the units clip, in most groups.
  all_ratios = np.concatenate([r for r in (
      _np_unit_norms(grads[m][n]) / np.maximum(_np_unit_norms(params[m][n]), 1e-3)
      for m in params for n in params[m])])
  # (Halfway between two neighbouring ratios, so no unit sits on the
  # threshold, where float32 and float64 could disagree.)
  r = np.unique(all_ratios[all_ratios > 0])
  clipping = float(np.sqrt(r[len(r) // 2 - 1] * r[len(r) // 2]))
  stats = jax.jit(agc.agc_telemetry(clipping, eps=1e-3))(grads, params)
  want = _np_telemetry(grads, params, clipping, 1e-3, agc.CLASSIFIER_REGEX)
  assert set(stats) == set(want)
  # The classifier weight is excluded; its bias is clipped (one unit).
  assert agc.agc_unit_counts(params)['NF_ResNet/~/linear'] == 1
  fractions = []
  for m, (frac, med, mx) in want.items():
    np.testing.assert_allclose(stats[m]['clipped_fraction'], frac, atol=1e-6, err_msg=m)
    np.testing.assert_allclose(stats[m]['ratio_median'], med, rtol=1e-4, err_msg=m)
    np.testing.assert_allclose(stats[m]['ratio_max'], mx, rtol=1e-4, err_msg=m)
    fractions.append(frac)
  assert 0 < np.mean(fractions) < 1 and max(fractions) > 0.5 > min(fractions)


def test_clipped_units_are_the_ones_agc_changes(model_grads):
  params, grads = model_grads
  clipping = 0.05
  counts = agc.agc_unit_counts(params)
  stats = jax.jit(agc.agc_telemetry(clipping))(grads, params)
  clip = agc.adaptive_grad_clip(clipping)
  clipped = jax.jit(lambda g, p: clip.update(g, clip.init(p), p)[0])(grads, params)
  for m, n_units in counts.items():
    changed = sum(int(np.sum(_np_unit_norms(np.asarray(clipped[m][n]) - np.asarray(g)) > 0))
                  for n, g in grads[m].items())
    assert changed == round(float(stats[m]['clipped_fraction']) * n_units), m
  assert sum(float(s['clipped_fraction']) > 0 for s in stats.values()) >= 3


def test_unit_counts_depth_order_and_stages(model_grads):
  params, _ = model_grads
  counts = agc.agc_unit_counts(params)
  conv0 = 'NF_ResNet/~/nf_res_block/~/conv0'
  w = params[conv0]['w']
  assert counts[conv0] == w.shape[-1] + (len(params[conv0]) - 1)  # filters + gain/bias
  groups = sorted(counts, key=agc.depth_key)
  assert groups[0] == 'NF_ResNet/~/initial_conv'
  assert groups.index('NF_ResNet/~/nf_res_block_3/~/conv0') > groups.index(conv0)
  labels = agc.stage_labels(groups)
  assert labels['NF_ResNet/~/initial_conv'] == 'stem'
  assert labels[conv0] == 'stage0'
  assert labels['NF_ResNet/~/nf_res_block_3/~/conv2'] == 'stage3'
  names = ['M/~/nf_block_10/~/conv0', 'M/~/nf_block_2/~/conv0', 'M/~/linear']
  assert sorted(names, key=agc.depth_key) == [names[1], names[0], names[2]]


def test_bad_arguments():
  with pytest.raises(ValueError, match='clipping'):
    agc.agc_telemetry(0.0)
  with pytest.raises(ValueError, match='exclude'):
    agc.agc_telemetry(0.01, exclude='(')


def test_telemetry_and_profile_fields_are_validated():
  from nfnet_jax.train import profiler
  from nfnet_jax.train.validate import validate_config
  module = load_repo_module('fm_cfg2', 'configs', 'fashion_mnist.py')
  assert profiler.parse_profile_steps('') is None
  assert profiler.parse_profile_steps('3, 5') == (3, 5)
  assert profiler.parse_profile_steps('4') == (4, 4)
  assert profiler.parse_profile_steps((2, 3)) == (2, 3)
  for field, value, msg in (
      ('profile_steps', '5,2', "config.train.profile_steps='5,2' is invalid: expected 'a,b'"),
      ('profile_steps', 'a,b', "config.train.profile_steps='a,b' is invalid"),
      ('profile_steps', '3,30', 'steps below config.train.total_steps=30')):
    cfg = module.get_config('local')
    cfg.train[field] = value
    with pytest.raises(ValueError) as e:
      validate_config(cfg, check_devices=False)
    assert msg in str(e.value) and '\n' not in str(e.value)
  cfg = module.get_config('local')
  cfg.train.profile_steps = '3,29'
  validate_config(cfg, check_devices=False)


def test_agc_report_script_on_logged_rows(tmp_path):
  """scripts/agc_report.py: one figure for several runs; clear errors."""
  import json
  from nfnet_jax.analysis import agc_report
  groups = ['M/~/stem_conv0', 'M/~/nf_block_10/~/conv0', 'M/~/nf_block_2/~/conv0', 'M/~/linear']
  dirs = []
  for lam in (0.01, 0.16):
    d = tmp_path / f'clipping={lam}'
    d.mkdir()
    with open(d / 'metrics.jsonl', 'w') as f:
      f.write(json.dumps({'step': 10, 'split': 'train', 'train/loss': 2.0}) + '\n')
      for step in (10, 20, 30):
        row = {'step': step, 'split': 'agc', 'agc/clipping': lam}
        for i, g in enumerate(groups):
          row[f'agc/clipped/{g}'] = (i + step / 30) / 4
          row[f'agc/ratio_median/{g}'] = 0.01 * (i + 1)
          row[f'agc/ratio_max/{g}'] = 0.1 * (i + 1)
        f.write(json.dumps(row) + '\n')
    dirs.append(str(d))
  names, steps, t = agc_report.agc_table(agc_report.read_agc_rows(dirs[0]))
  assert names == [groups[0], groups[2], groups[1], groups[3]]   # network order
  assert list(steps) == [10, 20, 30]
  np.testing.assert_allclose(t['clipped'][1], [(2 + s / 30) / 4 for s in (10, 20, 30)])
  script = load_repo_module('agc_report_script', 'scripts', 'agc_report.py')
  out = tmp_path / 'both.png'
  assert script.main(dirs + ['--out', str(out)]) == 0
  assert out.stat().st_size > 10_000
  (tmp_path / 'empty').mkdir()
  with pytest.raises(SystemExit) as e:
    script.main([str(tmp_path / 'empty')])
  assert e.value.code == 2
  with open(tmp_path / 'empty' / 'metrics.jsonl', 'w') as f:
    f.write(json.dumps({'step': 1, 'split': 'train', 'train/loss': 1.0}) + '\n')
  with pytest.raises(SystemExit) as e:
    script.main([str(tmp_path / 'empty')])
  assert e.value.code == 2
