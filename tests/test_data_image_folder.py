"""The image-folder source (train/<class>/*.JPEG, val/<class>/*.JPEG): right
labels, exact resumption, undecodable files counted, and one clear error
naming the path for every broken tree."""
import os

import numpy as np
import pytest
import tensorflow as tf

from nfnet_jax import config as config_lib
from nfnet_jax import data
from nfnet_jax.data import datasets
from nfnet_jax.data import image_folder

# Class folder name -> the one bright channel of its images; sorted names
# give the labels (ant 0, bee 1, cow 2).
CLASSES = {'bee': 1, 'ant': 0, 'cow': 2}
PER_CLASS = 6
VAL_PER_CLASS = 2


def _jpeg(channel, h, w, seed):
  rng = np.random.default_rng(seed)
  img = rng.integers(0, 40, size=(h, w, 3)).astype(np.uint8)
  img[..., channel] = 200 + rng.integers(0, 40, size=(h, w)).astype(np.uint8)
  return tf.io.encode_jpeg(img, quality=90).numpy()


def _write_tree(root, val=True):
  i = 0
  for split, n in (('train', PER_CLASS), ('val', VAL_PER_CLASS)):
    if split == 'val' and not val:
      continue
    for cls, ch in CLASSES.items():
      d = root / split / cls
      d.mkdir(parents=True)
      for k in range(n):
        i += 1
        ext = '.JPEG' if k % 2 == 0 else '.jpg'
        (d / f'{cls}_{k}{ext}').write_bytes(_jpeg(ch, 40 + 4 * k, 56 - 2 * k, i))
      (d / 'README.txt').write_text('not an image: ignored')
  return root


@pytest.fixture()
def tree(tmp_path):
  image_folder.list_split.cache_clear()
  return _write_tree(tmp_path / 'imgs')


def _config(root, **data_fields):
  c = config_lib.base_config()
  c.seed = 3
  c.data.name = 'image_folder'
  c.data.data_dir = None if root is None else str(root)
  c.data.image_size = 24
  c.data.eval_image_size = 24
  c.data.eval_crop_padding = 4
  c.data.randaugment_layers = 0
  c.data.mixup_alpha = 0.0
  c.data.cutmix = False
  c.data.random_flip = True
  c.train.batch_size = 6
  c.train.eval_batch_size = 4
  for k, v in data_fields.items():
    c.data[k] = v
  return c


def _topo():
  return dict(layout='host', process_index=0, process_count=1, local_device_count=1)


def _bright_channel(images):
  mean = np.asarray(datasets.IMAGENET_MEAN)
  std = np.asarray(datasets.IMAGENET_STD)
  pixels = images * std + mean
  return pixels.mean(axis=(1, 2)).argmax(-1)


def test_info_and_labels_of_train_and_eval(tree):
  cfg = _config(tree)
  data.validate_data_config(cfg.data)
  info = data.dataset_info(cfg.data)
  assert (info.num_classes, info.num_train, info.num_eval) == (3, 18, 6)
  assert info.image_shape == (24, 24, 3)
  seen = []
  with data.train_iterator(cfg, **_topo()) as it:
    assert it.steps_per_epoch == 3
    for _ in range(3):     # one epoch: every file once
      b = next(it)
      assert b['images'].shape == (6, 24, 24, 3)
      labels = b['labels'].argmax(-1)
      np.testing.assert_array_equal(labels, _bright_channel(b['images']))
      np.testing.assert_allclose(b['labels'].sum(-1), 1.0)
      seen += list(labels)
  assert np.bincount(seen, minlength=3).tolist() == [PER_CLASS] * 3
  ev = list(data.eval_iterator(cfg, **_topo()))
  assert len(ev) == 2                                   # 6 images, batch 4
  mask = np.concatenate([b['mask'] for b in ev])
  assert mask.tolist() == [1.0] * 6 + [0.0] * 2
  labels = np.concatenate([b['labels'] for b in ev])[:6]
  images = np.concatenate([b['images'] for b in ev])[:6]
  assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
  np.testing.assert_array_equal(labels, _bright_channel(images))


