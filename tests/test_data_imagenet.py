"""imagenet2012 end to end: preparation from tiny fake tars (a few classes,
a partial validation tar), then the train/eval pipeline on the prepared
files and under tfds.testing.mock_data."""
import io
import os
import tarfile

import fcntl

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from nfnet_jax import config as config_lib
from nfnet_jax import data
from nfnet_jax.data import imagenet

from conftest import load_repo_module
SYNSETS = [l.strip() for l in open(os.fspath(tfds.core.tfds_path(
    'datasets/imagenet2012/labels.txt')))]
VAL_LABELS = imagenet._val_label_list()
TRAIN_CLASSES = (0, 7, 999)
PER_CLASS = 8
VAL_NUMBERS = (2, 3, 11, 100, 2500, 7777, 10000, 20001, 30002, 40003, 45000,
               49999, 50000)   # 13: a partial, non-contiguous val tar


def _jpeg(h, w, seed):
  rng = np.random.default_rng(seed)
  img = np.zeros((h, w, 3), np.uint8)
  img[...] = rng.integers(0, 256, size=3, dtype=np.uint8)  # flat colour
  img[h // 4: h // 2, w // 4: w // 2] = 255 - img[0, 0]
  return tf.io.encode_jpeg(img, quality=95).numpy()


def _add(tar, name, payload):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def _run_prepare(argv):
  """Runs scripts/prepare_data.py's main in this process (no TF re-import)."""
  mod = load_repo_module('prepare_data', 'scripts', 'prepare_data.py')
  return mod.main(argv)


def _build(root):
  manual = root / 'manual'
  manual.mkdir(parents=True, exist_ok=True)
  with tarfile.open(manual / imagenet.TRAIN_TAR, 'w') as outer:
    for c in TRAIN_CLASSES:
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode='w') as inner:
        for i in range(PER_CLASS):
          _add(inner, f'{SYNSETS[c]}_{i}.JPEG',
               _jpeg(40 + 3 * i, 64 - 2 * i, c * 100 + i))
      _add(outer, f'{SYNSETS[c]}.tar', buf.getvalue())
  with tarfile.open(manual / imagenet.VAL_TAR, 'w') as val:
    for n in VAL_NUMBERS:
      _add(val, f'ILSVRC2012_val_{n:08d}.JPEG', _jpeg(50, 70, n))
  data_dir = str(root / 'tfds')
  assert _run_prepare(['--dataset', 'imagenet2012', '--data_dir', data_dir,
                       '--manual_dir', str(manual), '--no_progress']) == 0
  (root / 'done').write_text('ok')
  return data_dir


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  # Prepared once per test session, shared by pytest-xdist workers.
  root = tmp_path_factory.getbasetemp().parent / 'nfnet_fake_imagenet'
  root.mkdir(exist_ok=True)
  with open(str(root) + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if (root / 'done').exists():
        return str(root / 'tfds')
      return _build(root)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def make_config(data_dir, batch=8, eval_batch=8, **overrides):
  c = config_lib.base_config()
  c.data.data_dir = data_dir
  c.data.image_size = 32
  c.data.eval_image_size = 40
  c.data.eval_crop_padding = 8
  c.data.randaugment_layers = 2
  c.data.randaugment_magnitude = 10
  c.data.shuffle_buffer = 16
  for k, v in overrides.items():
    c.data[k] = v
  c.train.batch_size = batch
  c.train.eval_batch_size = eval_batch
  return c


def test_missing_tars_message(tmp_path, capsys):
  assert _run_prepare(['--dataset', 'imagenet2012', '--data_dir',
                       str(tmp_path)]) == 1
  err = capsys.readouterr().err
  manual = os.path.join(str(tmp_path), 'downloads', 'manual')
  for name in (imagenet.TRAIN_TAR, imagenet.VAL_TAR):
    assert f'missing {name}: expected at {os.path.join(manual, name)}' in err
  with pytest.raises(FileNotFoundError, match=imagenet.TRAIN_TAR):
    imagenet.prepare_imagenet2012(str(tmp_path))
  c = make_config(str(tmp_path))
  with pytest.raises(ValueError, match='not prepared.*prepare_data.py'):
    data.validate_data_config(c.data)


def test_prepared_partial_tars_have_correct_labels(prepared):
  builder = tfds.builder('imagenet2012', data_dir=prepared)
  assert builder.info.splits['train'].num_examples == 3 * PER_CLASS
  assert builder.info.splits['validation'].num_examples == len(VAL_NUMBERS)
  val = builder.as_dataset(split='validation')
  got = {ex['file_name'].decode(): int(ex['label'])
         for ex in tfds.as_numpy(val)}
  want = {f'ILSVRC2012_val_{n:08d}.JPEG': SYNSETS.index(VAL_LABELS[n - 1])
          for n in VAL_NUMBERS}
  assert got == want
  train = tfds.as_numpy(builder.as_dataset(split='train'))
  labels = sorted(int(ex['label']) for ex in train)
  assert labels == sorted(list(TRAIN_CLASSES) * PER_CLASS)


def test_train_pipeline(prepared):
  c = make_config(prepared)
  data.validate_data_config(c.data)
  info = data.dataset_info(c.data)
  assert (info.num_classes, info.num_train, info.num_eval) == (1000, 24, 13)
  assert info.image_shape == (32, 32, 3)
  it = data.train_iterator(c, layout='pmap', process_index=0, process_count=1,
                           local_device_count=2)
  batches = [next(it) for _ in range(4)]   # 3 per epoch: crosses an epoch
  mean = np.array(info.mean)
  std = np.array(info.std)
  for b in batches:
    assert b['images'].shape == (2, 4, 32, 32, 3)
    assert b['images'].dtype == np.float32 and b['labels'].dtype == np.float32
    assert b['labels'].shape == (2, 4, 1000)
    np.testing.assert_allclose(b['labels'].sum(-1), 1.0, rtol=1e-5)
    assert set(np.nonzero(b['labels'].reshape(-1, 1000).sum(0))[0]) <= set(
        TRAIN_CLASSES)
    lo, hi = (0 - mean) / std, (255 - mean) / std
    assert (b['images'] >= lo - 1e-4).all() and (b['images'] <= hi + 1e-4).all()
  assert it.decode_errors == 0
  # resumption: step 2 and 4 from fresh iterators equal the original
  for k in (2,):
    again = data.train_iterator(c, start_step=k, layout='pmap',
                                process_index=0, process_count=1,
                                local_device_count=2)
    for ref in batches[k:]:
      b = next(again)
      np.testing.assert_array_equal(b['images'], ref['images'])
      np.testing.assert_array_equal(b['labels'], ref['labels'])


def test_train_one_hot_covers_host_split(prepared):
  c = make_config(prepared, randaugment_layers=0, mixup_alpha=0.0,
                  cutmix=False, batch=4)
  seen = [[], []]
  for p in range(2):
    it = data.train_iterator(c, layout='host', process_index=p,
                             process_count=2, local_device_count=1)
    for _ in range(it.steps_per_epoch):
      seen[p].extend(next(it)['labels'].argmax(-1).tolist())
  # host 0 holds the first 12 train records, host 1 the rest
  builder = tfds.builder('imagenet2012', data_dir=prepared)
  for p, sub in enumerate(tfds.even_splits('train', 2)):
    want = sorted(int(ex['label']) for ex in tfds.as_numpy(
        builder.as_dataset(split=sub, decoders={
            'image': tfds.decode.SkipDecoding()})))
    assert sorted(seen[p]) == want


@pytest.mark.parametrize('mode', ['squash', 'aspect'])
def test_eval_padding_mask_every_example_once(prepared, mode):
  # 13 examples, 2 hosts x 2 devices x 2: never divides evenly
  c = make_config(prepared, eval_batch=8, eval_resize=mode)
  builder = tfds.builder('imagenet2012', data_dir=prepared)
  want = sorted(int(ex['label']) for ex in tfds.as_numpy(builder.as_dataset(
      split='validation', decoders={'image': tfds.decode.SkipDecoding()})))
  got, nb = [], []
  for p in range(2):
    it = data.eval_iterator(c, layout='pmap', process_index=p,
                            process_count=2, local_device_count=2,
                            image_size=24)
    n = 0
    for b in it:
      n += 1
      assert b['images'].shape == (2, 2, 24, 24, 3)
      assert b['labels'].dtype == np.int32 and b['mask'].dtype == np.float32
      m = b['mask'].reshape(-1) == 1
      assert ((b['labels'] >= 0) & (b['labels'] < 1000)).all()
      got.extend(b['labels'].reshape(-1)[m].tolist())
      assert (b['images'].reshape(4, -1)[~m] == 0).all()
    nb.append(n)
    assert it.decode_errors == 0
  assert nb == [2, 2]    # 7 and 6 examples per host, 4 per host batch
  assert sorted(got) == want


def test_mock_data_pipeline(prepared):
  # tfds.testing.mock_data with the prepared metadata: random JPEGs of
  # random sizes through the full train (RandAugment, MixUp+CutMix) and eval
  # preprocessing.
  c = make_config(prepared, batch=8, eval_batch=4)
  with tfds.testing.mock_data(num_examples=24, data_dir=prepared,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    it = data.train_iterator(c, layout='host', process_index=0,
                             process_count=1, local_device_count=2)
    b = next(it)
    assert b['images'].shape == (8, 32, 32, 3)
    assert np.isfinite(b['images']).all()
    np.testing.assert_allclose(b['labels'].sum(-1), 1.0, rtol=1e-5)
    assert (b['labels'] >= 0).all()
    it.close()   # stop the next-epoch start-up thread inside the mock
  # the mock yields num_examples for any split: match the metadata's 13
  with tfds.testing.mock_data(num_examples=13, data_dir=prepared,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    ev = list(data.eval_iterator(c, layout='host', process_index=0,
                                 process_count=1, local_device_count=2))
    assert all(e['images'].shape == (4, 40, 40, 3) for e in ev)
    assert sum(e['mask'].sum() for e in ev) == 13


def test_decode_errors_are_skipped_and_counted(prepared):
  good = _jpeg(30, 30, 1)

  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    images = [good, b'not a jpeg', good, good, b'\xff\xd8broken', good]
    return tf.data.Dataset.from_tensor_slices({
        'image': images, 'label': np.arange(6, dtype=np.int64),
        'file_name': [str(i) for i in range(6)]})

  c = make_config(prepared, eval_batch=4)
  c.data.eval_split = 'validation[:6]'
  with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=prepared,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    it = data.eval_iterator(c, layout='host', process_index=0,
                            process_count=1, local_device_count=2)
    batches = list(it)
  labels = np.concatenate([b['labels'][b['mask'] == 1] for b in batches])
  assert sorted(labels.tolist()) == [0, 2, 3, 5]
  assert it.decode_errors == 2


def test_label_out_of_range_is_a_clear_error(prepared):
  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_tensor_slices({
        'image': [_jpeg(30, 30, i) for i in range(24)],
        'label': np.full(24, 1500, np.int64),
        'file_name': ['x'] * 24})

  c = make_config(prepared, randaugment_layers=0)
  with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=prepared,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    it = data.train_iterator(c, layout='host', process_index=0,
                             process_count=1, local_device_count=1)
    with pytest.raises(ValueError, match=r'label out of range.*\[0, 1000\)'):
      next(it)
    it.close()


def test_unknown_dataset_and_split(prepared):
  c = make_config(prepared)
  c.data.name = 'no_such_dataset_xyz'
  with pytest.raises(ValueError, match=r"config\.data\.name='no_such"):
    data.validate_data_config(c.data)
  c = make_config(prepared, eval_split='test')
  with pytest.raises(ValueError, match=r"config\.data\.eval_split='test'"):
    data.validate_data_config(c.data)
