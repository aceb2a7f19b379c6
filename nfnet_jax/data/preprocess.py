"""Image preprocessing in TensorFlow: crops, flips, resizes, normalisation.

Per-example functions take either encoded JPEG bytes (`jpeg=True`, decoded
with `decode_and_crop_jpeg` so only the crop window is decoded) or a decoded
uint8 image [H, W, C]. Every random choice takes an explicit stateless key
(an int64 tensor of shape [2]) so results depend only on (seed, position),
which is what makes resumption exact.

Pixel values stay in [0, 255] until `normalize`.
"""
import tensorflow as tf

_METHODS = {
    'bicubic': tf.image.ResizeMethod.BICUBIC,
    'bilinear': tf.image.ResizeMethod.BILINEAR,
    'area': tf.image.ResizeMethod.AREA,
    'nearest': tf.image.ResizeMethod.NEAREST_NEIGHBOR,
}

# tf.data runs a plain Python function given to `map` / `flat_map` through
# AutoGraph first. The data functions here are straight-line TF ops (no
# Python control flow on tensors), so the conversion only costs start-up
# time (23 functions converted per train + eval pipeline; < 0.5 CPU-s,
# 2.4 s under cProfile). Every such function is decorated with this.
no_autograph = tf.autograph.experimental.do_not_convert


def fold_in(key, data):
  """Derives an independent stateless key from `key` and an integer."""
  return tf.random.experimental.stateless_fold_in(
      tf.cast(key, tf.int64), tf.cast(data, tf.int64))


def make_key(seed, *data):
  """Key for stateless ops from a base seed folded with integers in order."""
  key = tf.stack([tf.constant(0, tf.int64), tf.cast(seed, tf.int64)])
  for d in data:
    key = fold_in(key, d)
  return key


def box_mask(y1, y2, x1, x2, h, w):
  """bool [n, h, w]: True inside each example's box rows [y1, y2) and
  columns [x1, x2) (int32 [n] each) of an h x w image."""
  ys = tf.range(h)[None, :]
  xs = tf.range(w)[None, :]
  in_y = (ys >= y1[:, None]) & (ys < y2[:, None])   # [n, h]
  in_x = (xs >= x1[:, None]) & (xs < x2[:, None])   # [n, w]
  return in_y[:, :, None] & in_x[:, None, :]


def image_hw(image, jpeg):
  """(height, width) int32 of JPEG bytes (header only) or a decoded image."""
  if jpeg:
    return tf.image.extract_jpeg_shape(image)[:2]
  return tf.shape(image)[:2]


def crop_window(image, window, jpeg, channels):
  """Crops window [y, x, h, w]; for JPEG bytes decodes only that window."""
  window = tf.cast(window, tf.int32)
  if jpeg:
    return tf.image.decode_and_crop_jpeg(image, window, channels=channels)
  return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2],
                                       window[3])


def decode_full(image, jpeg, channels):
  if jpeg:
    return tf.io.decode_jpeg(image, channels=channels)
  return image


def resize(image, size, method='bicubic'):
  """Resizes to [size, size] (float32 output clipped to [0, 255]).

  Bicubic overshoots; clipping keeps values in the pixel range so that the
  normalised range is predictable and RandAugment's uint8 cast is exact.
  """
  out = tf.image.resize(tf.cast(image, tf.float32), [size, size],
                        method=_METHODS[method], antialias=False)
  return tf.clip_by_value(out, 0.0, 255.0)


def center_window(hw, size, padding):
  """Centre crop window keeping aspect: the crop is `size/(size+padding)` of
  the short side (the NFNet/ResNet eval convention)."""
  h = tf.cast(hw[0], tf.float32)
  w = tf.cast(hw[1], tf.float32)
  scale = tf.minimum(h, w) / float(size + padding)
  ch = tf.maximum(tf.cast(scale * size, tf.int32), 1)
  cw = ch
  oy = (tf.cast(hw[0], tf.int32) - ch + 1) // 2
  ox = (tf.cast(hw[1], tf.int32) - cw + 1) // 2
  return tf.stack([oy, ox, ch, cw])


def inception_crop(image, key, *, size, jpeg, channels, method='bicubic',
                   area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3),
                   max_attempts=10, fallback_padding=32):
  """Inception-style random resized crop with a centre-crop fallback.

  Samples a window covering `area_range` of the image with aspect ratio in
  `aspect_range` (and at least 10% of the full-image box, as in the official
  pipeline); if no window is found within `max_attempts` the sampler returns
  the whole image, and we then take a centre crop (`size/(size+32)` of the
  short side) instead.
  """
  hw = image_hw(image, jpeg)
  shape3 = tf.concat([hw, [channels]], axis=0)
  bbox = tf.constant([[[0.0, 0.0, 1.0, 1.0]]], tf.float32)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape3, bbox, seed=key, min_object_covered=0.1,
      aspect_ratio_range=aspect_range, area_range=area_range,
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  failed = tf.reduce_all(tf.equal(crop_size[:2], hw))
  window = tf.where(failed, center_window(hw, size, fallback_padding), window)
  return resize(crop_window(image, window, jpeg, channels), size, method)


def random_flip(image, key):
  """Flips [H, W, C] left-right with probability 1/2."""
  flip = tf.random.stateless_uniform([], key) < 0.5
  return tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)


