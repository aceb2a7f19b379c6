"""Training subsets, tfds style: ``data.train_split='train[:10%]'`` and friends.

The spec grammar and its one-line errors; the sizes the Fashion-MNIST, image
folder and tfds sources select (tfds's own slicing arithmetic as the
reference); the subset's exact examples, determinism and resumption through
the train iterator; and the train-split eval (``data.train_eval_split``).
"""
import types

import numpy as np
import pytest
import tensorflow as tf

from nfnet_jax import config as config_lib
from nfnet_jax import data
from nfnet_jax.data import datasets
from nfnet_jax.data import fashion_mnist
from nfnet_jax.testing import fake_data
from nfnet_jax.data import image_folder

N_TRAIN, N_TEST = 200, 40


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('fmnist_subsets')
  rng = np.random.default_rng(1)
  for split, n in (('train', N_TRAIN), ('test', N_TEST)):
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) * 7 % 10).astype(np.uint8)
    img_stem, lbl_stem = fashion_mnist.FILES[split]
    fake_data.write_idx(str(d / (img_stem + '.gz')), images)
    fake_data.write_idx(str(d / (lbl_stem + '.gz')), labels)
  return str(d)


def _fashion(idx_dir, batch=20, **data_fields):
  c = config_lib.base_config()
  c.data.name = 'fashion_mnist'
  data.apply_dataset_defaults(c.data)
  c.data.data_dir = idx_dir
  c.data.train_crop = 'none'
  c.data.random_flip = False
  for k, v in data_fields.items():
    c.data[k] = v
  c.train.batch_size = batch
  c.train.eval_batch_size = 16
  return c


def _topo():
  return dict(layout='host', process_index=0, process_count=1, local_device_count=1)


@pytest.mark.parametrize('spec,n,want', [
    ('train', 200, (0, 200)),
    ('train[:10%]', 200, (0, 20)),
    ('train[:5000]', 60000, (0, 5000)),
    ('train[1000:2000]', 60000, (1000, 2000)),
    ('train[-10%:]', 200, (180, 200)),
    ('train[25%:-25%]', 200, (50, 150)),
    ('train[:33%]', 10, (0, 3)),
    ('train[ 5 : ]', 10, (5, 10)),
    ('train[:2.5%]', 1000, (0, 25)),
    ('train[:25%]', 10, (0, 2)),          # 2.5 rounds half to even, as tfds
])
def test_split_range(spec, n, want):
  assert datasets.split_range(spec, n) == want


