"""The batch tail every train source shares (see ``pipeline.py``).

Per-example crop / flip (/ RandAugment when ``data.augment_before_mix``),
batching, the label check, one-hot labels, MixUp/CutMix (XLA-fused),
RandAugment on each mixed example (the official order), normalisation,
random erasing, the device layout and the prefetch, for the examples of any
``sources`` source.
"""
import tensorflow as tf

from nfnet_jax.data import datasets
from nfnet_jax.data import erasing
from nfnet_jax.data import mixing
from nfnet_jax.data import preprocess as pp
from nfnet_jax.data import randaugment
from nfnet_jax.data import sources

LABEL_ERROR = 'NFNET_LABEL_OUT_OF_RANGE'


def options(data_config):
  opts = tf.data.Options()
  opts.deterministic = True
  # One thread per op: the parallelism comes from tf.data map workers, and
  # intra-op threads would fight JAX for the cores.
  opts.threading.max_intra_op_parallelism = 1
  opts.experimental_optimization.map_parallelization = True
  return opts


def npc(data_config):
  n = datasets._get(data_config, 'num_parallel_calls', -1)
  return tf.data.AUTOTUNE if n in (-1, None) else int(n)


def layout_batch(x, layout, local_devices, per_device):
  if layout == 'pmap':
    return tf.reshape(x, [local_devices, per_device] + x.shape[1:].as_list())
  return x


def prefetch(data_config):
  return int(datasets._get(data_config, 'prefetch', 2)) or tf.data.AUTOTUNE


def augment_before_mix(data_config) -> bool:
  """``data.augment_before_mix`` (False, the official order, when unset)."""
  return bool(datasets._get(data_config, 'augment_before_mix', False))


def train_settings(config):
  """The per-example and after-mixing augmentation a config asks for.

  RandAugment runs per example before batching unless mixing is on and
  ``data.augment_before_mix`` is False; then it runs on each mixed example
  (``ra_after_mix``), as the official pipeline does. Without mixing the two
  orders are the same, and RandAugment stays per example.
  """
  d = config.data
  ra = None
  layers = int(datasets._get(d, 'randaugment_layers', 0) or 0)
  mode = datasets._get(d, 'randaugment_mode', 'official')
  if layers > 0:
    ra = randaugment.make_randaugment(
        layers, float(datasets._get(d, 'randaugment_magnitude', 0)), mode)
  mixes = float(d.mixup_alpha or 0.0) > 0 or bool(d.cutmix)
  after = ra is not None and mixes and not augment_before_mix(d)
  return dict(size=int(d.image_size), crop=d.train_crop,
              padding=int(datasets._get(d, 'pad_crop_padding', 4)),
              flip=bool(d.random_flip),
              method=datasets._get(d, 'resize_method', 'bicubic') or 'bicubic',
              randaugment=None if after else ra,
              ra_after_mix=ra if after else None,
              round_half=mode != 'official')


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


@tf.function(jit_compile=True, autograph=False)
def _mix_to_uint8_fused(images, partner, lam, cut, round_half):
  """Mixed pixels as RandAugment takes them: clipped to [0, 255], then
  truncated (official, as the TPU code casts) or rounded ('increasing')."""
  x = tf.clip_by_value(mixing.mix_pixels(images, partner, lam, cut), 0., 255.)
  return tf.cast(tf.round(x) if round_half else x, tf.uint8)