def pad_crop(image, key, *, size, padding):
  """Zero-pads by `padding` on each side, then takes a random size x size
  crop (the CIFAR-style small-image augmentation). Input [size, size, C]."""
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  offs = tf.random.stateless_uniform([2], key, 0, 2 * padding + 1, tf.int32)
  return tf.image.crop_to_bounding_box(padded, offs[0], offs[1], size, size)


def _to_uint8(x):
  """Rounds a [0, 255] float image to uint8 (identity for uint8)."""
  if x.dtype == tf.uint8:
    return x
  return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)


def train_image(image, key, *, size, jpeg, channels, crop='inception',
                padding=4, flip=True, method='bicubic', randaugment=None):
  """Per-example train preprocessing; returns uint8 [size, size, C].

  The output is uint8 (rounded once after the resize, as PIL-based
  pipelines do, or converted by RandAugment): batching and the batch-level
  ops then move a quarter of the bytes, and the single cast to float32
  happens in the batch finalisation (mixing + normalisation).

  Args:
    image: JPEG bytes (jpeg=True) or uint8 [H, W, C].
    key: int64 [2] stateless key for this example.
    size: output resolution.
    jpeg: whether `image` is encoded JPEG.
    channels: channels to decode.
    crop: 'inception' | 'pad_crop' | 'none'.
    padding: pad_crop padding.
    flip: random horizontal flip.
    method: resize method name.
    randaugment: None or a callable (float image, key) -> uint8 image that
      does its own float -> uint8 conversion (see `randaugment.to_uint8`).
  """
  k_crop, k_flip, k_ra = fold_in(key, 1), fold_in(key, 2), fold_in(key, 3)
  if crop == 'inception':
    out = inception_crop(image, k_crop, size=size, jpeg=jpeg,
                         channels=channels, method=method)
  else:
    out = decode_full(image, jpeg, channels)
    hw = tf.shape(out)[:2]
    out = tf.cond(tf.reduce_all(tf.equal(hw, [size, size])),
                  lambda: tf.cast(out, tf.float32),
                  lambda: resize(out, size, method))
    if crop == 'pad_crop' and padding > 0:
      out = pad_crop(out, k_crop, size=size, padding=padding)
  if randaugment is None:
    out = _to_uint8(out)
  if flip:
    out = random_flip(out, k_flip)
  if randaugment is not None:
    # RandAugment converts to uint8 itself, as its mode prescribes (the
    # official TPU code truncates, 'increasing' rounds).
    out = randaugment(out, k_ra)
  out = tf.ensure_shape(out, [size, size, channels])
  return out


def eval_image(image, *, size, jpeg, channels, padding=32, mode='squash',
               method='bicubic'):
  """Per-example eval preprocessing; returns float32 [size, size, C].

  mode 'squash': resize (ignoring aspect) to size+padding, then centre crop
    size (the NFNet eval). With padding 0 this is a plain resize.
  mode 'aspect': centre crop `size/(size+padding)` of the short side keeping
    the aspect ratio, then resize to size (= aspect-preserving resize to
    size+padding on the short side followed by a centre crop).
  """
  if mode == 'squash':
    full = decode_full(image, jpeg, channels)
    big = resize(full, size + padding, method)
    off = padding // 2
    out = big[off:off + size, off:off + size, :]
  elif mode == 'aspect':
    hw = image_hw(image, jpeg)
    out = resize(crop_window(image, center_window(hw, size, padding), jpeg,
                             channels), size, method)
  else:
    raise ValueError(f'config.data.eval_resize={mode!r}: expected squash or '
                     'aspect')
  return tf.ensure_shape(out, [size, size, channels])


def batch_pad_crop_flip(images, key, *, size, padding, flip,
                        method='bilinear'):
  """Vectorised pad-and-crop + flip for a uint8 batch [B, H, W, C].

  Gathers rows and columns with per-example offsets instead of cropping one
  example at a time, so a 28x28 batch costs a few array ops.
  Returns float32 [B, size, size, C] in [0, 255].
  """
  x = images
  if x.shape[1] != size or x.shape[2] != size:
    x = resize(x, size, method)
  else:
    x = tf.cast(x, tf.float32)
  b = tf.shape(x)[0]
  if padding > 0:
    x = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offs = tf.random.stateless_uniform([b, 2], fold_in(key, 1), 0,
                                       2 * padding + 1, tf.int32)
    rows = offs[:, :1] + tf.range(size)[None, :]
    cols = offs[:, 1:] + tf.range(size)[None, :]
    x = tf.gather(x, rows, axis=1, batch_dims=1)
    x = tf.gather(x, cols, axis=2, batch_dims=1)
  if flip:
    do = tf.random.stateless_uniform([b], fold_in(key, 2)) < 0.5
    x = tf.where(do[:, None, None, None], tf.reverse(x, [2]), x)
  return x


def normalize(images, mean, std):
  """(x - mean) / std per channel, float32; mean/std in [0, 255] units."""
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (tf.cast(images, tf.float32) - mean) / std


def to_channels(images, channels):
  """Tiles a 1-channel image/batch to 3 channels when channels == 3."""
  if channels == 3 and images.shape[-1] == 1:
    return tf.tile(images, [1] * (images.shape.rank - 1) + [3])
  return images
