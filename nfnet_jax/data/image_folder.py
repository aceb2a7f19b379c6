"""A plain image-folder tree as a data source, without a tfds preparation step.

Layout (the one most people hold ImageNet in):

    <data_dir>/train/<class>/*.JPEG
    <data_dir>/val/<class>/*.JPEG      (split 'validation' or 'val')

Class indices are the sorted class-folder names of the train split (the
torchvision ImageFolder convention, so a folder of ImageNet synsets gets the
usual 0-999 labels); every validation class must be one of them. Images are
JPEG files (`.jpeg`/`.jpg`, any case) decoded with crop-decode like the tfds
JPEGs; a file that fails to decode is skipped and counted in
`DataIterator.decode_errors`.

Listing needs only `os` (no TensorFlow); the tf.data reading is in
`sources.py`. Every problem with the tree raises one ValueError naming the
path: a missing, unreadable or empty folder, and a class folder with no
images.
"""
import functools
import os
from typing import List, Tuple

import numpy as np

from nfnet_jax import errors

NAME = 'image_folder'
EXTENSIONS = ('.jpeg', '.jpg')
# config split name -> folder names tried in order.
SPLIT_DIRS = {'train': ('train',), 'validation': ('val', 'validation'),
              'val': ('val', 'validation'), 'test': ('test',)}


def _layout_hint() -> str:
  return ('expected <data_dir>/train/<class>/*.JPEG and '
          '<data_dir>/val/<class>/*.JPEG')


def _listdir(path: str) -> List[str]:
  try:
    return sorted(os.listdir(path))
  except PermissionError as e:
    raise errors.DataError(f'config.data.data_dir: image folder {path}: cannot be read ({e.strerror}); '
                     'fix its permissions') from None
  except OSError as e:
    raise errors.DataError(f'config.data.data_dir: image folder {path}: cannot be read ({e.strerror})') from None


def root_dir(data_dir) -> str:
  """Checks config.data.data_dir for the image-folder source."""
  if not data_dir:
    raise errors.DataError(f'config.data.data_dir is not set: the {NAME!r} source needs '
                     f'the folder root ({_layout_hint()})')
  root = os.path.abspath(os.path.expanduser(str(data_dir)))
  if not os.path.isdir(root):
    raise errors.DataError(f'config.data.data_dir={data_dir!r}: image folder {root} does '
                     f'not exist or is not a folder ({_layout_hint()})')
  return root


def split_dir(root: str, split: str) -> str:
  """The folder of `split` under `root`, or a ValueError naming what is missing."""
  base = str(split).split('[')[0]
  names = SPLIT_DIRS.get(base, (base,))
  for name in names:
    path = os.path.join(root, name)
    if os.path.isdir(path):
      return path
  raise errors.DataError(f'config.data.data_dir: image folder {os.path.join(root, names[0])}: missing (split '
                   f'{split!r}; {_layout_hint()})')


def _is_image(name: str) -> bool:
  return name.lower().endswith(EXTENSIONS) and not name.startswith('.')


@functools.lru_cache(maxsize=8)
def list_split(root: str, split: str, classes: Tuple[str, ...] = ()
               ) -> Tuple[Tuple[str, ...], np.ndarray, np.ndarray]:
  """Lists one split: (class names, file paths [N], int32 labels [N]).

  Files are sorted by (class, name), so the listing (and everything keyed on
  positions in it) is the same on every host and every run.

  Args:
    root: the folder root (see `root_dir`).
    split: 'train', 'validation'/'val', or another folder name.
    classes: the class names that define the label indices (the train
      split's); empty: this split's own sorted class folders.

  Raises:
    ValueError: naming the folder that is missing, unreadable or empty, the
      class folder that has no images, or a class the train split lacks.
  """
  sdir = split_dir(root, split)
  entries = _listdir(sdir)
  found = [e for e in entries if os.path.isdir(os.path.join(sdir, e))]
  if not found:
    raise errors.DataError(f'config.data.data_dir: image folder {sdir}: no class folders ({_layout_hint()})')
  classes = tuple(classes) or tuple(found)
  index = {c: i for i, c in enumerate(classes)}
  paths, labels = [], []
  for c in found:
    if c not in index:
      raise errors.DataError(f'config.data.data_dir: image folder {os.path.join(sdir, c)}: class {c!r} is not '
                       f'a class of the train split ({len(classes)} classes)')
    cdir = os.path.join(sdir, c)
    files = [f for f in _listdir(cdir) if _is_image(f)]
    if not files:
      raise errors.DataError(f'config.data.data_dir: image folder {cdir}: class folder holds no images '
                       f'(*{"/*".join(EXTENSIONS)}, any case)')
    paths += [os.path.join(cdir, f) for f in files]
    labels += [index[c]] * len(files)
  return classes, np.asarray(paths), np.asarray(labels, np.int32)


def train_classes(root: str) -> Tuple[str, ...]:
  return list_split(root, 'train')[0]


def list_with_train_classes(root: str, split: str):
  """(paths, labels) of `split`, labelled with the train split's classes."""
  if split_dir(root, split) == split_dir(root, 'train'):
    _, paths, labels = list_split(root, 'train')
  else:
    _, paths, labels = list_split(root, split, train_classes(root))
  return paths, labels
