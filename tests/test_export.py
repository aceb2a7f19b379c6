"""Inference export: folded WS equals the model; jax.export and SavedModel reload."""
import os

import jax
import numpy as np
import pytest

from nfnet_jax import export
from nfnet_jax.models import create_model

NUM_CLASSES = 5
TINY_NFNET = dict(name='NFNet', variant='F0', depths=(1, 1, 1, 1), widths=(256, 256, 256, 256),
                  stem_widths=(8, 8, 8, 16))
TINY_RESNET = dict(name='NFResNet', variant='ResNet26', depths=(1, 1, 1, 1),
                   widths=(32, 32, 64, 64), stem_width=16, se_ratio=0.25)


def _random_params(config, size=32, seed=0):
  """Params with random gains, biases and skip gains (init would hide errors)."""
  model = create_model(config, NUM_CLASSES)
  x = np.zeros((1, size, size, 3), np.float32)
  params, _ = jax.jit(lambda k: model.init(k, x, False))(jax.random.PRNGKey(seed))
  rng = np.random.RandomState(seed)
  out = {}
  for m, d in params.items():
    out[m] = {}
    for n, v in d.items():
      v = np.asarray(v)
      if n in ('gain', 'skip_gain'):
        v = v + 0.3 * np.asarray(rng.randn(*v.shape), np.float32) + (1.0 if n == 'skip_gain' else 0.0)
      elif n in ('bias', 'b'):
        v = v + 0.1 * np.asarray(rng.randn(*v.shape), np.float32)
      out[m][n] = v.astype(np.float32)
  return out


def _logits(config, params, x):
  model = create_model(config, NUM_CLASSES)
  return np.asarray(jax.jit(lambda p, x: model.apply(p, {}, None, x, False)[0]['logits'])(
      params, x))


def _rel(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize('config', [
    TINY_NFNET, TINY_RESNET,
    dict(TINY_NFNET, ws_eps_form='add', gelu_form='erf', conv_padding='symmetric'),
], ids=['nfnet', 'nf_resnet', 'nfnet_timm_numerics'])
def test_folded_equals_unfolded(config):
  params = _random_params(config)
  x = np.random.RandomState(1).randn(3, 32, 32, 3).astype(np.float32)
  folded, fcfg = export.fold_ws(params, config)
  assert fcfg['ws_folded'] is True and config.get('ws_folded') is None
  n_ws = sum(1 for d in params.values() if 'gain' in d)
  assert n_ws > 5 and not any('gain' in d for d in folded.values())
  # Each folded kernel is the standardized kernel, by an independent numpy formula.
  m = next(m for m, d in params.items() if 'gain' in d and d['w'].shape[:2] == (3, 3))
  w, g = params[m]['w'].astype(np.float64), params[m]['gain'].astype(np.float64)
  n = np.prod(w.shape[:-1])
  var = w.var(axis=(0, 1, 2))
  denom = (np.sqrt(n * (var + 1e-5)) if config.get('ws_eps_form') == 'add'
           else np.sqrt(np.maximum(n * var, 1e-4)))
  np.testing.assert_allclose(folded[m]['w'], g * (w - w.mean(axis=(0, 1, 2))) / denom,
                             rtol=1e-5, atol=1e-7)
  assert _rel(_logits(fcfg, folded, x), _logits(config, params, x)) < 1e-5


def test_fold_errors():
  with pytest.raises(ValueError, match="name='ResNet' has no scaled-WS convs"):
    export.fold_ws({}, {'name': 'ResNet'})
  with pytest.raises(ValueError, match='folded already'):
    export.fold_ws({}, dict(TINY_NFNET, ws_folded=True))


def test_stablehlo_artifact_reloads_and_gives_the_logits(tmp_path):
  params = _random_params(TINY_RESNET)
  folded, fcfg = export.fold_ws(params, TINY_RESNET)
  path = str(tmp_path / 'model.jax')
  export.export_stablehlo(folded, fcfg, NUM_CLASSES, 32, path)
  assert os.path.getsize(path) > 0
  loaded = export.load_stablehlo(path)
  for batch in (1, 4):  # the batch dimension is symbolic
    x = np.random.RandomState(batch).randn(batch, 32, 32, 3).astype(np.float32)
    got = np.asarray(loaded.call(x))
    assert got.shape == (batch, NUM_CLASSES)
    assert _rel(got, _logits(TINY_RESNET, params, x)) < 1e-5
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match='is not a jax.export artifact'):
    export.load_stablehlo(path)


def test_saved_model_reloads_and_gives_the_logits(tmp_path):
  tf = pytest.importorskip('tensorflow')
  params = _random_params(TINY_NFNET)
  folded, fcfg = export.fold_ws(params, TINY_NFNET)
  path = str(tmp_path / 'saved_model')
  export.export_saved_model(folded, fcfg, NUM_CLASSES, 32, path)
  loaded = tf.saved_model.load(path)
  x = np.random.RandomState(7).randn(3, 32, 32, 3).astype(np.float32)
  got = loaded.signatures['serving_default'](images=tf.constant(x))['logits'].numpy()
  assert _rel(got, _logits(TINY_NFNET, params, x)) < 1e-5


def _run_script(name, argv):
  from conftest import load_repo_module  # pylint: disable=g-import-not-at-top
  return load_repo_module(f'script_{name}', 'scripts', f'{name}.py').main(argv)


def test_export_script(tmp_path, capsys):
  from nfnet_jax import pretrained  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  params = _random_params(TINY_RESNET)
  src = str(tmp_path / 'tiny.npz')
  pretrained.save_official(params, src)
  out = str(tmp_path / 'out')
  model_json = json.dumps({k: list(v) if isinstance(v, tuple) else v
                           for k, v in TINY_RESNET.items()})
  assert _run_script('export', ['--from', src, '--out', out, '--image_size', '32',
                                '--formats', 'stablehlo', '--model', model_json]) == 0
  meta = json.load(open(os.path.join(out, 'model.json')))
  assert meta['model']['ws_folded'] is True and meta['num_classes'] == NUM_CLASSES
  folded = pretrained.read_official(os.path.join(out, 'params_folded.npz'))
  assert not any('gain' in d for d in folded.values())
  x = np.random.RandomState(3).randn(2, 32, 32, 3).astype(np.float32)
  got = np.asarray(export.load_stablehlo(os.path.join(out, 'model.stablehlo')).call(x))
  assert _rel(got, _logits(TINY_RESNET, params, x)) < 1e-5
  # Bad input: one line, exit status 2, before anything compiles.
  capsys.readouterr()
  assert _run_script('export', ['--from', src, '--out', out, '--image_size', '32',
                                '--model', json.dumps(dict(TINY_RESNET, depths=[2, 1, 1, 1]))]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'missing' in err[0], err
  assert _run_script('export', ['--from', str(tmp_path / 'nope.npz'), '--out', out,
                                '--image_size', '32']) == 2
  assert 'does not exist' in capsys.readouterr().err