@pytest.mark.parametrize('spec,n', [
    ('train[:10%]', 1281), ('train[:3%]', 50), ('train[5%:15%]', 1999), ('train[-3%:]', 333),
    ('train[:5000]', 60000), ('train[1000:2000]', 60000), ('train[-100:]', 1000),
    ('train[:50%]', 7), ('train[:33%]', 10),
])
def test_canonical_spec_matches_tfds_slicing(spec, n):
  """Our resolution of percentages and negatives equals tfds's own arithmetic."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  ri = tfds.core.ReadInstruction.from_spec(spec)
  (abs_ri,) = ri.to_absolute({'train': types.SimpleNamespace(num_examples=n)})
  lo = 0 if abs_ri.from_ is None else abs_ri.from_
  hi = n if abs_ri.to is None else abs_ri.to
  assert datasets.split_range(spec, n) == (lo, hi)
  src = datasets.Source(kind='tfds', name='x', num_classes=2, channels=3, mean=(0.,) * 3,
                        std=(1.,) * 3, split_sizes={'train': n})
  assert src.split_name(spec) == f'train[{lo}:{hi}]'
  assert src.num_examples(src.split_name(spec)) == hi - lo


@pytest.mark.parametrize('spec,match', [
    ('train[:abc]', "bound 'abc' is not an integer or a percentage"),
    ('train[:10', 'is not a split spec'),
    ('train[1:2:3]', 'is not a split spec'),
    ('train[:1.5]', "bound '1.5' is not an integer"),
    ('train[:70000]', 'index 70000 is out of range for a split of 200'),
    ('train[-201:]', 'index -201 is out of range'),
    ('train[:200.5%]', 'out of range'),
    ('train[5:5]', 'selects no examples'),
    ('train[60%:40%]', 'selects no examples'),
    (17, 'is not a split spec'),
])
def test_bad_specs_are_one_line_errors(spec, match):
  with pytest.raises(ValueError, match=match) as e:
    datasets.split_range(spec, 200, 'data.train_split')
  msg = str(e.value)
  assert msg.startswith('config.data.train_split=') and '\n' not in msg


def test_validate_names_the_field(idx_dir):
  for field in ('train_split', 'eval_split', 'train_eval_split'):
    c = _fashion(idx_dir, **{field: 'train[:999]' if field != 'eval_split' else 'test[:999]'})
    with pytest.raises(ValueError, match=rf'config.data.{field}=.*out of range'):
      data.validate_data_config(c.data)
  c = _fashion(idx_dir, train_split='valid[:10%]')
  with pytest.raises(ValueError, match=r"config.data.train_split.*'train' and 'test'"):
    data.validate_data_config(c.data)
  data.validate_data_config(_fashion(idx_dir, train_split='train[:10%]',
                                     train_eval_split='train[:10%]').data)


def test_fashion_subset_size_examples_determinism_and_resume(idx_dir):
  c = _fashion(idx_dir, train_split='train[50:150]')
  info = data.dataset_info(c.data)
  assert info.num_train == 100
  images, labels = fashion_mnist.load_split(idx_dir, 'train')
  index = {images[i].tobytes(): i for i in range(N_TRAIN)}
  it = data.train_iterator(c, **_topo())
  assert it.steps_per_epoch == 5
  ref = [next(it) for _ in range(12)]        # 2.4 epochs
  seen = []
  for b in ref[:5]:
    raw = np.round(b['images'] * info.std[0] + info.mean[0]).astype(np.uint8)
    idx = np.array([index[r.tobytes()] for r in raw])
    np.testing.assert_array_equal(b['labels'].argmax(-1), labels[idx])
    seen += idx.tolist()
  # One epoch visits exactly the subset's 100 examples.
  assert sorted(seen) == list(range(50, 150))
  # Same seed, same stream; resumed at step 7 (inside epoch 1), the same batches.
  again = [next(data.train_iterator(c, **_topo())) for _ in range(1)]
  np.testing.assert_array_equal(again[0]['images'], ref[0]['images'])
  resumed = data.train_iterator(c, start_step=7, **_topo())
  for k in range(7, 12):
    b = next(resumed)
    np.testing.assert_array_equal(b['images'], ref[k]['images'])
    np.testing.assert_array_equal(b['labels'], ref[k]['labels'])


def test_percent_subset_and_eval_of_the_train_subset(idx_dir):
  c = _fashion(idx_dir, train_split='train[:10%]', eval_split='test[-50%:]',
               train_eval_split='train[:10%]')
  info = data.dataset_info(c.data)
  assert (info.num_train, info.num_eval) == (20, 20)
  images, labels = fashion_mnist.load_split(idx_dir, 'train')
  ev = list(data.eval_iterator(c, split=c.data.train_eval_split, **_topo()))
  got = np.concatenate([b['labels'] for b in ev])[np.concatenate([b['mask'] for b in ev]) == 1]
  np.testing.assert_array_equal(got, labels[:20])
  test_ev = list(data.eval_iterator(c, **_topo()))
  assert sum(b['mask'].sum() for b in test_ev) == 20


def _jpeg(channel, seed):
  rng = np.random.default_rng(seed)
  img = rng.integers(0, 40, size=(12, 12, 3)).astype(np.uint8)
  img[..., channel] = 220
  return tf.io.encode_jpeg(img).numpy()


@pytest.fixture()
def tree(tmp_path):
  image_folder.list_split.cache_clear()
  root = tmp_path / 'imgs'
  for ch, cls in enumerate(('ant', 'bee', 'cow')):
    d = root / 'train' / cls
    d.mkdir(parents=True)
    for k in range(10):
      (d / f'{cls}_{k}.jpg').write_bytes(_jpeg(ch, 10 * ch + k))
  return root


def _folder(root, **fields):
  c = config_lib.base_config()
  c.data.name = 'image_folder'
  c.data.data_dir = str(root)
  c.data.image_size = c.data.eval_image_size = 12
  c.data.eval_crop_padding = 0
  c.data.randaugment_layers = 0
  c.data.mixup_alpha = 0.0
  c.data.cutmix = False
  c.data.eval_split = 'train[:6]'
  for k, v in fields.items():
    c.data[k] = v
  c.train.batch_size = 3
  c.train.eval_batch_size = 4
  return c


def test_image_folder_subset_is_fixed_and_mixes_classes(tree):
  c = _folder(tree, train_split='train[:40%]')
  data.validate_data_config(c.data)
  info = data.dataset_info(c.data)
  assert (info.num_train, info.num_eval) == (12, 6)
  src = datasets.get_source(c.data)
  paths, labels = src.load_paths('train[:40%]')
  assert len(paths) == 12 and len(set(labels.tolist())) == 3    # not one class's files
  # The same files for every seed (a study's subset), disjoint from the rest.
  rest, _ = src.load_paths('train[40%:]')
  assert not set(paths.tolist()) & set(rest.tolist()) and len(rest) == 18
  c.seed = 5
  again, _ = datasets.get_source(c.data).load_paths('train[:40%]')
  assert again.tolist() == paths.tolist()
  # The train iterator's epoch is exactly those 12 files (4 batches of 3) ...
  it = data.train_iterator(c, **_topo())
  assert it.steps_per_epoch == 4
  first = [next(it) for _ in range(6)]
  # ... and resumes exactly.
  resumed = data.train_iterator(c, start_step=4, **_topo())
  for k in (4, 5):
    np.testing.assert_array_equal(next(resumed)['images'], first[k]['images'])
  with pytest.raises(ValueError, match=r'config.data.train_split=.*index 31 is out of range'):
    data.validate_data_config(_folder(tree, train_split='train[:31]').data)
