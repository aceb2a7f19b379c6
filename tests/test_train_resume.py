"""Loop-level reliability: exact resume after SIGTERM, non-finite steps.

Uses the tiny NFNet on mock ImageNet (see test_train_loop.py) with shard_map
over 8 fake devices. All runs here share one config (6 steps), so with the
persistent compilation cache only the first run compiles.
"""
import gc
import json
import os
import signal

import jax
import numpy as np
import pytest

from test_train_loop import compilation_cache  # pylint: disable=unused-import
from test_train_loop import final_flat_state
from test_train_loop import mock_imagenet
from test_train_loop import tiny_imagenet_config
from test_train_loop import write_mock_imagenet_metadata

TOTAL = 6


@pytest.fixture(scope='module')
def mock_dir(tmp_path_factory):
  return write_mock_imagenet_metadata(tmp_path_factory.mktemp('tfds'))


def _config(mock_dir, **kw):
  c = tiny_imagenet_config(mock_dir, mode='shard_map', total_steps=TOTAL)
  c.train.log_every = 2
  c.train.eval_every = 4
  # Background checkpoint writes, as on accelerators (auto is off on CPU):
  # resumption must stay exact with them.
  c.train.async_checkpoints = 'on'
  for k, v in kw.items():
    section, field = k.split('__')
    c[section][field] = v
  return c


def _rows(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]


def _deterministic(rows):
  """metrics.jsonl without the timing columns."""
  return [{k: v for k, v in r.items() if not k.endswith('_per_s')}
          for r in rows]


class _SigtermAt:
  """Wraps train_iterator: SIGTERMs this process while batch k is fetched."""

  def __init__(self, real, k):
    self.real, self.k = real, k

  def __call__(self, config, **kwargs):
    it = self.real(config, **kwargs)
    start = kwargs.get('start_step', 0)

    def gen():
      for i, batch in enumerate(it, start=start):
        if i == self.k:
          os.kill(os.getpid(), signal.SIGTERM)
        yield batch
    return gen()


def test_resume_after_sigterm_is_exact(mock_dir, tmp_path, monkeypatch):
  from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  with mock_imagenet(mock_dir):
    # Uninterrupted reference.
    ref = loop.train_and_evaluate(_config(mock_dir), str(tmp_path / 'ref'))
    assert ref['status'] == 'completed' and ref['step'] == TOTAL

    # Interrupted: SIGTERM while batch 4 is fetched (the loop prefetches 2
    # ahead, so during step 3) -> the loop finishes step 3, checkpoints at
    # step 4 and returns.
    work = str(tmp_path / 'work')
    real = data_lib.train_iterator
    monkeypatch.setattr(data_lib, 'train_iterator', _SigtermAt(real, 4))
    handler_before = signal.getsignal(signal.SIGTERM)
    first = loop.train_and_evaluate(_config(mock_dir), work)
    assert first['status'] == 'preempted'
    stopped = first['step']
    assert stopped == 4
    assert not os.path.exists(os.path.join(work, 'summary.json'))
    _, meta = final_flat_state(work)
    assert meta['step'] == stopped
    assert signal.getsignal(signal.SIGTERM) == handler_before   # restored
    # Resume with the same command to the end.
    monkeypatch.setattr(data_lib, 'train_iterator', real)
    second = loop.train_and_evaluate(_config(mock_dir), work)
    assert second['status'] == 'completed' and second['step'] == TOTAL

  a, meta_a = final_flat_state(str(tmp_path / 'ref'))
  b, meta_b = final_flat_state(work)
  assert meta_a['step'] == meta_b['step'] == TOTAL
  assert set(a) == set(b)
  for path in a:   # params, EMA, optimizer state, counters: bit-identical
    np.testing.assert_array_equal(a[path], b[path], err_msg=path)
  assert ref['final_eval'] == second['final_eval']
  assert ref['final_train'] == second['final_train']
  assert _deterministic(_rows(str(tmp_path / 'ref'))) == \
      _deterministic(_rows(work))


class _NanBatches:
  """Wraps train_iterator: NaN images at the given steps; keeps the real
  iterators (``made``) to check that the loop closed them."""

  def __init__(self, real, steps):
    self.real, self.steps = real, set(steps)
    self.made = []

  def __call__(self, config, **kwargs):
    it = self.real(config, **kwargs)
    self.made.append(it)
    start = kwargs.get('start_step', 0)

    def gen():
      for i, batch in enumerate(it, start=start):
        if i in self.steps:
          batch = dict(batch)
          batch['images'] = np.full_like(batch['images'], np.nan)
        yield batch
    return _Closing(gen(), it)


class _Closing:
  """An iterator whose close() also closes the real train iterator."""

  def __init__(self, gen, real):
    self.gen, self.real = gen, real

  def __iter__(self):
    return self

  def __next__(self):
    return next(self.gen)

  def close(self):
    self.gen.close()
    self.real.close()


def test_nonfinite_steps_are_skipped_logged_and_counted(
    mock_dir, tmp_path, monkeypatch, capsys):
  from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  nan_batches = _NanBatches(data_lib.train_iterator, [1, 2])
  monkeypatch.setattr(data_lib, 'train_iterator', nan_batches)
  # Without the cyclic garbage collector only an explicit close() can free
  # the train iterator (it is part of a reference cycle) during this run.
  gc.disable()
  try:
    with mock_imagenet(mock_dir):
      summary = loop.train_and_evaluate(_config(mock_dir), str(tmp_path / 'w'))
    closed = [it._gen.gi_frame is None for it in nan_batches.made]   # pylint: disable=protected-access
  finally:
    gc.enable()
  assert summary['status'] == 'completed'
  # The loop closed its train iterator before returning (the tf.data
  # pipeline's generator has finished), not left it to the garbage collector.
  assert closed == [True]
  # The loop closed its train iterator before returning (the tf.data
  # pipeline's generator has finished), not left it to the garbage collector.
  assert summary['skipped_steps'] == 2
  assert summary['skipped_step_numbers'] == [1, 2]
  out = capsys.readouterr().out
  assert 'step 1: non-finite' in out and 'step 2: non-finite' in out
  flat, _ = final_flat_state(str(tmp_path / 'w'))
  assert int(flat['.nonfinite_total']) == 2
  assert int(flat['.nonfinite_consecutive']) == 0
  for path, value in flat.items():
    if value.dtype.kind == 'f':
      assert np.all(np.isfinite(value)), path
  assert np.isfinite(summary['final_eval']['loss'])


def test_nonfinite_raise_names_the_step(mock_dir, tmp_path, monkeypatch):
  from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(data_lib, 'train_iterator',
                      _NanBatches(data_lib.train_iterator, [2]))
  with mock_imagenet(mock_dir):
    with pytest.raises(FloatingPointError, match='step 2'):
      loop.train_and_evaluate(_config(mock_dir, train__nonfinite='raise'),
                              str(tmp_path / 'w'))


def test_too_many_consecutive_nonfinite_steps_stop_the_run(
    mock_dir, tmp_path, monkeypatch):
  from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(data_lib, 'train_iterator',
                      _NanBatches(data_lib.train_iterator, range(1, 6)))
  with mock_imagenet(mock_dir):
    with pytest.raises(RuntimeError, match=r'3 consecutive non-finite.*'
                       r'base_lr.*clipping'):
      loop.train_and_evaluate(
          _config(mock_dir, train__max_consecutive_nonfinite=3),
          str(tmp_path / 'w'))
