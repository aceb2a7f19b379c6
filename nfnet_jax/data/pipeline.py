"""Train and eval iterators (tf.data) for every data source.

Determinism and resumption
--------------------------
Each host's share of the train split is visited in epochs. An epoch has
``steps_per_epoch = (num_train // process_count) // host_batch`` batches
(the remainder of the epoch is dropped). Step ``k`` is batch ``k %
steps_per_epoch`` of epoch ``k // steps_per_epoch``, so an iterator created at
``start_step=k`` starts at that epoch and skips the earlier batches of it:

* in-memory sources (Fashion-MNIST idx files): the epoch order is a stateless
  permutation keyed on (seed, host, epoch); skipping only skips index batches.
* tfds sources: file order and the shuffle buffer are seeded from (seed, host,
  epoch); the skipped records are read but not decoded.

Augmentation randomness is keyed on (seed, host, epoch, position in epoch)
per example and (seed, host, step) per batch (MixUp/CutMix), via stateless
TF random ops, so a resumed iterator yields exactly the batches an
uninterrupted one yields from step k on. (Undecodable images are skipped and
counted in ``decode_errors``; in a run where some were skipped before step k
the resumed stream is shifted by that many examples.)
"""
import concurrent.futures
import itertools
import math
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from nfnet_jax import errors
from nfnet_jax.data import datasets
from nfnet_jax.data import mixing
from nfnet_jax.data import preprocess as pp

# TF must not take the accelerators from JAX (or reserve their memory).
try:
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
except (RuntimeError, ValueError):  # already initialised / no such type
  pass

_LABEL_ERROR = 'NFNET_LABEL_OUT_OF_RANGE'
LAYOUTS = ('pmap', 'host')


def _seed_int(*parts) -> int:
  """A 31-bit Python int seed from integers (for tfds/tf.data seed args)."""
  return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
             .generate_state(1)[0] & 0x7FFFFFFF)


def _jax_topology(process_index, process_count, local_device_count):
  if None in (process_index, process_count, local_device_count):
    import jax  # pylint: disable=g-import-not-at-top
    if process_index is None:
      process_index = jax.process_index()
    if process_count is None:
      process_count = jax.process_count()
    if local_device_count is None:
      local_device_count = jax.local_device_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in '
                     f'[0, process_count={process_count})')
  return process_index, process_count, local_device_count


def batch_geometry(batch_size, field, process_count, local_device_count):
  """Returns (host_batch, per_device_batch) or raises a ValueError."""
  devices = process_count * local_device_count
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0 or \
      batch_size % devices:
    raise ValueError(
        f'config.{field}={batch_size!r} must be a positive multiple of the '
        f'number of devices, {devices} ({process_count} process(es) x '
        f'{local_device_count} local device(s)), so every device gets the '
        'same per-device batch')
  host_batch = batch_size // process_count
  return host_batch, host_batch // local_device_count


def _options(data_config):
  opts = tf.data.Options()
  opts.deterministic = True
  # One thread per op: the parallelism comes from tf.data map workers, and
  # intra-op threads would fight JAX for the cores.
  opts.threading.max_intra_op_parallelism = 1
  opts.experimental_optimization.map_parallelization = True
  return opts


def _npc(data_config):
  n = datasets._get(data_config, 'num_parallel_calls', -1)
  return tf.data.AUTOTUNE if n in (-1, None) else int(n)


def _layout(x, layout, local_devices, per_device):
  if layout == 'pmap':
    return tf.reshape(x, [local_devices, per_device] + x.shape[1:].as_list())
  return x


class DataIterator:
  """Python iterator over numpy batches with a decode-error counter.

  Attributes:
    decode_errors: undecodable examples skipped so far (train: counted from
      gaps in the example positions; eval likewise).
    steps_per_epoch: train batches per epoch (None for eval).
    num_batches: eval batches (None for train: infinite).
  """

  def __init__(self, gen, steps_per_epoch=None, num_batches=None):
    self._gen = gen
    self.decode_errors = 0
    self.steps_per_epoch = steps_per_epoch
    self.num_batches = num_batches

  def __iter__(self):
    return self

  def close(self):
    """Stops the iterator (and any background epoch start-up)."""
    if hasattr(self._gen, 'close'):
      self._gen.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __next__(self):
    try:
      batch = next(self._gen)
    except tf.errors.InvalidArgumentError as e:
      if _LABEL_ERROR in str(e):
        msg = str(e).split(_LABEL_ERROR, 1)[1].split('\n')[0]
        raise errors.DataError('label out of range: ' + msg.strip(' :')) from None
      raise
    return batch


