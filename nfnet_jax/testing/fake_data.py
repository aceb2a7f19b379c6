"""Fake data sets on disk, for the tests and the input-pipeline benchmark.

* :func:`write_idx`: an idx(.gz) file as the Fashion-MNIST reader
  (:mod:`nfnet_jax.data.fashion_mnist`) reads it;
* :func:`write_fake_fashion_mnist`: a small Fashion-MNIST-shaped data set;
* :func:`write_fake_manual_tars`: ILSVRC2012-style manual-download tars of
  synthetic JPEGs (a partial ImageNet that tfds prepares offline).
"""
import gzip
import io
import os
import struct
import tarfile

import numpy as np

from nfnet_jax.data import fashion_mnist
from nfnet_jax.data import imagenet


def write_idx(path: str, array: np.ndarray):
  """Writes `array` (uint8 or int32) as an idx file (gzip if path ends .gz)."""
  array = np.asarray(array)
  codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09,
           np.dtype('>i4'): 0x0C}
  if array.dtype == np.int32:
    array = array.astype('>i4')
  code = codes[array.dtype]
  header = bytes([0, 0, code, array.ndim]) + struct.pack(
      '>' + 'I' * array.ndim, *array.shape)
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(header + array.tobytes())


def synthetic_jpeg(h, w, seed):
  """A smooth colour image with some texture (JPEG-size like a photo)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (heavy, optional here)
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  img = np.stack([128 + 100 * np.sin(xx / rng.uniform(10, 60) + c) *
                  np.cos(yy / rng.uniform(10, 60) - c) for c in range(3)], -1)
  img += rng.normal(0, 12, size=img.shape)
  img = np.clip(img, 0, 255).astype(np.uint8)
  return tf.io.encode_jpeg(img, quality=90).numpy()


def write_fake_manual_tars(manual_dir, synsets, per_class, val_numbers,
                           size=(375, 500), seed=0):
  """Writes ILSVRC2012-style train/val tars of synthetic JPEGs.

  Train: one nested `<synset>.tar` per class with `per_class` images; val:
  flat `ILSVRC2012_val_<n>.JPEG` for each n in `val_numbers`. Used by tests
  and the data benchmark (a few classes: a partial ImageNet).
  """
  def add(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))

  os.makedirs(manual_dir, exist_ok=True)
  h, w = size
  with tarfile.open(os.path.join(manual_dir, imagenet.TRAIN_TAR), 'w') as outer:
    for ci, syn in enumerate(synsets):
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode='w') as inner:
        for i in range(per_class):
          add(inner, f'{syn}_{i}.JPEG',
              synthetic_jpeg(h, w, seed + 1000 * ci + i))
      add(outer, f'{syn}.tar', buf.getvalue())
  with tarfile.open(os.path.join(manual_dir, imagenet.VAL_TAR), 'w') as val:
    for n in val_numbers:
      add(val, f'ILSVRC2012_val_{n:08d}.JPEG', synthetic_jpeg(h, w, 10**6 + seed + n))


def write_fake_fashion_mnist(directory: str, n_train: int = 256, n_test: int = 64, seed: int = 0,
                             labels: str = 'cyclic') -> str:
  """Fashion-MNIST-shaped idx files (random pixels) in ``directory``; returns it.

  Per split (train, then test): ``n`` random 28x28 uint8 images from
  ``numpy.random.default_rng(seed)``, then labels: ``'cyclic'`` (0..9
  repeated) or ``'random'`` (drawn from the same generator after the images).
  """
  if labels not in ('cyclic', 'random'):
    raise ValueError(f"labels must be 'cyclic' or 'random', got {labels!r}")
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  for split, n in (('train', n_train), ('test', n_test)):
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    if labels == 'cyclic':
      y = (np.arange(n) % 10).astype(np.uint8)
    else:
      y = rng.integers(0, 10, (n,)).astype(np.uint8)
    img_stem, lbl_stem = fashion_mnist.FILES[split]
    write_idx(os.path.join(directory, img_stem), images)
    write_idx(os.path.join(directory, lbl_stem), y)
  return directory
