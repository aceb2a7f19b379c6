"""RandAugment before or after MixUp/CutMix (``data.augment_before_mix``).

The official NFNet pipeline (``augment_before_mix=False``) mixes the batch
first, then RandAugments each mixed example (clipped and truncated to uint8
first); the labels are mixed with the images and RandAugment leaves them
alone. With a deterministic stand-in for RandAugment (binarise at 128) the
two orders are told apart exactly.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from nfnet_jax import config as config_lib
from nfnet_jax import data
from nfnet_jax import errors
from nfnet_jax import recipes
from nfnet_jax.config import load
from nfnet_jax.data import fashion_mnist
from nfnet_jax.data import mixing
from nfnet_jax.data import preprocess as pp
from nfnet_jax.data import randaugment
from nfnet_jax.data import sources
from nfnet_jax.data import tail as tail_lib
from nfnet_jax.testing import fake_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, BATCH, SEED = 64, 8, 4


def _binarize(image, key):
  """The stand-in RandAugment: 255 where the (truncated) pixel is >= 128."""
  del key
  x = randaugment.to_uint8(image, 'official')
  return tf.where(x >= 128, tf.constant(255, tf.uint8), tf.constant(0, tf.uint8))


@pytest.fixture()
def fake_ra(monkeypatch):
  monkeypatch.setattr(randaugment, 'make_randaugment',
                      lambda layers, magnitude, mode='official': _binarize)


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('fmnist_order')
  rng = np.random.default_rng(3)
  for split, n in (('train', N_TRAIN), ('test', 16)):
    img_stem, lbl_stem = fashion_mnist.FILES[split]
    fake_data.write_idx(str(d / (img_stem + '.gz')),
                            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    fake_data.write_idx(str(d / (lbl_stem + '.gz')),
                            (np.arange(n) % 10).astype(np.uint8))
  return str(d)


def _config(idx_dir, **data_fields):
  c = config_lib.base_config()
  c.seed = SEED
  c.data.name = 'fashion_mnist'
  data.apply_dataset_defaults(c.data)
  c.data.data_dir = idx_dir
  c.data.train_crop = 'none'
  c.data.random_flip = False
  c.train.batch_size = BATCH
  for k, v in data_fields.items():
    c.data[k] = v
  return c


def _batches(c, n=3, start_step=0):
  it = data.train_iterator(c, start_step=start_step, layout='host',
                           process_index=0, process_count=1,
                           local_device_count=1)
  with it:
    return [next(it) for _ in range(n)]


def _pixels(batch, c):
  info = data.dataset_info(c.data)
  return batch['images'] * info.std[0] + info.mean[0]


def _mix_weights(step):
  key = pp.make_key(sources.seed_int(SEED, 0, 7), step)
  return mixing.mix_weights(key, BATCH, 28, 28, mixup_alpha=0.2,
                            use_cutmix=True, groups=1)


@pytest.mark.parametrize('before', [False, True])
def test_randaugment_runs_on_the_mixed_or_the_unmixed_images(idx_dir, fake_ra,
                                                            before):
  plain = _batches(_config(idx_dir))              # no RA, no mixing
  mixed = _batches(_config(idx_dir, mixup_alpha=0.2, cutmix=True))
  c = _config(idx_dir, mixup_alpha=0.2, cutmix=True, randaugment_layers=2,
              randaugment_magnitude=9, augment_before_mix=before)
  got = _batches(c)
  for step, (p, m, g) in enumerate(zip(plain, mixed, got)):
    # RandAugment never touches the labels: the mixed labels of plain mixing.
    np.testing.assert_array_equal(g['labels'], m['labels'])
    raw = tf.constant(np.round(_pixels(p, c)))
    partner, lam, cut, _ = _mix_weights(step)
    if before:
      want = mixing.mix_pixels(_binarize(raw, None), partner, lam, cut)
    else:
      want = _binarize(mixing.mix_pixels(raw, partner, lam, cut), None)
    want = tf.cast(want, tf.float32).numpy()
    close = np.isclose(_pixels(g, c), want, atol=1e-3)
    # After mixing, a mixed pixel within float rounding of 128 may fall
    # either side of the threshold.
    assert close.mean() > 0.999, (before, step, close.mean())
    values = np.unique(np.round(_pixels(g, c)))
    if before:   # MixUp blends two binarised images: values in between
      assert len(values) > 2
    else:        # binarised last: only 0 and 255
      assert set(values.tolist()) <= {0.0, 255.0}


def test_after_mix_resumes_exactly_and_follows_the_seed(idx_dir):
  c = _config(idx_dir, mixup_alpha=0.2, cutmix=True, randaugment_layers=2,
              randaugment_magnitude=9, train_crop='pad_crop', random_flip=True)
  assert tail_lib.train_settings(c)['ra_after_mix'] is not None
  ref = _batches(c, 10)                           # 8 steps per epoch
  for a, b in zip(ref[6:], _batches(c, 4, start_step=6)):
    np.testing.assert_array_equal(a['images'], b['images'])
    np.testing.assert_array_equal(a['labels'], b['labels'])
  c.seed = SEED + 1
  assert not np.array_equal(_batches(c, 1)[0]['images'], ref[0]['images'])


def test_without_mixing_both_orders_are_the_same(idx_dir):
  kw = dict(randaugment_layers=2, randaugment_magnitude=9)
  a = _batches(_config(idx_dir, augment_before_mix=False, **kw), 2)
  b = _batches(_config(idx_dir, augment_before_mix=True, **kw), 2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['images'], y['images'])


@pytest.mark.parametrize('spec', ['nfnet.py:F0', 'nfnet.py:F3+', 'nfnet_light.py',
                                  'nf_resnet.py:50', 'nf_regnet.py:B0'])
def test_official_configs_augment_after_mixing(spec):
  c = load.load_config(os.path.join(ROOT, 'configs', spec))
  assert c.data.augment_before_mix is False
  rows = {r.setting: r for r in recipes.recipe_rows(c)}
  row = rows['RandAugment vs mixing']
  if c.data.randaugment_layers:
    assert row.ours == 'after mixing'
    assert tail_lib.train_settings(c)['ra_after_mix'] is not None
  if spec.startswith('nfnet.py'):
    assert row.official == 'after mixing'


def test_f0_recipe_agrees_on_every_row_and_flags_the_other_order():
  path = os.path.join(ROOT, 'configs', 'nfnet.py:F0')
  rows = recipes.recipe_rows(load.load_config(path))
  assert all(recipes.same(r.ours, r.official) for r in rows), [
      r for r in rows if not recipes.same(r.ours, r.official)]
  other = load.load_config(path, [('data.augment_before_mix', 'True')])
  table = recipes.recipe_table(other)
  assert '| RandAugment vs mixing | before mixing | after mixing | **no** |' in table


@pytest.mark.parametrize('value', ['no', 1, None])
def test_bad_augment_before_mix_is_one_line(idx_dir, value):
  c = _config(idx_dir)
  c.data.unlock()
  del c.data['augment_before_mix']
  c.data.augment_before_mix = value
  with pytest.raises(errors.DataError) as e:
    data.validate_data_config(c.data)
  msg = str(e.value)
  assert 'config.data.augment_before_mix' in msg and '\n' not in msg


def test_eval_iterator_honours_prefetch(idx_dir, monkeypatch):
  seen = []
  real = tail_lib.prefetch
  monkeypatch.setattr(tail_lib, 'prefetch',
                      lambda d: seen.append(d.prefetch) or real(d))
  c = _config(idx_dir, prefetch=5, eval_split='test')
  c.train.eval_batch_size = 8
  batches = list(data.eval_iterator(c, layout='host', process_index=0,
                                    process_count=1, local_device_count=1))
  assert len(batches) == 2 and seen == [5]