def _wrap_counted(it, data_iter_ref, batch_examples_key='_pos', total=None):
  """Yields batches without the position key, updating decode_errors.

  Gaps in the positions only show errors before the last good example; with
  ``total`` (the examples the stream holds, eval) the exhausted stream also
  counts undecodable examples at its very end.
  """
  expected_next = None
  seen = 0
  for batch in it:
    pos = batch.pop(batch_examples_key)
    pos = pos[pos >= 0]
    if pos.size:
      if expected_next is None:
        expected_next = int(pos.min())
      gap = int(pos.max()) + 1 - expected_next - pos.size
      data_iter_ref[0].decode_errors += max(gap, 0)
      expected_next = int(pos.max()) + 1
      seen += pos.size
    yield batch
  if total is not None:
    data_iter_ref[0].decode_errors = max(data_iter_ref[0].decode_errors,
                                         int(total) - seen)


def _train_settings(config):
  d = config.data
  ra = None
  layers = int(datasets._get(d, 'randaugment_layers', 0) or 0)
  if layers > 0:
    from nfnet_jax.data import randaugment  # pylint: disable=g-import-not-at-top
    ra = randaugment.make_randaugment(
        layers, float(datasets._get(d, 'randaugment_magnitude', 0)),
        datasets._get(d, 'randaugment_mode', 'official'))
  return dict(size=int(d.image_size), crop=d.train_crop,
              padding=int(datasets._get(d, 'pad_crop_padding', 4)),
              flip=bool(d.random_flip),
              method=datasets._get(d, 'resize_method', 'bicubic') or 'bicubic',
              randaugment=ra)


# The batch-level pixel work (uint8 -> float, MixUp/CutMix, normalisation)
# is XLA-compiled: TF would run each elementwise op as its own pass over the
# batch (64 x 224 x 224 x 3 floats = 38 MB per pass); fused it is one or two.
# Measured on a 64 x 224 px batch, one thread: normalisation 29 -> 7 ms,
# mixing + normalisation 48 -> 8 ms of CPU time.
@tf.function(jit_compile=True, autograph=False)
def _normalize_fused(images, mean, std):
  return (tf.cast(images, tf.float32) - mean) / std


@tf.function(jit_compile=True, autograph=False)
def _mix_normalize_fused(images, partner, lam, cut, mean, std):
  return (mixing.mix_pixels(images, partner, lam, cut) - mean) / std


def _finalize_train(images, labels, step, *, src, out_channels, num_classes,
                    mix_key_seed, mixup_alpha, use_cutmix, groups, layout,
                    local_devices, per_device, check_labels):
  """Batch-level: label check, channels, normalise, one-hot, mix, layout."""
  labels = tf.cast(labels, tf.int32)
  if check_labels:
    ok = tf.reduce_all((labels >= 0) & (labels < num_classes))
    with tf.control_dependencies([tf.debugging.Assert(
        ok, [f'{_LABEL_ERROR}: data set {src.name!r} has labels outside '
             f'[0, {num_classes}); min/max in this batch:',
             tf.reduce_min(labels), tf.reduce_max(labels)])]):
      labels = tf.identity(labels)
  images = pp.to_channels(images, out_channels)
  mean, std = src.mean, src.std
  if out_channels == 3 and len(mean) == 1:
    mean, std = mean * 3, std * 3
  onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
  key = pp.make_key(mix_key_seed, step)
  b, h, w = images.shape[0], images.shape[1], images.shape[2]
  weights = mixing.mix_weights(key, b, h, w, mixup_alpha=mixup_alpha,
                               use_cutmix=use_cutmix, groups=groups)
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  if weights is None:
    images = _normalize_fused(images, mean, std)
  else:
    partner, lam, cut, keep = weights
    images = _mix_normalize_fused(images, partner, lam, cut, mean, std)
    onehot = mixing.mix_labels(onehot, partner, keep)
  return {'images': _layout(images, layout, local_devices, per_device),
          'labels': _layout(onehot, layout, local_devices, per_device)}


