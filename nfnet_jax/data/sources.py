"""Where the train and eval iterators' examples come from.

A source turns a resolved :class:`datasets.Source` and this host's place in
the job into tf.data datasets of raw examples; ``pipeline.py`` puts the one
shared batch tail (augment, batch, mix, RandAugment after mixing, prefetch)
on every one of them. Three kinds:

* :class:`MemorySource` (Fashion-MNIST idx files): numpy arrays; each epoch
  is a stateless permutation keyed on (seed, host, epoch), so resuming skips
  index batches without reading anything. It also gives whole index batches,
  for the vectorised pad-crop-flip path.
* :class:`FolderSource` (``train/<class>/*.JPEG``): a file list, shuffled
  like the arrays; files are read in the tail's parallel map, and
  undecodable ones are skipped and counted.
* :class:`TfdsSource`: a prepared tfds builder; the file order and the
  shuffle buffer are seeded from (seed, host, epoch), so each epoch is its
  own dataset; resuming reads but does not decode the skipped records.

A train stream yields ``(gpos, ref)`` per example: ``gpos`` (int64) is the
example's position in this host's stream, ``step * host_batch + index in
the batch``, and ``source.load(ref)`` gives ``(image, label)``: JPEG bytes
when ``source.jpeg``, else uint8 [H, W, C].
"""
from typing import Iterator

import numpy as np
import tensorflow as tf

from nfnet_jax import errors
from nfnet_jax.data import datasets
from nfnet_jax.data import preprocess as pp


def seed_int(*parts) -> int:
  """A 31-bit Python int seed from integers (for tfds/tf.data seed args)."""
  return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
             .generate_state(1)[0] & 0x7FFFFFFF)


def host_range(n, p, P):
  """[start, end) of host p's contiguous share (np.array_split sizes)."""
  base, extra = divmod(n, P)
  start = p * base + min(p, extra)
  return start, start + base + (1 if p < extra else 0)


def _steps_per_epoch(n_per_host, host_batch, batch_size, what):
  spe = n_per_host // host_batch
  if spe == 0:
    raise ValueError(
        f'config.train.batch_size={batch_size}: the per-host batch '
        f'{host_batch} is larger than the per-host share of {what} '
        f'({n_per_host} examples)')
  return spe


def index_batches(n_host, spe, host_batch, key_seed, start_step):
  """(step, indices [host_batch]) for each train step from `start_step` on.

  Epoch e visits a stateless permutation of the host's `n_host` examples
  keyed on (key_seed, e); resuming skips whole index batches (nothing read).
  """
  start_epoch, start_batch = divmod(start_step, spe)

  @pp.no_autograph
  def epoch_batches(epoch):
    key = pp.make_key(key_seed, epoch)
    perm = tf.argsort(tf.random.stateless_uniform([n_host], key),
                      stable=True)
    perm = tf.reshape(perm[:spe * host_batch], [spe, host_batch])
    steps = epoch * spe + tf.range(spe, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((steps, perm))

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches)
  return ds.skip(start_batch)


def batch_positions(step, host_batch):
  """The stream positions of batch `step`'s examples, int64 [host_batch]."""
  return step * host_batch + tf.range(host_batch, dtype=tf.int64)


def _index_examples(ds, host_batch):
  """(step, index) batches -> (gpos, index) examples."""
  @pp.no_autograph
  def per_example(step, idx):
    return tf.data.Dataset.from_tensor_slices(
        (batch_positions(step, host_batch), idx))
  return ds.flat_map(per_example)


class _Source:
  """What the batch tail needs of a train source (see the module doc)."""
  jpeg = False           # load() gives JPEG bytes (crop-decoded)
  may_fail = False       # undecodable examples are skipped and counted
  check_labels = False   # labels are checked batch by batch (tfds)
  spe = 0                # steps per epoch
  epoch_len = 0          # examples per epoch (spe * host_batch)

  def load(self, ref):
    return ref

  def streams(self, start_step: int) -> Iterator[tf.data.Dataset]:
    raise NotImplementedError


class _RandomAccess(_Source):
  """Memory and folder sources: one infinite stream of index examples."""

  def __init__(self, n_host, spe, host_batch, key_seed):
    self.n_host, self.spe, self.host_batch = n_host, spe, host_batch
    self.epoch_len = spe * host_batch
    self.key_seed = key_seed

  def index_batches(self, start_step):
    return index_batches(self.n_host, self.spe, self.host_batch,
                         self.key_seed, start_step)

  def streams(self, start_step):
    yield _index_examples(self.index_batches(start_step), self.host_batch)


class MemorySource(_RandomAccess):
  """In-memory arrays (Fashion-MNIST idx files); random access."""

  def __init__(self, src, split, *, p, P, host_batch, key_seed, batch_size):
    images, labels = src.load_arrays(split)
    n = images.shape[0]
    lo, hi = host_range(n, p, P)
    spe = _steps_per_epoch(n // P, host_batch, batch_size,
                           f'{src.name}:{split}')
    super().__init__(hi - lo, spe, host_batch, key_seed)
    self.channels = src.channels
    self.images = tf.constant(images[lo:hi])
    self.labels = tf.constant(labels[lo:hi])

  def load(self, ref):
    return tf.gather(self.images, ref), tf.gather(self.labels, ref)


