"""Tests for checkpoint evaluation (nfnet_jax/analysis/evaluate.py, scripts/evaluate.py).

Metrics are checked against a numpy computation on the same eval batches
(logits from a direct ``model.apply``), on a small generated Fashion-MNIST
split whose size (50) is not a multiple of the eval batch (16), so padding
and masking matter.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nfnet_jax import data as data_lib
from nfnet_jax import models
from nfnet_jax import pretrained
from nfnet_jax.analysis import evaluate as eval_lib
from nfnet_jax.testing import fake_data

from conftest import ROOT
from conftest import TEST_XLA_FLAGS
N_TEST = 50


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('fmnist_eval')
  return fake_data.write_fake_fashion_mnist(str(d), 32, N_TEST, seed=1, labels='random')


def make_config(idx_dir, model=None):
  sys.path.insert(0, os.path.join(ROOT, 'configs'))
  try:
    import fashion_mnist as fm_config  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  c = fm_config.get_config('tiny')
  c.data.data_dir = idx_dir
  c.train.eval_batch_size = 16
  c.model.widths = (16, 16, 16, 16)  # equal shapes: cheap op-by-op init
  if model is not None:
    c.model = model
  return c


def reference_metrics(config, params, state, resolution):
  """top-1/top-5/mean CE in numpy from direct model.apply on the eval batches."""
  model = models.create_model(config.model, 10)
  apply = jax.jit(model.apply, static_argnums=(4,))
  logits, labels = [], []
  for b in data_lib.eval_iterator(config, layout='host', image_size=resolution):
    keep = np.asarray(b['mask']) > 0
    # Whole padded batches (one compile); padding rows are dropped after the
    # forward pass, which is per-example in inference mode (BN included).
    out, _ = apply(params, state, None, np.asarray(b['images']), False)
    logits.append(np.asarray(out['logits'], np.float64)[keep])
    labels.append(np.asarray(b['labels'])[keep])
  logits, labels = np.concatenate(logits), np.concatenate(labels)
  assert len(labels) == N_TEST
  logp = logits - logits.max(1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(1, keepdims=True))
  order = np.argsort(-logits, axis=1)
  return {'top1': np.mean(order[:, 0] == labels),
          'top5': np.mean([l in o[:5] for l, o in zip(labels, order)]),
          'loss': -np.mean(logp[np.arange(len(labels)), labels])}


def _spread_classifier(params, scale=300.0):
  """Random-init logits are ~0 (N(0, 0.01) classifier): scale them so the
  predictions differ between examples and a wrong aggregation would show."""
  out = {m: dict(d) for m, d in params.items()}
  for m in out:
    if m.endswith('/~/linear'):
      out[m]['w'] = np.asarray(out[m]['w']) * scale
  return out


@pytest.fixture(scope='module')
def official_ckpt(idx_dir, tmp_path_factory):
  """(params, path) of a tiny NF-ResNet written by save_official."""
  config = make_config(idx_dir)
  model = models.create_model(config.model, 10)
  params, _ = jax.jit(model.init, static_argnums=2)(
      jax.random.PRNGKey(3), np.zeros((1, 32, 32, 1), np.float32), True)
  params = _spread_classifier(params)
  path = str(tmp_path_factory.mktemp('official') / 'tiny_haiku.npz')
  pretrained.save_official(params, path)
  return params, path


def test_official_checkpoint_at_two_resolutions(idx_dir, official_ckpt):
  config = make_config(idx_dir)
  params, path = official_ckpt
  result = eval_lib.evaluate(config, path, [32, 40], log=lambda s: None)
  assert result['checkpoint']['source'] == 'official'
  assert set(result['results']) == {'32', '40'}
  for res in (32, 40):
    want = reference_metrics(config, params, {}, res)
    got = result['results'][str(res)]
    assert got['num_examples'] == N_TEST
    assert got['top1'] == pytest.approx(want['top1'], abs=1e-6)
    assert got['top5'] == pytest.approx(want['top5'], abs=1e-6)
    assert got['loss'] == pytest.approx(want['loss'], rel=1e-4)
  assert 0.0 < result['results']['32']['top5'] < 1.0  # not a degenerate case
  # A file of another model fails with the loader's name/shape message.
  wrong = make_config(idx_dir)
  wrong.model.widths = (32, 32, 32, 32)
  with pytest.raises(ValueError, match='does not match the model'):
    eval_lib.evaluate(wrong, path, [32], log=lambda s: None)


def test_training_loop_checkpoint_with_bn_state_and_ema(idx_dir, tmp_path):
  """A TrainState as the loop builds and saves it (orbax, with optimizer state,
  EMA params and BatchNorm statistics), read back without the optimizer."""
  from nfnet_jax.optim import build_optimizer  # pylint: disable=import-outside-toplevel
  from nfnet_jax.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from nfnet_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  bn_model = dict(name='ResNet', variant='ResNet26', norm='batchnorm', width=0.125,
                  depths=(1, 1, 1, 1), widths=(16, 16, 16, 16), stochdepth_rate=0.0, drop_rate=0.0)
  config = make_config(idx_dir, model=bn_model)
  model = models.create_model(config.model, 10)
  tx, _ = build_optimizer(config.optimizer, config.train.batch_size, config.train.total_steps)
  st = state_lib.init_train_state(model, tx, config, (32, 32, 1))
  rng = np.random.default_rng(0)
  # Distinct params / EMA params, and non-trivial BN statistics, so that
  # picking the wrong tree or dropping the state changes the numbers.
  params = _spread_classifier(st.params, 300.0)
  ema = _spread_classifier(st.params, -200.0)
  def perturb(path, x):
    if not np.issubdtype(x.dtype, np.floating):
      return x
    name = jax.tree_util.keystr(path)
    noise = rng.normal(size=x.shape)
    # Means near 0 (a large mean would zero every ReLU), variances in [0.5, 2].
    v = 0.5 + 1.5 * rng.random(x.shape) if 'var_ema' in name else 0.2 * noise
    return v.astype(x.dtype)
  mstate = jax.tree_util.tree_map_with_path(perturb, st.model_state)
  st = st._replace(params=params, ema_params=ema, model_state=mstate, step=np.int32(7))
  workdir = tmp_path / 'wd'
  ck = ckpt_lib.Checkpointer(str(workdir / 'checkpoints'), log=lambda s: None)
  assert ck.save(7, st, {'note': 'test'})
  ck.close()

  result = eval_lib.evaluate(config, str(workdir), [32], log=lambda s: None)
  assert result['checkpoint'] == {'source': 'orbax', 'path': str(workdir), 'step': 7,
                                  'params': 'ema_params'}
  want = reference_metrics(config, ema, mstate, 32)
  got = result['results']['32']
  assert got['top1'] == pytest.approx(want['top1'], abs=1e-6)
  assert got['loss'] == pytest.approx(want['loss'], rel=1e-4)
  raw = eval_lib.evaluate(config, str(workdir / 'checkpoints' / '7'), [32], use_ema=False,
                          log=lambda s: None)
  want_raw = reference_metrics(config, params, mstate, 32)
  assert raw['checkpoint']['params'] == 'params'
  assert raw['results']['32']['loss'] == pytest.approx(want_raw['loss'], rel=1e-4)
  assert abs(want_raw['loss'] - want['loss']) > 1e-3  # the two trees really differ
  with pytest.raises(FileNotFoundError, match='no finished checkpoint'):
    eval_lib.evaluate(config, str(tmp_path), [32], log=lambda s: None)


def test_script_writes_json(idx_dir, official_ckpt, tmp_path):
  """The command line end to end (numerics are checked by the tests above)."""
  _, ckpt = official_ckpt
  out = tmp_path / 'r.json'
  # A config file of the test model (a None field such as model.widths cannot
  # be overridden from the command line).
  cfg = tmp_path / 'eval_cfg.py'
  cfg.write_text(
      'import importlib.util\n'
      f'spec = importlib.util.spec_from_file_location("fm", {os.path.join(ROOT, "configs", "fashion_mnist.py")!r})\n'
      'fm = importlib.util.module_from_spec(spec)\n'
      'spec.loader.exec_module(fm)\n'
      'def get_config():\n'
      '  c = fm.get_config("tiny")\n'
      '  c.model.widths = (16, 16, 16, 16)\n'
      '  return c\n')
  env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, JAX_PLATFORMS='cpu')
  res = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'evaluate.py'), '--config', str(cfg),
       f'--config.data.data_dir={idx_dir}', '--config.train.eval_batch_size=16',
       '--checkpoint', ckpt, '--resolutions', '32', '--out', str(out)],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  assert 'top-1' in res.stdout
  blob = json.loads(out.read_text())
  assert blob['checkpoint']['source'] == 'official'
  assert blob['dataset'] == 'fashion_mnist' and list(blob['results']) == ['32']
  r = blob['results']['32']
  assert r['num_examples'] == N_TEST
  assert 0.0 <= r['top1'] <= r['top5'] <= 1.0 and r['loss'] > 0
