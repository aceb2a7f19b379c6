"""Fashion-MNIST pipeline from idx files (generated here and, if installed,
the Debian copy): shapes, normalisation, determinism, resumption, eval
coverage across simulated hosts, validation errors."""
import os

import numpy as np
import pytest

from nfnet_jax import config as config_lib
from nfnet_jax import data
from nfnet_jax.data import fashion_mnist
from nfnet_jax.testing import fake_data

REAL_DIR = fashion_mnist.DEFAULT_DIR
N_TRAIN, N_TEST = 300, 77


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  """Small idx files; each image's pixel (0, 0) encodes its index / 2."""
  d = tmp_path_factory.mktemp('fmnist')
  rng = np.random.default_rng(0)
  for split, n in (('train', N_TRAIN), ('test', N_TEST)):
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    img_stem, lbl_stem = fashion_mnist.FILES[split]
    # Uncompressed test images exercise the plain-idx path too.
    fake_data.write_idx(str(d / (img_stem + ('.gz' if split == 'train'
                                                  else ''))), images)
    fake_data.write_idx(str(d / (lbl_stem + '.gz')), labels)
  return str(d)


def make_config(data_dir, batch=32, eval_batch=16, **data_overrides):
  c = config_lib.base_config()
  c.data.name = 'fashion_mnist'
  data.apply_dataset_defaults(c.data)
  c.data.data_dir = data_dir
  for k, v in data_overrides.items():
    c.data[k] = v
  c.train.batch_size = batch
  c.train.eval_batch_size = eval_batch
  return c


def test_idx_roundtrip(tmp_path):
  a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  for name in ('a.gz', 'a'):
    fake_data.write_idx(str(tmp_path / name), a)
    np.testing.assert_array_equal(fashion_mnist.read_idx(str(tmp_path / name)),
                                  a)
    assert fashion_mnist.read_idx_shape(str(tmp_path / name)) == (2, 3, 4)


def test_info_and_train_batch(idx_dir):
  c = make_config(idx_dir)
  data.validate_data_config(c.data)
  info = data.dataset_info(c.data)
  assert (info.num_classes, info.num_train, info.num_eval) == (10, N_TRAIN,
                                                               N_TEST)
  assert info.image_shape == (28, 28, 1)
  it = data.train_iterator(c, layout='pmap', process_index=0, process_count=1,
                           local_device_count=4)
  b = next(it)
  assert b['images'].shape == (4, 8, 28, 28, 1)
  assert b['images'].dtype == np.float32
  assert b['labels'].shape == (4, 8, 10) and b['labels'].dtype == np.float32
  np.testing.assert_array_equal(b['labels'].sum(-1), 1.0)  # one-hot
  lo = (0 - info.mean[0]) / info.std[0]
  hi = (255 - info.mean[0]) / info.std[0]
  assert b['images'].min() >= lo - 1e-5 and b['images'].max() <= hi + 1e-5
  assert it.steps_per_epoch == N_TRAIN // 32


def test_train_epoch_is_a_permutation_without_augmentation(idx_dir):
  # With no crop/flip, pixels identify the example: one epoch visits
  # distinct examples and labels match the stored ones.
  c = make_config(idx_dir, train_crop='none', random_flip=False)
  images, labels = fashion_mnist.load_split(idx_dir, 'train')
  info = data.dataset_info(c.data)
  it = data.train_iterator(c, layout='host', process_index=0, process_count=1,
                           local_device_count=1)
  index = {images[i].tobytes(): i for i in range(N_TRAIN)}
  seen = []
  for _ in range(it.steps_per_epoch):
    b = next(it)
    raw = np.round(b['images'] * info.std[0] + info.mean[0]).astype(np.uint8)
    idx = np.array([index[r.tobytes()] for r in raw])   # KeyError: not exact
    np.testing.assert_array_equal(b['labels'].argmax(-1), labels[idx])
    seen.extend(idx.tolist())
  assert len(set(seen)) == len(seen) == it.steps_per_epoch * 32


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize('overrides', [
    {},  # fast batched path (pad-crop + flip)
    dict(train_crop='inception', image_size=24, randaugment_layers=2,
         randaugment_magnitude=9, mixup_alpha=0.2, cutmix=True),  # per-example
])
def test_determinism_and_resumption(idx_dir, overrides):
  c = make_config(idx_dir, **overrides)
  kw = dict(layout='pmap', process_index=0, process_count=1,
            local_device_count=2)
  ref = _take(data.train_iterator(c, **kw), 12)   # crosses an epoch (9/epoch)
  # start_step=0 checks "same seed, same batches"; 3 and 10 resume inside
  # epochs 0 and 1 (the augmented path is slower: only the cross-epoch one).
  for k in ((0, 3, 10) if not overrides else (10,)):
    resumed = _take(data.train_iterator(c, start_step=k, **kw), 12 - k)
    for a, b in zip(ref[k:], resumed):
      np.testing.assert_array_equal(a['images'], b['images'])
      np.testing.assert_array_equal(a['labels'], b['labels'])
  c2 = make_config(idx_dir, **overrides)
  c2.seed = 1
  other = next(data.train_iterator(c2, **kw))
  assert not np.array_equal(other['images'], ref[0]['images'])
  # consecutive epochs see different orders
  assert not np.array_equal(ref[0]['labels'], ref[9]['labels'])


