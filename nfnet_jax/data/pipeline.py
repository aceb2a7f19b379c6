"""Train and eval iterators (tf.data): one batch tail for every source.

``sources.py`` turns each kind of data (Fashion-MNIST idx arrays, an image
folder, a tfds builder) into a stream of raw examples; this module puts the
same tail on all of them:

  per-example crop / flip (/ RandAugment when ``data.augment_before_mix``)
  -> batch -> label check, one-hot, MixUp/CutMix (one XLA-fused pass)
  -> RandAugment on each mixed example (the official order,
     ``augment_before_mix=False``) -> normalise -> device layout -> prefetch.

In-memory sources without per-example work take a vectorised batch path
(pad-crop-flip on whole batches) into the same tail.

Determinism and resumption
--------------------------
Each host's share of the train split is visited in epochs. An epoch has
``steps_per_epoch = (num_train // process_count) // host_batch`` batches
(the remainder of the epoch is dropped). Step ``k`` is batch ``k %
steps_per_epoch`` of epoch ``k // steps_per_epoch``, so an iterator created at
``start_step=k`` starts at that epoch and skips the earlier batches of it:

* in-memory sources (Fashion-MNIST idx files) and image folders: the epoch
  order is a stateless permutation keyed on (seed, host, epoch); skipping
  only skips index batches.
* tfds sources: file order and the shuffle buffer are seeded from (seed, host,
  epoch); the skipped records are read but not decoded.

Augmentation randomness is keyed on (seed, host, epoch, position in epoch)
per example (crop, flip, RandAugment before or after mixing) and (seed, host,
step) per batch (MixUp/CutMix), via stateless TF random ops, so a resumed
iterator yields exactly the batches an uninterrupted one yields from step k
on. (Undecodable images are skipped and counted in ``decode_errors``; in a
run where some were skipped before step k the resumed stream is shifted by
that many examples.)
"""
import concurrent.futures
import math
from typing import Optional

import numpy as np
import tensorflow as tf

from nfnet_jax import errors
from nfnet_jax.data import datasets
from nfnet_jax.data import preprocess as pp
from nfnet_jax.data import sources
from nfnet_jax.data import tail as tail_lib

# TF must not take the accelerators from JAX (or reserve their memory).
try:
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
except (RuntimeError, ValueError):  # already initialised / no such type
  pass

_LABEL_ERROR = tail_lib.LABEL_ERROR
LAYOUTS = ('pmap', 'host')


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
    """Stops the iterator (and any background epoch start-up), now.

    The generator refers back to this object (decode-error counting), so
    without ``close`` only the cyclic garbage collector frees the tf.data
    iterator, often at interpreter exit, where its destructor waits for the
    pipeline's worker threads.
    """
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


def _primed_batches(streams, build, holder):
  """Numpy batches of each dataset of `streams`, through `build`.

  The next dataset's pipeline (a tfds epoch) is built and primed in a
  background thread while the current one runs, hiding its start-up (file
  open, shuffle-buffer fill, graph instantiation) from the training loop.
  """
  def start():
    ds = next(streams, None)
    if ds is None:
      return None
    it = _wrap_counted(build(ds).as_numpy_iterator(), holder)
    return it, next(it, None)

  pool = concurrent.futures.ThreadPoolExecutor(1)
  try:
    future = pool.submit(start)
    while True:
      started = future.result()
      if started is None:
        return
      future = pool.submit(start)
      it, first = started
      if first is not None:
        yield first
        yield from it
  finally:
    # Wait for a pipeline start in flight so no thread outlives close().
    pool.shutdown(wait=True, cancel_futures=True)


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
  src = datasets.get_source(config.data)
  split = src.split_name(config.data.train_split, 'data.train_split')
  source = sources.train_source(config, src, split, p=p, P=P,
                                host_batch=host_batch)
  settings = tail_lib.train_settings(config)
  tail = tail_lib.BatchTail(config, src, source, settings, p=p,
                            layout=layout, groups=L, per_device=per_device,
                            host_batch=host_batch)
  if tail_lib.uses_fast_path(source, settings):
    streams = iter([tail.fast_batches(start_step)])
    build = tail.batches
  else:
    streams = source.streams(start_step)
    build = lambda ds: tail.batches(tail.examples_to_batches(ds))
  holder = [None]
  it = DataIterator(_primed_batches(streams, build, holder),
                    steps_per_epoch=source.spe)
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
  raw, sizes = sources.eval_examples(src, split, p, P)
  num_batches = max(1, math.ceil(max(sizes) / host_batch))
  # Stored images already at the eval size need no resize.
  passthrough = (src.kind == 'memory' and src.fixed_size == (size, size) and
                 padding == 0)

  @pp.no_autograph
  def prep(pos, ex):
    image, label = ex
    if passthrough:
      img = tf.cast(image, tf.float32)
    else:
      img = pp.eval_image(image, size=size, jpeg=src.jpeg,
                          channels=src.channels, padding=padding, mode=mode,
                          method=method)
    img = pp.normalize(pp.to_channels(img, out_c), mean, std)
    return {'images': img, 'labels': tf.cast(label, tf.int32),
            'mask': tf.constant(1.0, tf.float32), '_pos': pos}

  ds = raw.enumerate().map(prep, num_parallel_calls=tail_lib.npc(d),
                           deterministic=True)
  ds = ds.ignore_errors()
  pad = tf.data.Dataset.from_tensors({
      'images': tf.zeros([size, size, out_c], tf.float32),
      'labels': tf.constant(0, tf.int32), 'mask': tf.constant(0.0),
      '_pos': tf.constant(-1, tf.int64)}).repeat()
  ds = ds.concatenate(pad).batch(host_batch).take(num_batches)

  @pp.no_autograph
  def finalize(b):
    labels = b['labels']
    ok = tf.reduce_all((labels >= 0) & (labels < num_classes))
    with tf.control_dependencies([tf.debugging.Assert(
        ok, [f'{_LABEL_ERROR}: data set {src.name!r} has eval labels '
             f'outside [0, {num_classes}); min/max in this batch:',
             tf.reduce_min(labels), tf.reduce_max(labels)])]):
      labels = tf.identity(labels)
    return {'images': tail_lib.layout_batch(b['images'], layout, L, per_device),
            'labels': tail_lib.layout_batch(labels, layout, L, per_device),
            'mask': tail_lib.layout_batch(b['mask'], layout, L, per_device),
            '_pos': b['_pos']}

  ds = ds.map(finalize, num_parallel_calls=tail_lib.npc(d), deterministic=True)
  ds = ds.prefetch(tail_lib.prefetch(d)).with_options(tail_lib.options(d))
  holder = [None]
  it = DataIterator(_wrap_counted(ds.as_numpy_iterator(), holder,
                                  total=sizes[p]),
                    num_batches=num_batches)
  holder[0] = it
  return it


# Names callers and tests use.
augment_before_mix = tail_lib.augment_before_mix
_folder_host_share = sources.folder_host_share
_normalize_fused = tail_lib._normalize_fused  # pylint: disable=protected-access
_mix_normalize_fused = tail_lib._mix_normalize_fused  # pylint: disable=protected-access
