"""Non-finite steps in the real training loop (``train_and_evaluate``).

The loop, checkpointing and logging are the real ones; two things are
swapped in to keep this fast and controllable: a tiny Haiku model (one conv
and the classifier) for ``models.create_model``, and a wrapper around the
real Fashion-MNIST train iterator that replaces the images of chosen steps
with NaN (a corrupt batch). A huge learning rate (no poisoned data) checks
that a diverging run is caught too.

Guarantees checked: a non-finite step is skipped by default (params, EMA
and optimizer state unchanged, the step counted, logged with its number and
reported in metrics and the summary); ``config.train.nonfinite='raise'``
stops with an error naming the step; N consecutive skips stop the run with a
message pointing at the learning rate and clipping; no checkpoint ever holds
a non-finite value.
"""
import json
import os
import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import nfnet_jax.data
import nfnet_jax.models
from nfnet_jax.testing import fake_data
from nfnet_jax.train import loop

from conftest import load_repo_config


def toy_model(num_classes):
  def forward(images, is_training, return_metrics=False):
    del is_training, return_metrics
    x = hk.Conv2D(4, 3, stride=4, name='conv')(images)
    x = jnp.mean(jax.nn.relu(x), axis=(1, 2))
    return {'logits': hk.Linear(num_classes, name='linear')(x)}
  return hk.transform_with_state(forward)


class PoisonedIterator:
  """The real train iterator, with NaN images at the given global steps."""

  def __init__(self, inner, start_step, bad_steps):
    self._inner, self._step, self._bad = inner, start_step, set(bad_steps)

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._inner)
    step, self._step = self._step, self._step + 1
    if step in self._bad:
      batch = dict(batch, images=np.full_like(batch['images'], np.nan))
    return batch

  @property
  def decode_errors(self):
    return self._inner.decode_errors


def load_config(arg='local'):
  return load_repo_config('fashion_mnist', arg, 'fashion_mnist_config')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('fmnist_nonfinite')
  return fake_data.write_fake_fashion_mnist(str(d), 128, 32)


def make_config(data_dir, **train):
  c = load_config()
  c.data.data_dir = data_dir
  c.parallel.num_devices = 2
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.train.total_steps = 8
  c.train.checkpoint_every = 1
  c.train.keep_checkpoints = 20
  c.train.log_every = 1
  c.train.eval_every = 0
  c.optimizer.warmup_steps = 1
  for k, v in train.items():
    c.train[k] = v
  return c


@pytest.fixture
def patched(monkeypatch):
  """Installs the toy model; returns a function setting the poisoned steps."""
  bad = set()
  monkeypatch.setattr(nfnet_jax.models, 'create_model',
                      lambda model_config, num_classes: toy_model(num_classes))
  real = nfnet_jax.data.train_iterator

  def train_iterator(config, *, start_step=0, **kwargs):
    return PoisonedIterator(real(config, start_step=start_step, **kwargs),
                            start_step, bad)
  monkeypatch.setattr(nfnet_jax.data, 'train_iterator', train_iterator)
  return bad.update


def checkpoints(workdir):
  """{step: {path: array}} of every checkpoint in the workdir."""
  directory = os.path.join(workdir, 'checkpoints')
  mngr = ocp.CheckpointManager(directory)
  out = {}
  try:
    for step in mngr.all_steps():
      r = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
      out[step] = {p: np.asarray(r['state'][k]) for k, p in
                   zip(sorted(r['state']), r['meta']['paths'])}
  finally:
    mngr.close()
  return out


def assert_all_finite(ckpts):
  assert ckpts
  for step, state in ckpts.items():
    for path, x in state.items():
      if np.issubdtype(x.dtype, np.inexact):
        assert np.all(np.isfinite(x)), f'checkpoint {step}: {path}'


def split_state(state):
  """(trained values: params/EMA/opt state, bookkeeping scalars)."""
  book = ('.step', '.nonfinite_total', '.nonfinite_consecutive')
  return ({p: x for p, x in state.items() if p not in book},
          {p: int(state[p]) for p in book})