def train_iterator(config, *, start_step: int = 0, layout: str = 'pmap',
                   process_index: Optional[int] = None,
                   process_count: Optional[int] = None,
                   local_device_count: Optional[int] = None) -> DataIterator:
  """Infinite iterator of train batches (numpy dicts).

  Args:
    config: the full config (reads `data`, `seed`, `train.batch_size`).
    start_step: first global step to produce (resumption).
    layout: 'pmap' -> [local_devices, per_device_batch, ...]; 'host' ->
      [global_batch // process_count, ...].
    process_index, process_count, local_device_count: default to JAX's; pass
      them to simulate other hosts.

  Returns:
    DataIterator yielding {'images': float32 normalised, 'labels': float32
    soft targets [..., num_classes]}.
  """
  if layout not in LAYOUTS:
    raise ValueError(f'layout={layout!r}: expected one of {LAYOUTS}')
  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be >= 0')
  p, P, L = _jax_topology(process_index, process_count, local_device_count)
  host_batch, per_device = batch_geometry(config.train.batch_size,
                                          'train.batch_size', P, L)
  d = config.data
  src = datasets.get_source(d)
  split = src.split_name(d.train_split, 'data.train_split')
  out_c = datasets.output_channels(src, d)
  seed = int(config.seed)
  common = dict(src=src, out_channels=out_c, num_classes=src.num_classes,
                mix_key_seed=_seed_int(seed, p, 7),
                mixup_alpha=float(d.mixup_alpha or 0.0),
                use_cutmix=bool(d.cutmix), groups=L, layout=layout,
                local_devices=L, per_device=per_device)
  settings = _train_settings(config)
  if src.kind == 'memory':
    return _memory_train(config, src, split, settings, common, seed, p, P,
                         host_batch, start_step)
  if src.kind == 'folder':
    return _folder_train(config, src, split, settings, common, seed, p, P,
                         host_batch, start_step)
  return _tfds_train(config, src, split, settings, common, seed, p, P,
                     host_batch, start_step)


def _host_range(n, p, P):
  """[start, end) of host p's contiguous share (np.array_split sizes)."""
  base, extra = divmod(n, P)
  start = p * base + min(p, extra)
  return start, start + base + (1 if p < extra else 0)


