"""Data set registry: sources (in-memory idx files or tfds), info, validation.

Three kinds of source feed the same pipeline (``sources.py`` reads each,
``tail.py`` is their shared batch tail, ``pipeline.py`` the iterators):
  * ``memory``: numpy arrays (Fashion-MNIST from its idx files) sliced with
    tf.data from tensors; random access, so resumption is O(1).
  * ``folder``: a plain ``train/<class>/*.JPEG`` tree (``data.name =
    'image_folder'``, ``data.data_dir`` its root; ``image_folder.py``): a
    file list, read and crop-decoded by tf.data; random access too.
  * ``tfds``: a prepared tensorflow-datasets builder (imagenet2012 or any tfds
    image classification set), read with ``download=False`` unless the config
    allows downloads.

Every split field (``data.train_split``, ``data.eval_split``,
``data.train_eval_split``) takes a tfds-style slice of a split:
``'train[:10%]'``, ``'train[:5000]'``, ``'train[1000:2000]'``,
``'train[-10%:]'`` (see :func:`parse_split`). :meth:`Source.split_name`
resolves it to absolute example indices, ``'train[0:6000]'``, so every kind
of source takes the same examples' count: Fashion-MNIST slices its stored
order, tfds reads that slice of its records, and an image folder slices one
fixed (seed-independent) shuffle of its sorted file list, so a subset holds
every class in proportion and is the same for every ``config.seed``.
"""
import dataclasses
import functools
import os
import re
from typing import Any, Optional, Tuple

import numpy as np