def test_nonfinite_step_is_skipped_counted_and_logged(
    patched, data_dir, tmp_path, capsys):
  patched({3})
  summary = loop.train_and_evaluate(make_config(data_dir), str(tmp_path))
  out = capsys.readouterr().out
  assert summary['status'] == 'completed' and summary['step'] == 8
  assert summary['skipped_steps'] == 1
  assert summary['skipped_step_numbers'] == [3]
  assert re.search(r'step 3: non-finite loss/gradients .*update skipped', out)
  assert len(re.findall(r'non-finite', out)) == 1, out

  ckpts = checkpoints(str(tmp_path))
  assert sorted(ckpts) == list(range(1, 9))
  assert_all_finite(ckpts)
  # Checkpoint k holds the state after steps 0..k-1; step 3 was skipped, so
  # checkpoints 3 and 4 hold the same params, EMA and optimizer state.
  values3, book3 = split_state(ckpts[3])
  values4, book4 = split_state(ckpts[4])
  values5, book5 = split_state(ckpts[5])
  for path in values3:
    np.testing.assert_array_equal(values4[path], values3[path], err_msg=path)
  assert book3 == {'.step': 3, '.nonfinite_total': 0,
                   '.nonfinite_consecutive': 0}
  assert book4 == {'.step': 4, '.nonfinite_total': 1,
                   '.nonfinite_consecutive': 1}
  assert book5 == {'.step': 5, '.nonfinite_total': 1,
                   '.nonfinite_consecutive': 0}
  # ... and training went on afterwards.
  assert any(not np.array_equal(values5[p], values4[p])
             for p in values4 if 'params' in p)

  with open(tmp_path / 'metrics.jsonl') as f:
    rows = [json.loads(l) for l in f]
  train = {r['step']: r for r in rows if r['split'] == 'train'}
  assert [train[s]['train/skipped_total'] for s in range(1, 9)] == [
      0, 0, 0, 1, 1, 1, 1, 1]
  assert all(np.isfinite(r['train/loss']) for r in train.values()
             if 'train/loss' in r)
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['skipped_step_numbers'] == [3]


def test_nonfinite_raise_stops_naming_the_step(patched, data_dir, tmp_path):
  patched({3})
  config = make_config(data_dir, nonfinite='raise')
  with pytest.raises(FloatingPointError,
                     match=r"^step 3: non-finite .*config\.train\.nonfinite="
                           r"'raise'"):
    loop.train_and_evaluate(config, str(tmp_path))
  ckpts = checkpoints(str(tmp_path))
  assert max(ckpts) <= 4
  assert_all_finite(ckpts)
  assert not os.path.exists(tmp_path / 'summary.json')


def test_consecutive_nonfinite_steps_stop_with_advice(
    patched, data_dir, tmp_path):
  patched({2, 3, 4, 5, 6, 7})
  config = make_config(data_dir, max_consecutive_nonfinite=3)
  with pytest.raises(RuntimeError) as e:
    loop.train_and_evaluate(config, str(tmp_path))
  msg = str(e.value)
  assert re.search(r'3 consecutive non-finite steps \(up to step 4', msg), msg
  assert 'config.train.max_consecutive_nonfinite=3' in msg
  assert 'config.optimizer.base_lr' in msg
  assert 'config.optimizer.clipping' in msg
  ckpts = checkpoints(str(tmp_path))
  assert_all_finite(ckpts)
  # Nothing was learnt from the poisoned steps.
  values2, _ = split_state(ckpts[2])
  for step in ckpts:
    if step > 2:
      values, book = split_state(ckpts[step])
      assert book['.nonfinite_total'] == step - 2
      for path in values2:
        np.testing.assert_array_equal(values[path], values2[path])


def test_diverging_learning_rate_is_caught(patched, data_dir, tmp_path,
                                           capsys):
  # No poisoned data: a learning rate of 1e30 without AGC blows the params
  # up; every such update is refused and the run stops after 2 in a row.
  patched(set())
  config = make_config(data_dir, max_consecutive_nonfinite=2)
  config.optimizer.base_lr = 1e30
  config.optimizer.clipping = None
  with pytest.raises(RuntimeError, match='consecutive non-finite steps'):
    loop.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  steps = [int(s) for s in re.findall(r'step (\d+): non-finite', out)]
  assert len(steps) == 2 and steps[1] == steps[0] + 1, out
  assert_all_finite(checkpoints(str(tmp_path)))