def _memory_train(config, src, split, settings, common, seed, p, P,
                  host_batch, start_step):
  d = config.data
  images, labels = src.load_arrays(split)
  n = images.shape[0]
  lo, hi = _host_range(n, p, P)
  n_host = hi - lo
  spe = (n // P) // host_batch
  if spe == 0:
    raise ValueError(
        f'config.train.batch_size={config.train.batch_size}: the per-host '
        f'batch {host_batch} is larger than the per-host share of '
        f'{src.name}:{split} ({n // P} examples)')
  host_images = tf.constant(images[lo:hi])
  host_labels = tf.constant(labels[lo:hi])
  key_seed = _seed_int(seed, p, 1)
  size = settings['size']
  fast = (settings['crop'] in ('pad_crop', 'none') and
          settings['randaugment'] is None)
  ds = _index_batches(n_host, spe, host_batch, key_seed, start_step)

  if fast:
    padding = settings['padding'] if settings['crop'] == 'pad_crop' else 0

    def make_batch(step, idx):
      x = tf.gather(host_images, idx)
      y = tf.gather(host_labels, idx)
      x = pp.batch_pad_crop_flip(
          x, pp.make_key(key_seed, step, 1), size=size, padding=padding,
          flip=settings['flip'], method=settings['method'])
      return _finalize_train(x, y, step, check_labels=False, **common)

    ds = ds.map(make_batch, num_parallel_calls=_npc(d), deterministic=True)
  else:
    def augment(step, epoch, pos, idx):
      key = pp.make_key(key_seed, epoch, pos)
      img = pp.train_image(tf.gather(host_images, idx), key, size=size,
                           jpeg=False, channels=src.channels,
                           crop=settings['crop'], padding=settings['padding'],
                           flip=settings['flip'], method=settings['method'],
                           randaugment=settings['randaugment'])
      return step, img, tf.gather(host_labels, idx)

    ds = _index_examples(ds, spe, host_batch)
    ds = ds.map(augment, num_parallel_calls=_npc(d), deterministic=True)
    ds = ds.batch(host_batch, drop_remainder=True)
    ds = ds.map(lambda s, x, y: _finalize_train(x, y, s[0], check_labels=False,
                                                **common),
                num_parallel_calls=_npc(d), deterministic=True)
  ds = ds.prefetch(int(datasets._get(d, 'prefetch', 2)) or tf.data.AUTOTUNE)
  ds = ds.with_options(_options(d))
  return DataIterator(ds.as_numpy_iterator(), steps_per_epoch=spe)


def _index_batches(n_host, spe, host_batch, key_seed, start_step):
  """(step, indices [host_batch]) for each train step from `start_step` on.

  Epoch e visits a stateless permutation of the host's `n_host` examples
  keyed on (key_seed, e); resuming skips whole index batches (nothing read).
  """
  start_epoch, start_batch = divmod(start_step, spe)

  def epoch_batches(epoch):
    key = pp.make_key(key_seed, epoch)
    perm = tf.argsort(tf.random.stateless_uniform([n_host], key),
                      stable=True)
    perm = tf.reshape(perm[:spe * host_batch], [spe, host_batch])
    steps = epoch * spe + tf.range(spe, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((steps, perm))

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches)
  return ds.skip(start_batch)


def _index_examples(ds, spe, host_batch):
  """(step, index) batches -> (step, epoch, position in epoch, index)."""
  def per_example(step, idx):
    epoch = step // spe
    pos = (step % spe) * host_batch + tf.range(host_batch, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices(
        (tf.fill([host_batch], step), tf.fill([host_batch], epoch), pos, idx))
  return ds.flat_map(per_example)


def _folder_host_share(src, split, seed, p, P):
  """This host's (paths, labels) of an image-folder split.

  Hosts take disjoint slices of one seed-keyed shuffle of the sorted listing
  (a slice of the sorted listing itself would hold only some classes).
  """
  paths, labels = src.load_paths(split)
  n = len(paths)
  order = np.random.default_rng(_seed_int(seed, 5)).permutation(n)
  lo, hi = _host_range(n, p, P)
  return paths[order[lo:hi]], labels[order[lo:hi]], n


def _folder_train(config, src, split, settings, common, seed, p, P,
                  host_batch, start_step):
  d = config.data
  paths, labels, n = _folder_host_share(src, split, seed, p, P)
  spe = (n // P) // host_batch
  if spe == 0:
    raise ValueError(
        f'config.train.batch_size={config.train.batch_size}: the per-host '
        f'batch {host_batch} is larger than the per-host share of '
        f'{src.data_dir} split {split!r} ({n // P} examples)')
  host_paths, host_labels = tf.constant(paths), tf.constant(labels)
  key_seed = _seed_int(seed, p, 1)
  size = settings['size']

  def augment(step, epoch, pos, idx):
    key = pp.make_key(key_seed, epoch, pos)
    img = pp.train_image(tf.io.read_file(tf.gather(host_paths, idx)), key,
                         size=size, jpeg=True, channels=3,
                         crop=settings['crop'], padding=settings['padding'],
                         flip=settings['flip'], method=settings['method'],
                         randaugment=settings['randaugment'])
    # The position in the whole stream: gaps left by undecodable files are
    # counted (decode_errors) and batch steps stay tied to positions.
    return step * host_batch + pos % host_batch, img, tf.gather(host_labels, idx)

  def finalize(gpos, x, y):
    out = _finalize_train(x, y, gpos[0] // host_batch, check_labels=False,
                          **common)
    out['_pos'] = gpos
    return out

  ds = _index_examples(_index_batches(len(paths), spe, host_batch, key_seed,
                                      start_step), spe, host_batch)
  ds = ds.map(augment, num_parallel_calls=_npc(d), deterministic=True)
  ds = ds.ignore_errors()
  ds = ds.batch(host_batch, drop_remainder=True)
  ds = ds.map(finalize, num_parallel_calls=_npc(d), deterministic=True)
  ds = ds.prefetch(int(datasets._get(d, 'prefetch', 2)) or tf.data.AUTOTUNE)
  ds = ds.with_options(_options(d))
  holder = [None]
  it = DataIterator(_wrap_counted(ds.as_numpy_iterator(), holder),
                    steps_per_epoch=spe)
  holder[0] = it
  return it


def _tfds_host_split(src, split, p, P):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if P == 1:
    return split
  return tfds.even_splits(split, n=P, drop_remainder=False)[p]


def _split_size(src, split):
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


def _tfds_raw(src, split, *, shuffle_files, seed):
  """(image (bytes if JPEG else uint8), label) dataset of a tfds split."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  decoders = {src.image_key: tfds.decode.SkipDecoding()} if src.jpeg else None
  ds = src.builder.as_dataset(split=split, shuffle_files=shuffle_files,
                              decoders=decoders,
                              read_config=_tfds_read_config(seed))
  return ds.map(lambda ex: (ex[src.image_key], ex[src.label_key]))


def _tfds_train(config, src, split, settings, common, seed, p, P, host_batch,
                start_step):
  d = config.data
  sizes = [_split_size(src, _tfds_host_split(src, split, i, P))
           for i in range(P)]
  spe = min(sizes) // host_batch
  if spe == 0:
    raise ValueError(
        f'config.train.batch_size={config.train.batch_size}: the per-host '
        f'batch {host_batch} is larger than the per-host share of '
        f'{src.name}:{split} ({min(sizes)} examples)')
  host_split = _tfds_host_split(src, split, p, P)
  start_epoch, start_batch = divmod(start_step, spe)
  key_seed = _seed_int(seed, p, 1)
  size, channels = settings['size'], src.channels
  buffer = int(datasets._get(d, 'shuffle_buffer', 10_000))

  # The per-example and per-batch functions are traced once per iterator
  # (epoch is an argument), not once per epoch pipeline.
  @tf.function(autograph=False)
  def augment(epoch, pos, image, label):
    key = pp.make_key(key_seed, epoch, pos)
    img = pp.train_image(image, key, size=size, jpeg=src.jpeg,
                         channels=channels, crop=settings['crop'],
                         padding=settings['padding'], flip=settings['flip'],
                         method=settings['method'],
                         randaugment=settings['randaugment'])
    return pos, img, label

  @tf.function(autograph=False)
  def finalize(epoch, pos, x, y):
    # The step of a batch comes from its first position, so mixing keys stay
    # tied to the stream position (exact on resumption).
    step = epoch * spe + pos[0] // host_batch
    out = _finalize_train(x, y, step, check_labels=True, **common)
    out['_pos'] = pos
    return out

  def epoch_dataset(epoch, skip_batches):
    eseed = _seed_int(seed, p, epoch, 3)
    e = tf.constant(epoch, tf.int64)
    ds = _tfds_raw(src, host_split, shuffle_files=True, seed=eseed)
    ds = ds.shuffle(buffer, seed=eseed, reshuffle_each_iteration=False)
    ds = ds.take(spe * host_batch).enumerate()
    ds = ds.skip(skip_batches * host_batch)
    ds = ds.map(lambda pos, ex: augment(e, pos, ex[0], ex[1]),
                num_parallel_calls=_npc(d), deterministic=True)
    ds = ds.ignore_errors()
    ds = ds.batch(host_batch, drop_remainder=True)
    ds = ds.map(lambda pos, x, y: finalize(e, pos, x, y),
                num_parallel_calls=_npc(d), deterministic=True)
    ds = ds.prefetch(int(datasets._get(d, 'prefetch', 2)) or tf.data.AUTOTUNE)
    return ds.with_options(_options(d))

  def start(epoch):
    """Builds epoch `epoch`'s pipeline and fetches its first batch."""
    skip = start_batch if epoch == start_epoch else 0
    it = _wrap_counted(epoch_dataset(epoch, skip).as_numpy_iterator(), holder)
    return it, next(it, None)

  def gen():
    # The next epoch's pipeline is built and primed in a background thread
    # while this epoch runs, hiding its start-up (file open, shuffle-buffer
    # fill, graph instantiation) from the training loop.
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
      future = pool.submit(start, start_epoch)
      for epoch in itertools.count(start_epoch):
        it, first = future.result()
        future = pool.submit(start, epoch + 1)
        if first is not None:
          yield first
          yield from it
    finally:
      # Wait for a pipeline start in flight so no thread outlives close().
      pool.shutdown(wait=True, cancel_futures=True)

  holder = [None]
  it = DataIterator(gen(), steps_per_epoch=spe)
  holder[0] = it
  return it


def eval_iterator(config, *, layout: str = 'pmap',
                  image_size: Optional[int] = None,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None,
                  local_device_count: Optional[int] = None,
                  split: Optional[str] = None) -> DataIterator:
  """One pass over this host's share of the eval split, padded and masked.

  Every host yields the same number of batches (so collectives line up);
  padding examples have mask 0, zero images and label 0.

  Args:
    config: the full config (reads `data`, `train.eval_batch_size`).
    layout: as in `train_iterator`.
    image_size: eval resolution (default config.data.eval_image_size).
    process_index, process_count, local_device_count: as in train_iterator.
    split: the split spec to read (default ``config.data.eval_split``; the
      evaluator passes ``data.train_eval_split`` to measure train top-1 with
      the eval preprocessing).

  Returns:
    DataIterator of {'images' float32, 'labels' int32, 'mask' float32}.
  """
  if layout not in LAYOUTS:
    raise ValueError(f'layout={layout!r}: expected one of {LAYOUTS}')
  p, P, L = _jax_topology(process_index, process_count, local_device_count)
  host_batch, per_device = batch_geometry(config.train.eval_batch_size,
                                          'train.eval_batch_size', P, L)
  d = config.data
  src = datasets.get_source(d)
  split = src.split_name(split or d.eval_split, 'data.eval_split' if split is None
                         else 'data.train_eval_split')
  size = int(image_size or datasets._get(d, 'eval_image_size') or
             d.image_size)
  out_c = datasets.output_channels(src, d)
  padding = int(datasets._get(d, 'eval_crop_padding', 32))
  mode = datasets._get(d, 'eval_resize', 'squash')
  method = datasets._get(d, 'resize_method', 'bicubic') or 'bicubic'
  mean, std = src.mean, src.std
  if out_c == 3 and len(mean) == 1:
    mean, std = mean * 3, std * 3
  num_classes = src.num_classes

  if src.kind == 'memory':
    images, labels = src.load_arrays(split)
    n = images.shape[0]
    sizes = [_host_range(n, i, P)[1] - _host_range(n, i, P)[0]
             for i in range(P)]
    lo, hi = _host_range(n, p, P)
    raw = tf.data.Dataset.from_tensor_slices((images[lo:hi], labels[lo:hi]))
    jpeg = False
  elif src.kind == 'folder':
    paths, labels = src.load_paths(split)
    n = len(paths)
    sizes = [_host_range(n, i, P)[1] - _host_range(n, i, P)[0]
             for i in range(P)]
    lo, hi = _host_range(n, p, P)
    raw = tf.data.Dataset.from_tensor_slices((paths[lo:hi], labels[lo:hi]))
    raw = raw.map(lambda path, label: (tf.io.read_file(path), label))
    jpeg = True
  else:
    splits = [_tfds_host_split(src, split, i, P) for i in range(P)]
    sizes = [_split_size(src, s) for s in splits]
    raw = _tfds_raw(src, splits[p], shuffle_files=False, seed=0)
    jpeg = src.jpeg
  num_batches = max(1, math.ceil(max(sizes) / host_batch))

  def prep(pos, ex):
    image, label = ex
    if src.kind == 'memory' and src.fixed_size == (size, size) and \
        padding == 0:
      img = tf.cast(image, tf.float32)
    else:
      img = pp.eval_image(image, size=size, jpeg=jpeg,
                          channels=src.channels, padding=padding, mode=mode,
                          method=method)
    img = pp.normalize(pp.to_channels(img, out_c), mean, std)
    return {'images': img, 'labels': tf.cast(label, tf.int32),
            'mask': tf.constant(1.0, tf.float32), '_pos': pos}

  ds = raw.enumerate().map(prep, num_parallel_calls=_npc(d),
                           deterministic=True)
  ds = ds.ignore_errors()
  pad = tf.data.Dataset.from_tensors({
      'images': tf.zeros([size, size, out_c], tf.float32),
      'labels': tf.constant(0, tf.int32), 'mask': tf.constant(0.0),
      '_pos': tf.constant(-1, tf.int64)}).repeat()
  ds = ds.concatenate(pad).batch(host_batch).take(num_batches)

  def finalize(b):
    labels = b['labels']
    ok = tf.reduce_all((labels >= 0) & (labels < num_classes))
    with tf.control_dependencies([tf.debugging.Assert(
        ok, [f'{_LABEL_ERROR}: data set {src.name!r} has eval labels '
             f'outside [0, {num_classes}); min/max in this batch:',
             tf.reduce_min(labels), tf.reduce_max(labels)])]):
      labels = tf.identity(labels)
    return {'images': _layout(b['images'], layout, L, per_device),
            'labels': _layout(labels, layout, L, per_device),
            'mask': _layout(b['mask'], layout, L, per_device),
            '_pos': b['_pos']}

  ds = ds.map(finalize, num_parallel_calls=_npc(d), deterministic=True)
  ds = ds.prefetch(2).with_options(_options(d))
  holder = [None]
  it = DataIterator(_wrap_counted(ds.as_numpy_iterator(), holder,
                                  total=sizes[p]),
                    num_batches=num_batches)
  holder[0] = it
  return it