from nfnet_jax import errors
# The per-dataset defaults are part of the config schema (re-exported here).
from nfnet_jax.config.schema import DATASET_DEFAULTS  # pylint: disable=unused-import
from nfnet_jax.config.schema import apply_dataset_defaults  # pylint: disable=unused-import
from nfnet_jax.data import fashion_mnist
from nfnet_jax.data import image_folder
from nfnet_jax.data import imagenet
from nfnet_jax.utils import get_dotted
from nfnet_jax.utils import is_number

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Per-channel statistics in [0, 255] units for data sets we know; others use
# ImageNet's (3 channels) or 127.5/127.5 (1 channel) unless the config sets
# data.mean / data.std.
KNOWN_STATS = {
    'imagenet2012': (IMAGENET_MEAN, IMAGENET_STD),
    'fashion_mnist': (fashion_mnist.MEAN, fashion_mnist.STD),
    'mnist': ((33.32,), (78.57,)),
    'cifar10': ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    'cifar100': ((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
}

TRAIN_CROPS = ('inception', 'pad_crop', 'none')
EVAL_RESIZES = ('squash', 'aspect')
RESIZE_METHODS = ('bicubic', 'bilinear', 'area', 'nearest')
# The level mappings of data/randaugment.py (kept here so validating a config
# does not import TensorFlow's image ops).
RANDAUGMENT_MODES = ('official', 'increasing')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and loop need to know about a data set.

  Attributes:
    num_classes: number of labels.
    num_train: examples in the train split (all hosts).
    num_eval: examples in the eval split (all hosts).
    image_shape: (H, W, C) of the train batches' images.
    mean: per-channel mean subtracted (in [0, 255] units), len C.
    std: per-channel std divided by, len C.
    eval_image_shape: (H, W, C) of the eval batches' images.
    source_channels: channels stored in the data set (1 for grayscale).
  """
  num_classes: int
  num_train: int
  num_eval: int
  image_shape: Tuple[int, int, int]
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  eval_image_shape: Tuple[int, int, int] = (0, 0, 0)
  source_channels: int = 3


_get = get_dotted


def _fashion_dir(data_config) -> str:
  return _get(data_config, 'data_dir') or fashion_mnist.DEFAULT_DIR


def _fashion_split(split: str) -> str:
  # Fashion-MNIST has train/test only; 'validation' (the base config's
  # ImageNet default) means the 10,000-image test set, which is what
  # published Fashion-MNIST accuracies are measured on.
  if split in ('test', 'validation'):
    return 'test'
  if split == 'train':
    return 'train'
  raise errors.DataError(f'config.data.eval_split/train_split={split!r}: '
                   "Fashion-MNIST has splits 'train' and 'test'")


# 'name' or 'name[start:stop]'; bounds are ints (negative: from the end) or
# percentages of the split, either may be empty.
_SPLIT_RE = re.compile(r'^([A-Za-z0-9_.\-]+)(?:\[([^\[\]:]*):([^\[\]:]*)\])?$')
_BOUND_RE = re.compile(r'^-?\d+(\.\d+)?%?$')
# The fixed shuffle an image-folder subset is sliced from (not config.seed:
# the subset must be the same examples for every seed of a study).
FOLDER_SUBSET_KEY = 20210127
_SPLIT_HELP = ("a split name or a tfds-style slice of it, e.g. 'train', 'train[:10%]', "
               "'train[:5000]', 'train[1000:2000]' or 'train[-10%:]'")


def parse_split(spec, field: str = 'data.train_split'):
  """Parses a tfds-style split spec into ``(name, start, stop)``.

  Args:
    spec: ``'train'`` or ``'train[start:stop]'`` with each bound empty, an
      int (negative counts from the end) or a percentage (``'10%'``,
      ``'-2.5%'``).
    field: the config field named in errors.

  Returns:
    ``(name, start, stop)``: ``start`` / ``stop`` are None (no slice or an
    empty bound), an int, or a float percentage wrapped as ``('%', value)``.

  Raises:
    ValueError: one line naming the field, the spec and the accepted forms.
  """
  text = str(spec).replace(' ', '') if isinstance(spec, str) else None
  m = _SPLIT_RE.match(text) if text else None
  if m is None:
    raise errors.DataError(f'config.{field}={spec!r} is not a split spec; expected {_SPLIT_HELP}')
  bounds = []
  for b in m.group(2, 3):
    if b is None or b == '':
      bounds.append(None)
    elif not _BOUND_RE.match(b) or (not b.endswith('%') and '.' in b):
      raise errors.DataError(f'config.{field}={spec!r}: slice bound {b!r} is not an integer or a '
                       f'percentage; expected {_SPLIT_HELP}')
    elif b.endswith('%'):
      bounds.append(('%', float(b[:-1])))
    else:
      bounds.append(int(b))
  return m.group(1), bounds[0], bounds[1]


def split_base(spec) -> str:
  """The split name of a spec without its slice (``'train[:10%]'`` -> ``'train'``)."""
  return str(spec).split('[')[0].strip()


def _resolve_bound(bound, n, spec, field):
  if bound is None:
    return None
  if isinstance(bound, tuple):
    pct = bound[1]
    if abs(pct) > 100:
      raise errors.DataError(f'config.{field}={spec!r}: {pct:g}% is out of range; percentages '
                       'are in [-100%, 100%] of the split')
    # tfds's default 'closest' rounding (Python's round: half to even).
    v = int(round(pct * n / 100.0))
    return n + v if v < 0 else v
  if abs(bound) > n:
    raise errors.DataError(f'config.{field}={spec!r}: index {bound} is out of range for a split '
                     f'of {n} examples (use -{n}..{n}, or a percentage)')
  return n + bound if bound < 0 else bound


def split_range(spec, n: int, field: str = 'data.train_split'):
  """``[start, stop)`` example indices that ``spec`` selects from a split of ``n``.

  Raises:
    ValueError: a bad spec, a bound out of range or an empty selection, in
      one line naming the field.
  """
  _, start, stop = parse_split(spec, field)
  lo = _resolve_bound(start, n, spec, field)
  hi = _resolve_bound(stop, n, spec, field)
  lo = 0 if lo is None else lo
  hi = n if hi is None else hi
  if hi <= lo:
    raise errors.DataError(f'config.{field}={spec!r} selects no examples ([{lo}:{hi}] of a split '
                     f'of {n}); give a non-empty slice')
  return lo, hi


def canonical_split(spec, name: str, n: int, field: str = 'data.train_split') -> str:
  """``spec`` on split ``name`` (of ``n`` examples) with absolute indices.

  No slice gives ``name`` itself; a slice gives ``'name[lo:hi]'`` (a spec tfds
  reads as is).
  """
  _, start, stop = parse_split(spec, field)
  if start is None and stop is None:
    return name
  lo, hi = split_range(spec, n, field)
  return f'{name}[{lo}:{hi}]'


def uses_idx_files(data_config) -> bool:
  """True when Fashion-MNIST is read from local idx files."""
  if _get(data_config, 'name') != 'fashion_mnist':
    return False
  return not fashion_mnist.missing_files(_fashion_dir(data_config))


@dataclasses.dataclass
class Source:
  """A resolved data source. See module docstring for the two kinds."""
  kind: str                      # 'memory' | 'tfds' | 'folder'
  name: str
  num_classes: int
  channels: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  split_sizes: dict              # split name -> num examples
  builder: Any = None            # tfds builder (kind 'tfds')
  image_key: str = 'image'
  label_key: str = 'label'
  jpeg: bool = False             # tfds images stored as JPEG (crop-decode)
  data_dir: Optional[str] = None  # idx folder (kind 'memory'); root ('folder')
  fixed_size: Optional[Tuple[int, int]] = None  # stored (H, W) if fixed

  def split_name(self, split: str, field: str = 'data.train_split') -> str:
    """The stored split ``split`` reads, slice resolved: ``'train[0:6000]'``.

    Raises:
      ValueError: a bad or empty spec, or a bound out of range (naming ``field``).
    """
    name, start, stop = parse_split(split, field)
    if self.kind == 'memory':
      name = _fashion_split(name)
    if start is None and stop is None:
      return name
    return canonical_split(split, name, self.base_size(name), field)

  def base_size(self, name: str) -> int:
    """Examples in the whole stored split ``name``."""
    if name not in self.split_sizes:
      if self.kind == 'folder':
        self.split_sizes[name] = len(image_folder.list_with_train_classes(self.data_dir, name)[0])
      else:
        raise errors.DataError(f'config.data: data set {self.name!r} has no split {name!r}; '
                         f'splits: {sorted(self.split_sizes)}')
    return self.split_sizes[name]

  def num_examples(self, split: str) -> int:
    """Examples a split spec selects (0 for a split of unknown size)."""
    name = split_base(split)
    if self.kind == 'memory':
      name = _fashion_split(name)
    if name not in self.split_sizes and self.kind != 'folder':
      return 0
    n = self.base_size(name)
    lo, hi = split_range(split, n) if '[' in str(split) else (0, n)
    return hi - lo

  def load_arrays(self, split: str):
    """Returns (images uint8 [N,H,W,C], labels int32 [N]) (memory kind).

    ``split``: a spec, sliced as :meth:`split_name` resolves it.
    """
    name = self.split_name(split)
    images, labels = _load_fashion_cached(self.data_dir, split_base(name))
    if name == split_base(name):
      return images, labels
    lo, hi = split_range(name, len(labels))
    return images[lo:hi], labels[lo:hi]

  def load_paths(self, split: str):
    """Returns (file paths [N], labels int32 [N]) (folder kind).

    A sliced spec selects from one fixed shuffle of the sorted listing
    (``FOLDER_SUBSET_KEY``), so a subset holds every class in proportion.
    """
    name = self.split_name(split)
    paths, labels = image_folder.list_with_train_classes(self.data_dir, split_base(name))
    if name == split_base(name):
      return paths, labels
    order = np.random.default_rng(FOLDER_SUBSET_KEY).permutation(len(paths))
    lo, hi = split_range(name, len(paths))
    keep = order[lo:hi]
    return paths[keep], labels[keep]


@functools.lru_cache(maxsize=4)
def _load_fashion_cached(data_dir, split):
  images, labels = fashion_mnist.load_split(data_dir, split)
  if labels.size and (labels.min() < 0 or labels.max() >= 10):
    raise errors.DataError(f'Fashion-MNIST labels in {data_dir} ({split}) out of '
                     f'range [0, 10): min {labels.min()}, max {labels.max()}')
  return images, labels


def _stats(name, channels, data_config):
  mean, std = _get(data_config, 'mean'), _get(data_config, 'std')
  if name in KNOWN_STATS:
    d_mean, d_std = KNOWN_STATS[name]
  elif channels == 3:
    d_mean, d_std = IMAGENET_MEAN, IMAGENET_STD
  else:
    d_mean, d_std = (127.5,) * channels, (127.5,) * channels
  mean = tuple(float(m) for m in (mean if mean is not None else d_mean))
  std = tuple(float(s) for s in (std if std is not None else d_std))
  if len(mean) == 1 and channels > 1:
    mean, std = mean * channels, std * channels
  return mean, std


def _tfds_builder(data_config):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = _get(data_config, 'name')
  try:
    return tfds.builder(name, data_dir=_get(data_config, 'data_dir'),
                        try_gcs=False)
  except Exception as e:  # DatasetNotFoundError and registry errors
    raise errors.DataError(
        f'config.data.name={name!r}: not a tensorflow-datasets builder '
        f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}). '
        "Use 'imagenet2012', 'fashion_mnist' or a tfds image data set name."
    ) from e


def _find_keys(features):
  """Finds the (image, label) feature keys of a tfds FeaturesDict."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  image_key = label_key = None
  for key, feat in features.items():
    if image_key is None and isinstance(feat, tfds.features.Image):
      image_key = key
    if label_key is None and isinstance(feat, tfds.features.ClassLabel):
      label_key = key
  return image_key, label_key


def get_source(data_config, *, need_splits=True) -> Source:
  """Resolves `config.data` into a Source (no example is read)."""
  name = _get(data_config, 'name')
  if name == 'fashion_mnist' and uses_idx_files(data_config):
    data_dir = _fashion_dir(data_config)
    channels = 1
    mean, std = _stats(name, channels, data_config)
    sizes = {s: fashion_mnist.num_examples(data_dir, s)
             for s in ('train', 'test')}
    return Source(kind='memory', name=name, num_classes=10, channels=1,
                  mean=mean, std=std, split_sizes=sizes, data_dir=data_dir,
                  fixed_size=(28, 28))
  if name == image_folder.NAME:
    return _folder_source(data_config)
  builder = _tfds_builder(data_config)
  if (need_splits and _get(data_config, 'allow_download') and
      not builder.info.splits):
    # Only with config.data.allow_download: tfds downloads can hang offline.
    builder.download_and_prepare()
  info = builder.info
  image_key, label_key = _find_keys(info.features)
  if image_key is None or label_key is None:
    raise errors.DataError(f'config.data.name={name!r}: tfds features '
                     f'{list(info.features.keys())} have no Image and '
                     'ClassLabel feature; only image classification data '
                     'sets are supported')
  img = info.features[image_key]
  channels = img.shape[-1] or 3
  fixed = tuple(img.shape[:2]) if None not in img.shape[:2] else None
  mean, std = _stats(name, channels, data_config)
  sizes = {}
  for s in info.splits.keys():
    try:
      sizes[s] = int(info.splits[s].num_examples)
    except Exception:  # pylint: disable=broad-except
      pass
  return Source(kind='tfds', name=name,
                num_classes=int(info.features[label_key].num_classes),
                channels=channels, mean=mean, std=std, split_sizes=sizes,
                builder=builder, image_key=image_key, label_key=label_key,
                jpeg=(getattr(img, 'encoding_format', None) == 'jpeg'),
                fixed_size=fixed)


def _folder_source(data_config) -> Source:
  root = image_folder.root_dir(_get(data_config, 'data_dir'))
  classes = image_folder.train_classes(root)
  sizes = {'train': len(image_folder.list_split(root, 'train')[1])}
  for split in (split_base(_get(data_config, 'eval_split') or ''), 'validation'):
    if split and split not in sizes:
      try:
        sizes[split] = len(image_folder.list_with_train_classes(root, split)[0])
      except ValueError:
        if split == _get(data_config, 'eval_split'):
          raise
  mean, std = _stats(image_folder.NAME, 3, data_config)
  return Source(kind='folder', name=image_folder.NAME, num_classes=len(classes),
                channels=3, mean=mean, std=std, split_sizes=sizes, jpeg=True,
                data_dir=root)


def output_channels(source: Source, data_config) -> int:
  if source.channels == 1 and _get(data_config, 'grayscale_to_rgb'):
    return 3
  return source.channels


def dataset_info(data_config) -> DatasetInfo:
  """Returns DatasetInfo without reading the examples (headers/metadata)."""
  src = get_source(data_config)
  c = output_channels(src, data_config)
  mean, std = src.mean, src.std
  if c == 3 and len(mean) == 1:
    mean, std = mean * 3, std * 3
  size = int(_get(data_config, 'image_size'))
  esize = int(_get(data_config, 'eval_image_size') or size)
  train_split = src.split_name(_get(data_config, 'train_split', 'train'), 'data.train_split')
  eval_split = src.split_name(_get(data_config, 'eval_split', 'validation'), 'data.eval_split')
  return DatasetInfo(
      num_classes=src.num_classes,
      num_train=src.num_examples(train_split),
      num_eval=src.num_examples(eval_split),
      image_shape=(size, size, c), mean=tuple(mean), std=tuple(std),
      eval_image_shape=(esize, esize, c), source_channels=src.channels)


def check_randaugment_mode(mode) -> str:
  """Returns `mode` or raises the one error naming the config field."""
  if mode not in RANDAUGMENT_MODES:
    raise errors.DataError(
        f'config.data.randaugment_mode={mode!r} is not allowed; expected one '
        f'of {list(RANDAUGMENT_MODES)} (official: the TPU/EfficientNet level '
        'mapping the NFNet paper tuned its magnitudes with; increasing: every '
        'op stronger with magnitude)')
  return mode


def _check_choice(data_config, field, allowed):
  v = _get(data_config, field)
  if v not in allowed:
    raise errors.DataError(f'config.data.{field}={v!r} is not allowed; '
                     f'expected one of {list(allowed)}')


def _check_number(data_config, field, lo, hi=None, integer=False,
                  allow_none=False):
  v = _get(data_config, field)
  if v is None and allow_none:
    return
  ok = is_number(v)
  if ok and integer:
    ok = float(v) == int(v)
  if ok:
    ok = v >= lo and (hi is None or v <= hi)
  if not ok:
    rng = f'[{lo}, {hi}]' if hi is not None else f'>= {lo}'
    kind = 'an integer' if integer else 'a number'
    raise errors.DataError(f'config.data.{field}={v!r} is not allowed; expected '
                     f'{kind} in {rng}')


def _check_random_erase(data_config):
  """``data.random_erase`` (probability), ``random_erase_area`` (lo, hi) and
  ``random_erase_min_aspect``: see ``nfnet_jax/data/erasing.py``."""
  _check_number(data_config, 'random_erase', 0, 1, allow_none=True)
  area = _get(data_config, 'random_erase_area', (0.02, 0.4))
  if (not isinstance(area, (tuple, list)) or len(area) != 2 or
      not all(is_number(a) for a in area) or not 0 < area[0] <= area[1] < 1):
    raise errors.DataError(
        f'config.data.random_erase_area={area!r} is not allowed; expected '
        '(lo, hi) with 0 < lo <= hi < 1, the erased fraction of the image '
        '(the paper: (0.02, 0.4))')
  aspect = _get(data_config, 'random_erase_min_aspect', 0.3)
  if not is_number(aspect) or not 0 < aspect <= 1:
    raise errors.DataError(
        f'config.data.random_erase_min_aspect={aspect!r} is not allowed; '
        'expected a number in (0, 1]: aspect ratios are drawn in '
        '[it, 1 / it] (the paper: 0.3)')


def validate_data_config(data_config):
  """Checks `config.data` before anything is built.

  Raises:
    ValueError: naming the field, the bad value and what is allowed; also when
      the data files are missing (naming the folder and files expected).
  """
  name = _get(data_config, 'name')
  if not isinstance(name, str) or not name:
    raise errors.DataError(f'config.data.name={name!r}: expected a data set name '
                     "such as 'imagenet2012' or 'fashion_mnist'")
  _check_number(data_config, 'image_size', 1, integer=True)
  _check_number(data_config, 'eval_image_size', 1, integer=True,
                allow_none=True)
  _check_number(data_config, 'eval_crop_padding', 0, integer=True)
  _check_choice(data_config, 'eval_resize', EVAL_RESIZES)
  _check_choice(data_config, 'train_crop', TRAIN_CROPS)
  _check_number(data_config, 'pad_crop_padding', 0, integer=True)
  _check_number(data_config, 'randaugment_layers', 0, 20, integer=True)
  _check_number(data_config, 'randaugment_magnitude', 0, 30)
  check_randaugment_mode(_get(data_config, 'randaugment_mode', 'official'))
  _check_number(data_config, 'mixup_alpha', 0)
  _check_random_erase(data_config)
  before = _get(data_config, 'augment_before_mix', False)
  if not isinstance(before, bool):
    raise errors.DataError(f'config.data.augment_before_mix={before!r}: expected True '
                           '(RandAugment before MixUp/CutMix) or False (after, the official order)')
  _check_number(data_config, 'shuffle_buffer', 1, integer=True)
  _check_number(data_config, 'prefetch', 0, integer=True)
  npc = _get(data_config, 'num_parallel_calls')
  if not (npc == -1 or (isinstance(npc, int) and npc >= 1)):
    raise errors.DataError(f'config.data.num_parallel_calls={npc!r}: expected -1 '
                     '(AUTOTUNE) or a positive integer')
  if _get(data_config, 'resize_method', 'bicubic') not in RESIZE_METHODS:
    _check_choice(data_config, 'resize_method', RESIZE_METHODS)
  for field in ('mean', 'std'):
    v = _get(data_config, field)
    if v is not None:
      vals = np.asarray(v, dtype=np.float64).reshape(-1)
      if vals.size not in (1, 3) or (field == 'std' and (vals <= 0).any()):
        raise errors.DataError(f'config.data.{field}={v!r}: expected None or 1 or '
                         '3 numbers (std > 0), in [0, 255] pixel units')
  if name == 'fashion_mnist':
    d = _fashion_dir(data_config)
    missing = fashion_mnist.missing_files(d)
    if missing and not _get(data_config, 'allow_download'):
      raise errors.DataError(
          f'config.data.data_dir={_get(data_config, "data_dir")!r}: '
          f'Fashion-MNIST idx files missing in {d}: {missing}. Install the '
          'Debian package dataset-fashion-mnist, point config.data.data_dir '
          'at a folder holding the four idx(.gz) files, or set '
          'config.data.allow_download=True to use the tfds builder.')
    if missing:
      return  # the tfds builder will download; nothing more to check here
    src = get_source(data_config)
    for field in split_fields(data_config):
      spec = _get(data_config, field)
      parse_split(spec, f'data.{field}')
      try:
        _fashion_split(split_base(spec))
      except ValueError as e:
        raise errors.DataError(f'config.data.{field}: {e}') from None
      src.split_name(spec, f'data.{field}')
    return
  for field in split_fields(data_config):
    parse_split(_get(data_config, field), f'data.{field}')
  src = get_source(data_config)
  if src.kind == 'folder':
    for field in split_fields(data_config):
      split = _get(data_config, field)
      if split_base(split) not in src.split_sizes:
        try:
          image_folder.list_with_train_classes(src.data_dir, split_base(split))
        except ValueError as e:
          raise errors.DataError(f'config.data.{field}={split!r}: {e}') from None
      src.split_name(split, f'data.{field}')
    return
  builder = src.builder
  if not src.split_sizes and not _get(data_config, 'allow_download'):
    d = getattr(builder, 'data_dir', None)
    hint = ''
    if name == 'imagenet2012':
      # Say which manual files are missing and where they belong (the
      # builder's data_dir is <root>/imagenet2012/<version>).
      root = _get(data_config, 'data_dir') or (
          os.path.dirname(os.path.dirname(d)) if d else '<data_dir>')
      manual = imagenet.default_manual_dir(str(root))
      missing = imagenet.missing_manual_files(manual)
      if missing:
        hint = ' ' + imagenet.missing_files_message(manual, missing).replace(
            '\n', ' ')
      else:
        hint = f' The manual files are in {manual}.'
      hint += (' Then prepare it with: python scripts/prepare_data.py '
               f'--dataset imagenet2012 --data_dir {root}')
    raise errors.DataError(
        f'config.data.data_dir={_get(data_config, "data_dir")!r}: data set '
        f'{name!r} is not prepared under {d} (no dataset_info.json with '
        f'splits), and config.data.allow_download is False.{hint}')
  for field in split_fields(data_config):
    split = _get(data_config, field)
    base = split_base(split)
    if src.split_sizes and base not in src.split_sizes:
      raise errors.DataError(f'config.data.{field}={split!r}: data set {name!r} '
                       f'has splits {sorted(src.split_sizes)}')
    if src.split_sizes:
      src.split_name(split, f'data.{field}')


def split_fields(data_config) -> list:
  """The split fields set in ``config.data`` (train_eval_split only when not None)."""
  fields = ['train_split', 'eval_split']
  if _get(data_config, 'train_eval_split') is not None:
    fields.append('train_eval_split')
  return fields
