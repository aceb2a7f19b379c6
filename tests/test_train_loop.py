"""The whole training loop on 8 fake CPU devices with mock ImageNet data.

A tiny NFNet (configs/nfnet.py's ``local`` model: every NFNet feature, a few
thousand parameters) trains 3 steps on ``tfds.testing.mock_data`` ImageNet
under pmap, under shard_map, and on a single device at the same global
batch. All three must end with the same parameters (float tolerance): the
data split over devices, the cross-device gradient mean and the optimizer
state must not depend on the parallel mode or device count.
"""
import contextlib
import json
import os

import jax
import numpy as np
import pytest

from nfnet_jax.config import load as config_load

from conftest import ROOT
# One epoch longer than any test run: the data pipeline builds the next
# epoch in a background thread, and tfds.testing.mock_data patches file
# access process-wide while it does, which races with the main thread
# opening the eval builder.
TRAIN_EXAMPLES = 256
EVAL_EXAMPLES = 16


def load_config_module(name):
  """Imports ``configs/<name>.py`` (the configs folder is not a package)."""
  return config_load.load_config_module(os.path.join(ROOT, 'configs', f'{name}.py'))


def write_mock_imagenet_metadata(data_dir):
  """A tfds data_dir whose imagenet2012 'is prepared' (metadata only).

  ``tfds.testing.mock_data(data_dir=...)`` then serves random examples for
  it; the split sizes come from this metadata.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder('imagenet2012', data_dir=str(data_dir))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name='train', shard_lengths=[TRAIN_EXAMPLES],
                          num_bytes=0),
      tfds.core.SplitInfo(name='validation', shard_lengths=[EVAL_EXAMPLES],
                          num_bytes=0)]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)
  return str(data_dir)


@contextlib.contextmanager
def mock_imagenet(data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=TRAIN_EXAMPLES, data_dir=data_dir):
    yield


def tiny_imagenet_config(data_dir, *, mode='pmap', total_steps=3,
                         num_devices=0):
  """The tiny NFNet on mock ImageNet at 32 px, global batch 16."""
  c = load_config_module('nfnet').get_config('F0,local')
  c.data.name = 'imagenet2012'
  c.data.data_dir = data_dir
  c.data.grayscale_to_rgb = False
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.image_size = 32
  c.data.eval_image_size = 32
  c.data.eval_crop_padding = 0
  c.data.train_crop = 'inception'
  c.data.randaugment_layers = 0
  c.data.mixup_alpha = 0.0            # MixUp/CutMix mix within each device's
  c.data.cutmix = False               # slice: not device-count invariant
  c.data.shuffle_buffer = 32
  # Per-example randomness is drawn per device: with it the 1-device run
  # could not equal the 8-device one.
  c.model.stochdepth_rate = 0.0
  c.model.drop_rate = 0.0
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.train.total_steps = total_steps
  c.train.log_every = 1
  c.train.eval_every = 0
  c.train.checkpoint_every = 0
  c.optimizer.warmup_steps = 1
  c.optimizer.base_lr = 0.4
  c.optimizer.ema_decay = 0.9
  c.parallel.mode = mode
  c.parallel.num_devices = num_devices
  c.parallel.distributed = 'off'
  return c


def final_flat_state(workdir):
  from nfnet_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  try:
    return ck.restore_flat()
  finally:
    ck.close()


@pytest.fixture(scope='module', autouse=True)
def compilation_cache(compilation_cache):  # pylint: disable=redefined-outer-name
  """Identical programs (init, repeated runs of one config) compile once (conftest's cache)."""
  yield compilation_cache


@pytest.fixture(scope='module')
def mock_dir(tmp_path_factory):
  return write_mock_imagenet_metadata(tmp_path_factory.mktemp('tfds'))


def test_pmap_shard_map_and_single_device_give_the_same_params(
    mock_dir, tmp_path):
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  assert jax.device_count() >= 8
  runs = {'pmap8': ('pmap', 0), 'shard_map8': ('shard_map', 0),
          'single': ('pmap', 1)}
  flats, summaries = {}, {}
  with mock_imagenet(mock_dir):
    for name, (mode, ndev) in runs.items():
      cfg = tiny_imagenet_config(mock_dir, mode=mode, num_devices=ndev)
      summaries[name] = loop.train_and_evaluate(cfg, str(tmp_path / name))
      flats[name], meta = final_flat_state(str(tmp_path / name))
      assert meta['step'] == 3
  assert summaries['pmap8']['num_devices'] == 8
  assert summaries['single']['num_devices'] == 1
  assert summaries['shard_map8']['parallel_mode'] == 'shard_map'

  ref = flats['single']
  params = [p for p in ref if p.startswith('.params')]
  assert len(params) > 50                        # a real NFNet tree
  moved = 0
  for name in ('pmap8', 'shard_map8'):
    assert set(flats[name]) == set(ref)
    for path in ref:
      np.testing.assert_allclose(flats[name][path], ref[path], rtol=1e-4,
                                 atol=1e-6, err_msg=f'{name} {path}')
  # Vacuity guard: training moved the parameters (skip gains start at 0),
  # so a gradient N times too large would have shown up above.
  gains = [p for p in params if p.endswith("['skip_gain']")]
  assert gains and all(abs(float(ref[p])) > 0 for p in gains)
  assert int(ref['.step']) == 3
  # Same per-step training losses, and the same final evaluation.
  losses = {}
  for name in runs:
    rows = [json.loads(l) for l in open(tmp_path / name / 'metrics.jsonl')]
    losses[name] = [r['train/loss'] for r in rows if r['split'] == 'train']
    assert len(losses[name]) == 3
  for name in ('pmap8', 'shard_map8'):
    np.testing.assert_allclose(losses[name], losses['single'], rtol=1e-5)
    for k in ('top1', 'top5', 'loss'):
      np.testing.assert_allclose(summaries[name]['final_eval'][k],
                                 summaries['single']['final_eval'][k],
                                 rtol=1e-4)


def test_compilation_cache_dir_is_set_unless_the_caller_set_one(tmp_path):
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  key = 'jax_compilation_cache_dir'
  old = getattr(jax.config, key)
  try:
    jax.config.update(key, None)
    loop._enable_compilation_cache(None)  # pylint: disable=protected-access
    assert getattr(jax.config, key) is None
    target = tmp_path / 'cache' / 'xla'
    loop._enable_compilation_cache(str(target))  # pylint: disable=protected-access
    assert getattr(jax.config, key) == str(target) and target.is_dir()
    # A directory chosen by the caller (here: the one just set) wins.
    loop._enable_compilation_cache(str(tmp_path / 'other'))  # pylint: disable=protected-access
    assert getattr(jax.config, key) == str(target)
    assert not (tmp_path / 'other').exists()
  finally:
    jax.config.update(key, old)
