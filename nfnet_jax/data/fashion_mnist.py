"""Fashion-MNIST from the four idx files (Debian `dataset-fashion-mnist`).

The files are read with numpy into memory (47 MB for the training images);
the pipeline then slices tensors, so no tfds preparation is needed. When the
files are absent and downloads are allowed, the tfds builder is used instead.
"""
import gzip
import os
import struct
import zlib
from typing import Optional, Tuple

import numpy as np

from nfnet_jax import errors

DEFAULT_DIR = '/usr/share/datasets/fashion-mnist'
FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
NUM_CLASSES = 10
# Per-channel statistics of the 60,000 training images, in [0, 255] units
# (0.2860 and 0.3530 on the [0, 1] scale).
MEAN = (72.94,)
STD = (90.02,)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype('>i2'),
               0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'),
               0x0E: np.dtype('>f8')}


def _open(path):
  return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def find_file(data_dir: str, stem: str) -> Optional[str]:
  """Returns `<data_dir>/<stem>.gz` or `<data_dir>/<stem>`, whichever exists."""
  for name in (stem + '.gz', stem):
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
      return path
  return None


def missing_files(data_dir: str):
  """Lists the idx files (as `<stem>[.gz]`) absent from `data_dir`."""
  return [stem + '[.gz]' for pair in FILES.values() for stem in pair
          if find_file(data_dir, stem) is None]


def _read_header(f) -> Tuple[np.dtype, Tuple[int, ...]]:
  magic = f.read(4)
  if len(magic) != 4 or magic[0] != 0 or magic[1] != 0:
    raise ValueError(f'not an idx file (magic bytes {magic!r})')
  dtype = _IDX_DTYPES.get(magic[2])
  if dtype is None:
    raise ValueError(f'unknown idx data type 0x{magic[2]:02x}')
  ndim = magic[3]
  raw = f.read(4 * ndim)
  if len(raw) != 4 * ndim:
    raise ValueError(f'truncated idx header ({4 + len(raw)} bytes)')
  shape = struct.unpack('>' + 'I' * ndim, raw)
  return np.dtype(dtype), shape


def _read(path: str, payload: bool):
  """(dtype, shape, payload bytes or None); errors.DataError naming ``path``."""
  try:
    with _open(path) as f:
      dtype, shape = _read_header(f)
      data = f.read() if payload else None
  except (OSError, EOFError, ValueError, zlib.error) as e:
    # Random bytes, a truncated gzip stream, an unreadable file.
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    raise errors.DataError(f'{path}: not a readable idx file ({reason}); '
                           'replace it (e.g. reinstall dataset-fashion-mnist)'
                           ) from None
  return dtype, shape, data


def read_idx_shape(path: str) -> Tuple[int, ...]:
  """Reads only the header of an idx file (cheap: no payload decompressed)."""
  return _read(path, payload=False)[1]


def read_idx(path: str) -> np.ndarray:
  """Reads an idx(.gz) file into a numpy array of its stored shape."""
  dtype, shape, data = _read(path, payload=True)
  count = int(np.prod(shape))
  if len(data) < count * dtype.itemsize:
    raise errors.DataError(f'{path}: truncated idx payload ({len(data)} bytes, '
                     f'header says {shape} x {dtype.itemsize})')
  return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)


def split_files(data_dir: str, split: str) -> Tuple[str, str]:
  """Returns (images_path, labels_path) for 'train' or 'test'."""
  stems = FILES[split]
  paths = tuple(find_file(data_dir, s) for s in stems)
  if None in paths:
    raise errors.NotFoundError(
        f'Fashion-MNIST {split} idx files missing in {data_dir}: '
        f'{[s for s, p in zip(stems, paths) if p is None]}')
  return paths


def num_examples(data_dir: str, split: str) -> int:
  """The split's size from the headers; the files are checked cheaply.

  Raises:
    errors.DataError: unreadable headers, image and label counts that
      differ, an empty split, or an uncompressed file shorter than its
      header says (a truncated copy): found here, before anything compiles,
      instead of when the first batch is read.
  """
  images_path, labels_path = split_files(data_dir, split)
  counts = []
  for path in (images_path, labels_path):
    dtype, shape, _ = _read(path, payload=False)
    if not path.endswith('.gz'):
      header = 4 + 4 * len(shape)
      want = header + int(np.prod(shape)) * dtype.itemsize
      size = os.path.getsize(path)
      if size < want:
        raise errors.DataError(
            f'{path}: truncated idx file ({size} bytes, its header says '
            f'{shape} x {dtype.itemsize} = {want} bytes)')
    counts.append(shape[0] if shape else 0)
  if counts[0] != counts[1]:
    raise errors.DataError(f'{images_path} has {counts[0]} images but '
                           f'{labels_path} has {counts[1]} labels')
  if counts[0] == 0:
    raise errors.DataError(f'{images_path}: the {split} split is empty')
  return counts[1]


def load_split(data_dir: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (images uint8 [N, 28, 28, 1], labels int32 [N])."""
  images_path, labels_path = split_files(data_dir, split)
  images = read_idx(images_path)
  labels = read_idx(labels_path).astype(np.int32)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise errors.DataError(f'{images_path}: expected uint8 [N, H, W] images, got '
                     f'{images.dtype} {images.shape}')
  if images.shape[0] != labels.shape[0]:
    raise errors.DataError(f'{images_path} has {images.shape[0]} images but '
                     f'{labels_path} has {labels.shape[0]} labels')
  return images[..., None], labels
