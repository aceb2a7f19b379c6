"""Preparing imagenet2012 with tfds from the manual download.

tfds reads `ILSVRC2012_img_train.tar` (one nested tar per class, e.g.
`n01440764.tar`) and `ILSVRC2012_img_val.tar` (50,000 flat JPEGs) from the
manual folder (default `<data_dir>/downloads/manual`). Train labels come from
the nested tar names, so a train tar holding a few classes works as is.
Validation labels come from a list bundled with tfds, in the sorted order of
the 50,000 file names; tfds zips that list with the *sorted names present in
the tar*, which mislabels a partial validation tar. We therefore map each
name `ILSVRC2012_val_<n>.JPEG` to line n of that list instead (identical to
tfds on the full tar, correct on any subset).
"""
import contextlib
import os
import re
import tarfile
from typing import Dict, List, Optional, Tuple
from unittest import mock

from nfnet_jax import errors

TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VAL_TAR = 'ILSVRC2012_img_val.tar'
_VAL_NAME = re.compile(r'ILSVRC2012_val_(\d{8})\.JPEG$')


def default_manual_dir(data_dir: str) -> str:
  return os.path.join(os.path.expanduser(data_dir), 'downloads', 'manual')


def missing_manual_files(manual_dir: str) -> List[Tuple[str, str]]:
  """[(file name, expected path)] for each required tar not present."""
  out = []
  for name in (TRAIN_TAR, VAL_TAR):
    path = os.path.join(manual_dir, name)
    if not os.path.isfile(path):
      out.append((name, path))
  return out


def missing_files_message(manual_dir: str, missing) -> str:
  lines = [f'imagenet2012 needs the manual download in {manual_dir}:']
  for name, path in missing:
    lines.append(f'  missing {name}: expected at {path}')
  lines.append('Download them from https://image-net.org/download-images '
               '(registration required) and place them there, or pass '
               '--manual_dir pointing at the folder that holds them.')
  return '\n'.join(lines)


def _val_label_list() -> List[str]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt')
  with open(os.fspath(path)) as f:
    return f.read().strip().splitlines()


def validation_labels_by_name(val_path: str) -> Dict[str, str]:
  """Maps each member of the val tar to its synset by its file number."""
  labels = _val_label_list()
  out = {}
  with open(val_path, 'rb') as f:
    with tarfile.open(mode='r:', fileobj=f) as tar:
      for name in tar.getnames():
        m = _VAL_NAME.search(name)
        if not m:
          raise errors.DataError(f'{val_path}: member {name!r} is not named '
                           'ILSVRC2012_val_<8 digits>.JPEG')
        n = int(m.group(1))
        if not 1 <= n <= len(labels):
          raise errors.DataError(f'{val_path}: {name!r} numbered outside 1..'
                           f'{len(labels)}')
        out[name] = labels[n - 1]
  return out


@contextlib.contextmanager
def _partial_safe_validation_labels():
  from tensorflow_datasets.datasets.imagenet2012 import imagenet_common  # pylint: disable=g-import-not-at-top
  with mock.patch.object(imagenet_common, 'get_validation_labels',
                         validation_labels_by_name):
    yield


def prepare_imagenet2012(data_dir: str, manual_dir: Optional[str] = None,
                         progress: bool = True):
  """Runs tfds download_and_prepare for imagenet2012 from the manual tars.

  Args:
    data_dir: tfds data_dir (the dataset goes to data_dir/imagenet2012/5.1.0).
    manual_dir: folder holding the two tars (default
      <data_dir>/downloads/manual).
    progress: show tfds's progress bars.

  Returns:
    The prepared tfds builder.

  Raises:
    FileNotFoundError: listing each missing tar and where it should be.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  manual_dir = manual_dir or default_manual_dir(data_dir)
  missing = missing_manual_files(manual_dir)
  if missing:
    raise errors.NotFoundError(missing_files_message(manual_dir, missing))
  if progress:
    tfds.enable_progress_bar()
  else:
    tfds.disable_progress_bar()
  builder = tfds.builder('imagenet2012', data_dir=data_dir, try_gcs=False)
  with _partial_safe_validation_labels():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def prepare_tfds(name: str, data_dir: str, manual_dir: Optional[str] = None,
                 progress: bool = True):
  """download_and_prepare for any other tfds data set (needs network)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if progress:
    tfds.enable_progress_bar()
  builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  kw = {}
  if manual_dir:
    kw['download_config'] = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(**kw)
  return builder