class BatchTail:
  """What every train source shares after its examples: batch-level label
  check, channels, one-hot, MixUp/CutMix, RandAugment on the mixed examples,
  normalisation and the device layout."""

  def __init__(self, config, src, source, settings, *, p, layout, groups,
               per_device, host_batch):
    d = config.data
    self.src, self.source, self.settings = src, source, settings
    self.out_channels = datasets.output_channels(src, d)
    mean, std = src.mean, src.std
    if self.out_channels == 3 and len(mean) == 1:
      mean, std = mean * 3, std * 3
    self.mean, self.std = mean, std
    self.mix_key_seed = sources.seed_int(int(config.seed), p, 7)
    self.key_seed = sources.seed_int(int(config.seed), p, 1)
    self.mixup_alpha = float(d.mixup_alpha or 0.0)
    self.erase_prob = float(datasets._get(d, 'random_erase', 0.0) or 0.0)
    self.erase_area = tuple(datasets._get(d, 'random_erase_area', (0.02, 0.4)))
    self.erase_min_aspect = float(
        datasets._get(d, 'random_erase_min_aspect', 0.3))
    self.erase_key_seed = sources.seed_int(int(config.seed), p, 11)
    self.use_cutmix = bool(d.cutmix)
    self.layout, self.groups, self.per_device = layout, groups, per_device
    self.host_batch = host_batch
    self.npc, self.prefetch = npc(d), prefetch(d)
    self.options = options(d)
    # Traced once per iterator, not once per (tfds) epoch dataset.
    self.augment = tf.function(self._augment, autograph=False)
    self.finalize = tf.function(self._finalize, autograph=False)

  def example_key(self, gpos):
    """The per-example key: (seed, host, epoch, position in epoch)."""
    n = self.source.epoch_len
    return pp.make_key(self.key_seed, gpos // n, gpos % n)

  def _augment(self, gpos, ref):
    image, label = self.source.load(ref)
    s = self.settings
    img = pp.train_image(image, self.example_key(gpos), size=s['size'],
                         jpeg=self.source.jpeg, channels=self.source.channels,
                         crop=s['crop'], padding=s['padding'], flip=s['flip'],
                         method=s['method'], randaugment=s['randaugment'])
    return gpos, img, label

  def _check_labels(self, labels):
    labels = tf.cast(labels, tf.int32)
    if not self.source.check_labels:
      return labels
    n = self.src.num_classes
    ok = tf.reduce_all((labels >= 0) & (labels < n))
    with tf.control_dependencies([tf.debugging.Assert(
        ok, [f'{LABEL_ERROR}: data set {self.src.name!r} has labels outside '
             f'[0, {n}); min/max in this batch:',
             tf.reduce_min(labels), tf.reduce_max(labels)])]):
      return tf.identity(labels)

  def _finalize(self, gpos, images, labels):
    """Batch-level work up to (and, unless RandAugment follows, including)
    normalisation. The batch's step comes from its first position, so the
    mixing keys stay tied to the stream position (exact on resumption)."""
    step = gpos[0] // self.host_batch
    labels = self._check_labels(labels)
    images = pp.to_channels(images, self.out_channels)
    onehot = tf.one_hot(labels, self.src.num_classes, dtype=tf.float32)
    b, h, w = images.shape[0], images.shape[1], images.shape[2]
    weights = mixing.mix_weights(pp.make_key(self.mix_key_seed, step), b, h, w,
                                 mixup_alpha=self.mixup_alpha,
                                 use_cutmix=self.use_cutmix, groups=self.groups)
    mean = tf.constant(self.mean, tf.float32)
    std = tf.constant(self.std, tf.float32)
    if weights is None:
      return self._out(gpos, _normalize_fused(images, mean, std), onehot)
    partner, lam, cut, keep = weights
    onehot = mixing.mix_labels(onehot, partner, keep)
    if self.settings['ra_after_mix'] is not None:
      mixed = _mix_to_uint8_fused(images, partner, lam, cut,
                                  self.settings['round_half'])
      # The official order: RandAugment each mixed example, keyed as its
      # own RandAugment would be before mixing. Looping over the batch here
      # rather than unbatching into a dataset stage and rebatching saves
      # two copies of every image and a pipeline stage.
      augmented = tf.map_fn(self._ra_after, (mixed, gpos),
                            fn_output_signature=tf.uint8)
      return self._out(gpos, _normalize_fused(augmented, mean, std), onehot)
    images = _mix_normalize_fused(images, partner, lam, cut, mean, std)
    return self._out(gpos, images, onehot)

  def _ra_after(self, image_and_pos):
    """RandAugment on one mixed example, keyed as the example's own
    RandAugment would be before mixing."""
    image, gpos = image_and_pos
    key = pp.fold_in(self.example_key(gpos), 3)
    return self.settings['ra_after_mix'](image, key)

  def _out(self, gpos, images, labels):
    """Normalised images -> random erasing (if on) -> the device layout."""
    if self.erase_prob > 0:
      step = gpos[0] // self.host_batch
      images = erasing.random_erase(
          images, pp.make_key(self.erase_key_seed, step), prob=self.erase_prob,
          area=self.erase_area, min_aspect=self.erase_min_aspect,
          mean=self.mean, std=self.std)
    lay = lambda x: layout_batch(x, self.layout, self.groups, self.per_device)
    return {'images': lay(images), 'labels': lay(labels), '_pos': gpos}

  def examples_to_batches(self, ds):
    """(gpos, ref) examples -> augmented uint8 example batches."""
    ds = ds.map(self.augment, num_parallel_calls=self.npc, deterministic=True)
    if self.source.may_fail:
      ds = ds.ignore_errors()
    return ds.batch(self.host_batch, drop_remainder=True)

  def fast_batches(self, start_step):
    """In-memory index batches -> vectorised pad-crop-flip batches."""
    s, src = self.settings, self.source
    padding = s['padding'] if s['crop'] == 'pad_crop' else 0

    @pp.no_autograph
    def make_batch(step, idx):
      x, y = src.load(idx)
      x = pp.batch_pad_crop_flip(
          x, pp.make_key(src.key_seed, step, 1), size=s['size'],
          padding=padding, flip=s['flip'], method=s['method'])
      return sources.batch_positions(step, self.host_batch), x, y

    return src.index_batches(start_step).map(
        make_batch, num_parallel_calls=self.npc, deterministic=True)

  def batches(self, ds):
    """Augmented example batches -> the train loop's batches."""
    ds = ds.map(self.finalize, num_parallel_calls=self.npc, deterministic=True)
    return ds.prefetch(self.prefetch).with_options(self.options)


def uses_fast_path(source, settings):
  """In-memory data with no per-example work: whole batches at once."""
  return (isinstance(source, sources.MemorySource) and
          settings['crop'] in ('pad_crop', 'none') and
          settings['randaugment'] is None)