def folder_host_share(src, split, seed, p, P):
  """This host's (paths, labels) of an image-folder split, and the split size.

  Hosts take disjoint slices of one seed-keyed shuffle of the sorted listing
  (a slice of the sorted listing itself would hold only some classes).
  """
  paths, labels = src.load_paths(split)
  n = len(paths)
  order = np.random.default_rng(seed_int(seed, 5)).permutation(n)
  lo, hi = host_range(n, p, P)
  return paths[order[lo:hi]], labels[order[lo:hi]], n


class FolderSource(_RandomAccess):
  """A ``train/<class>/*.JPEG`` tree; files read in the tail's map."""
  jpeg = True
  may_fail = True
  channels = 3

  def __init__(self, src, split, *, seed, p, P, host_batch, key_seed,
               batch_size):
    paths, labels, n = folder_host_share(src, split, seed, p, P)
    spe = _steps_per_epoch(n // P, host_batch, batch_size,
                           f'{src.data_dir} split {split!r}')
    super().__init__(len(paths), spe, host_batch, key_seed)
    self.paths, self.labels = tf.constant(paths), tf.constant(labels)

  def load(self, ref):
    return (tf.io.read_file(tf.gather(self.paths, ref)),
            tf.gather(self.labels, ref))


def tfds_host_split(split, p, P):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if P == 1:
    return split
  return tfds.even_splits(split, n=P, drop_remainder=False)[p]


def split_size(src, split):
  try:
    return int(src.builder.info.splits[split].num_examples)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DataError(f'{src.name}: split {split!r} is unknown (splits: '
                           f'{sorted(src.split_sizes)})') from e


def _tfds_read_config(seed):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  opts = tf.data.Options()
  opts.deterministic = True
  # No autocache: tfds caches small splits, which would pin a whole epoch
  # in memory and bypass the per-epoch file order.
  return tfds.ReadConfig(shuffle_seed=seed, options=opts, try_autocache=False,
                         interleave_cycle_length=16, interleave_block_length=1)


def tfds_raw(src, split, *, shuffle_files, seed):
  """(image (bytes if JPEG else uint8), label) dataset of a tfds split."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  decoders = {src.image_key: tfds.decode.SkipDecoding()} if src.jpeg else None
  ds = src.builder.as_dataset(split=split, shuffle_files=shuffle_files,
                              decoders=decoders,
                              read_config=_tfds_read_config(seed))
  return ds.map(pp.no_autograph(lambda ex: (ex[src.image_key], ex[src.label_key])))


class TfdsSource(_Source):
  """A prepared tfds split; one dataset per epoch (seeded file order)."""
  may_fail = True
  check_labels = True

  def __init__(self, src, split, *, seed, p, P, host_batch, batch_size,
               shuffle_buffer):
    sizes = [split_size(src, tfds_host_split(split, i, P)) for i in range(P)]
    self.spe = _steps_per_epoch(min(sizes), host_batch, batch_size,
                                f'{src.name}:{split}')
    self.epoch_len = self.spe * host_batch
    self.src, self.host_split = src, tfds_host_split(split, p, P)
    self.jpeg, self.channels = src.jpeg, src.channels
    self.seed, self.p, self.host_batch = seed, p, host_batch
    self.buffer = shuffle_buffer

  def epoch(self, epoch, skip_batches):
    """Epoch `epoch`'s examples from batch `skip_batches` on."""
    eseed = seed_int(self.seed, self.p, epoch, 3)
    ds = tfds_raw(self.src, self.host_split, shuffle_files=True, seed=eseed)
    ds = ds.shuffle(self.buffer, seed=eseed, reshuffle_each_iteration=False)
    ds = ds.take(self.epoch_len).enumerate(start=epoch * self.epoch_len)
    return ds.skip(skip_batches * self.host_batch)

  def streams(self, start_step):
    start_epoch, start_batch = divmod(start_step, self.spe)
    yield self.epoch(start_epoch, start_batch)
    epoch = start_epoch + 1
    while True:
      yield self.epoch(epoch, 0)
      epoch += 1


def train_source(config, src, split, *, p, P, host_batch):
  """The train source of `config.data` for host `p` of `P`."""
  seed = int(config.seed)
  common = dict(p=p, P=P, host_batch=host_batch,
                batch_size=config.train.batch_size)
  if src.kind == 'memory':
    return MemorySource(src, split, key_seed=seed_int(seed, p, 1), **common)
  if src.kind == 'folder':
    return FolderSource(src, split, seed=seed, key_seed=seed_int(seed, p, 1),
                        **common)
  buffer = int(datasets._get(config.data, 'shuffle_buffer', 10_000))
  return TfdsSource(src, split, seed=seed, shuffle_buffer=buffer, **common)


def eval_examples(src, split, p, P):
  """(dataset of (image, label) of host p's share, every host's share size).

  The image is JPEG bytes for folder sources and JPEG tfds sets, else uint8.
  """
  if src.kind == 'tfds':
    splits = [tfds_host_split(split, i, P) for i in range(P)]
    sizes = [split_size(src, s) for s in splits]
    return tfds_raw(src, splits[p], shuffle_files=False, seed=0), sizes
  if src.kind == 'memory':
    images, labels = src.load_arrays(split)
  else:
    images, labels = src.load_paths(split)
  n = len(labels)
  sizes = [host_range(n, i, P)[1] - host_range(n, i, P)[0] for i in range(P)]
  lo, hi = host_range(n, p, P)
  raw = tf.data.Dataset.from_tensor_slices((images[lo:hi], labels[lo:hi]))
  if src.kind == 'folder':
    raw = raw.map(pp.no_autograph(lambda path, label: (tf.io.read_file(path), label)))
  return raw, sizes