def test_hosts_train_disjoint(idx_dir):
  c = make_config(idx_dir, train_crop='none', random_flip=False, batch=40)
  images, _ = fashion_mnist.load_split(idx_dir, 'train')
  index = {images[i].tobytes(): i for i in range(N_TRAIN)}
  info = data.dataset_info(c.data)
  per_host = []
  for p in range(2):
    it = data.train_iterator(c, layout='host', process_index=p,
                             process_count=2, local_device_count=2)
    ids = set()
    for _ in range(it.steps_per_epoch):
      b = next(it)
      assert b['images'].shape == (20, 28, 28, 1)
      raw = np.round(b['images'] * info.std[0] + info.mean[0]).astype(
          np.uint8)
      ids |= {index[r.tobytes()] for r in raw}
    per_host.append(ids)
  assert not per_host[0] & per_host[1]
  assert all(i < N_TRAIN // 2 for i in per_host[0])


@pytest.mark.parametrize('process_count', [1, 3])
def test_eval_covers_split_once_with_mask(idx_dir, process_count):
  c = make_config(idx_dir, eval_batch=6 * process_count)
  _, labels = fashion_mnist.load_split(idx_dir, 'test')
  images, _ = fashion_mnist.load_split(idx_dir, 'test')
  info = data.dataset_info(c.data)
  got_labels, got_first_px, counts = [], [], []
  for p in range(process_count):
    it = data.eval_iterator(c, layout='pmap', process_index=p,
                            process_count=process_count, local_device_count=2)
    n = 0
    for b in it:
      n += 1
      assert b['images'].shape == (2, 3, 28, 28, 1)
      assert b['labels'].dtype == np.int32 and b['mask'].dtype == np.float32
      m = b['mask'].reshape(-1) > 0
      got_labels.extend(b['labels'].reshape(-1)[m].tolist())
      px = b['images'].reshape(6, -1)[m] * info.std[0] + info.mean[0]
      got_first_px.extend(np.round(px[:, :50]).astype(np.int64).tolist())
      assert np.all(b['images'].reshape(6, -1)[~m] == 0)
    counts.append(n)
  assert len(set(counts)) == 1          # every host the same batch count
  assert len(got_labels) == N_TEST      # each example exactly once
  np.testing.assert_array_equal(
      sorted(map(tuple, got_first_px)),
      sorted(map(tuple, images.reshape(N_TEST, -1)[:, :50].astype(np.int64))))
  np.testing.assert_array_equal(sorted(got_labels), sorted(labels.tolist()))


def test_grayscale_to_rgb_and_resize(idx_dir):
  c = make_config(idx_dir, grayscale_to_rgb=True, image_size=32,
                  eval_image_size=32)
  info = data.dataset_info(c.data)
  assert info.image_shape == (32, 32, 3) and len(info.mean) == 3
  b = next(data.train_iterator(c, layout='host', process_index=0,
                               process_count=1, local_device_count=1))
  assert b['images'].shape == (32, 32, 32, 3)
  np.testing.assert_array_equal(b['images'][..., 0], b['images'][..., 2])
  e = next(data.eval_iterator(c, layout='host', process_index=0,
                              process_count=1, local_device_count=1))
  assert e['images'].shape == (16, 32, 32, 3)


def test_batch_not_divisible_errors(idx_dir):
  c = make_config(idx_dir, batch=30)
  with pytest.raises(ValueError, match=r'config\.train\.batch_size=30'):
    data.train_iterator(c, process_index=0, process_count=1,
                        local_device_count=4)
  c = make_config(idx_dir, eval_batch=10)
  with pytest.raises(ValueError, match=r'config\.train\.eval_batch_size=10'):
    data.eval_iterator(c, process_index=0, process_count=2,
                       local_device_count=4)


def test_validation_errors(idx_dir, tmp_path):
  c = make_config(str(tmp_path / 'nowhere'))
  with pytest.raises(ValueError, match=r'config\.data\.data_dir.*missing'):
    data.validate_data_config(c.data)
  c = make_config(idx_dir, train_crop='random')
  with pytest.raises(ValueError, match=r"config\.data\.train_crop='random'"):
    data.validate_data_config(c.data)
  c = make_config(idx_dir, randaugment_layers=-1)
  with pytest.raises(ValueError, match=r'config\.data\.randaugment_layers'):
    data.validate_data_config(c.data)
  c = make_config(idx_dir, eval_split='holdout')
  with pytest.raises(ValueError, match=r'config\.data\.eval_split'):
    data.validate_data_config(c.data)


def test_labels_out_of_range(tmp_path):
  for split, n in (('train', 20), ('test', 10)):
    img_stem, lbl_stem = fashion_mnist.FILES[split]
    fake_data.write_idx(str(tmp_path / img_stem),
                            np.zeros((n, 28, 28), np.uint8))
    fake_data.write_idx(str(tmp_path / lbl_stem),
                            np.full((n,), 12, np.uint8))
  c = make_config(str(tmp_path), batch=4)
  with pytest.raises(ValueError, match='out of range'):
    next(data.train_iterator(c, process_index=0, process_count=1,
                             local_device_count=1))


@pytest.mark.skipif(not os.path.exists(
    os.path.join(REAL_DIR, 'train-labels-idx1-ubyte.gz')),
                    reason='Debian dataset-fashion-mnist not installed')
def test_real_fashion_mnist_sizes():
  c = make_config(None)
  data.validate_data_config(c.data)
  info = data.dataset_info(c.data)
  assert (info.num_train, info.num_eval, info.num_classes) == (60000, 10000,
                                                               10)
  images, labels = fashion_mnist.load_split(REAL_DIR, 'train')
  assert images.shape == (60000, 28, 28, 1) and labels.shape == (60000,)
  np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)
  # the stored mean/std are the data's (to the 2 decimals written down)
  assert abs(images.mean() - info.mean[0]) < 0.01
  assert abs(images.std() - info.std[0]) < 0.01