def test_resumed_iterator_continues_exactly(tree):
  # Random crops, flips and MixUp/CutMix: a resumed stream must match the
  # uninterrupted one batch for batch, across an epoch boundary (3 steps).
  cfg = _config(tree, mixup_alpha=0.2, cutmix=True)
  with data.train_iterator(cfg, **_topo()) as it:
    full = [next(it) for _ in range(5)]
  with data.train_iterator(cfg, start_step=2, **_topo()) as it:
    resumed = [next(it) for _ in range(3)]
  for a, b in zip(full[2:], resumed):
    np.testing.assert_array_equal(a['images'], b['images'])
    np.testing.assert_array_equal(a['labels'], b['labels'])
  # The second epoch is a new order of the same images. Without augmentation
  # each image has one fingerprint (its mean), so the order is visible.
  plain = _config(tree, random_flip=False, train_crop='none')
  with data.train_iterator(plain, **_topo()) as it:
    prints = [b['images'].mean(axis=(1, 2, 3)) for b in (next(it) for _ in range(6))]
  first, second = np.concatenate(prints[:3]), np.concatenate(prints[3:])
  assert len(first) == 18 and len(np.unique(first)) == 18
  np.testing.assert_array_equal(np.sort(first), np.sort(second))
  assert not np.array_equal(first, second)


def test_hosts_take_disjoint_shares_with_every_class(tree):
  cfg = _config(tree)
  cfg.train.batch_size = 4
  src = datasets.get_source(cfg.data)
  from nfnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  shares = [pipeline._folder_host_share(src, 'train', 3, p, 2)  # pylint: disable=protected-access
            for p in range(2)]
  a, b = (set(s[0].tolist()) for s in shares)
  assert not a & b and len(a | b) == 18
  for paths, labels, _ in shares:
    assert len(set(labels.tolist())) == 3


def test_undecodable_file_is_skipped_and_counted(tree):
  (tree / 'val' / 'ant' / 'broken.JPEG').write_bytes(b'not a jpeg at all')
  image_folder.list_split.cache_clear()
  cfg = _config(tree)
  it = data.eval_iterator(cfg, **_topo())
  batches = list(it)
  assert sum(float(b['mask'].sum()) for b in batches) == 6
  assert it.decode_errors == 1


def _error(cfg):
  image_folder.list_split.cache_clear()
  with pytest.raises(ValueError) as e:
    data.validate_data_config(cfg.data)
  msg = str(e.value)
  assert '\n' not in msg
  return msg


def test_missing_and_empty_folders_name_the_path(tmp_path):
  assert 'config.data.data_dir is not set' in _error(_config(None))
  missing = tmp_path / 'nope'
  assert f'{missing} does not exist' in _error(_config(missing))
  empty = tmp_path / 'empty'
  empty.mkdir()
  msg = _error(_config(empty))
  assert f'{empty}/train: missing' in msg and 'train/<class>/*.JPEG' in msg
  (empty / 'train').mkdir()
  assert f'{empty}/train: no class folders' in _error(_config(empty))


def test_class_folder_without_images_names_it(tree):
  (tree / 'train' / 'dog').mkdir()
  (tree / 'train' / 'dog' / 'notes.txt').write_text('x')
  msg = _error(_config(tree))
  assert f'{tree}/train/dog: class folder holds no images' in msg


def test_val_class_unknown_to_train_names_it(tree):
  (tree / 'val' / 'yak').mkdir()
  (tree / 'val' / 'yak' / 'y.JPEG').write_bytes(_jpeg(0, 20, 20, 0))
  msg = _error(_config(tree))
  assert f'{tree}/val/yak' in msg and "class 'yak' is not a class of the train split" in msg


def test_missing_val_split_names_it(tmp_path):
  root = _write_tree(tmp_path / 'noval', val=False)
  msg = _error(_config(root))
  assert f'{root}/val: missing' in msg


def test_unreadable_folder_names_it(tree, monkeypatch):
  # Running as root ignores file modes, so the refusal is simulated.
  bad = str(tree / 'train' / 'bee')
  real = os.listdir

  def listdir(path):
    if str(path) == bad:
      raise PermissionError(13, 'Permission denied', path)
    return real(path)
  monkeypatch.setattr(image_folder.os, 'listdir', listdir)
  msg = _error(_config(tree))
  assert f'image folder {bad}: cannot be read (Permission denied)' in msg


def test_command_line_class_folder_without_images_exits_2(tree, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  (tree / 'train' / 'dog').mkdir()
  workdir = tmp_path / 'work'
  cmd = [sys.executable, os.path.join(root, 'scripts', 'train.py'),
         '--config', os.path.join(root, 'configs', 'fashion_mnist.py:local'),
         '--workdir', str(workdir), '--config.data.name=image_folder',
         f'--config.data.data_dir={tree}']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=root)
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                        cwd=root)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert f'{tree}/train/dog: class folder holds no images' in proc.stderr
  assert 'Traceback' not in proc.stderr
