"""RandAugment (Cubuk et al. 2020) in TensorFlow with stateless randomness.

The op set is the one of the TPU/EfficientNet implementation that the
official NFNet pipeline calls: AutoContrast, Equalize, Invert, Rotate,
Posterize, Solarize, Color, Contrast, Brightness, Sharpness, ShearX, ShearY,
TranslateX, TranslateY, Cutout, SolarizeAdd. Each of `num_layers` layers picks
one op uniformly and applies it at `magnitude` (0-10 is the paper's scale;
larger values, e.g. 15 for F3+, extrapolate linearly).

Magnitude mappings follow "larger is stronger" for every op (as in timm's
increasing variants): Posterize keeps 8 - 4m/10 bits, Solarize thresholds at
256 (1 - m/10), enhance factors are 1 +/- 0.9 m/10 (random sign), rotate
+/-30 m/10 degrees, shear +/-0.3 m/10, translate +/-0.45 m/10 of the image
side, Cutout half-size 0.18 m/10 of the side. The TPU code instead maps
Posterize/Solarize/enhance levels so that some ops get *weaker* with
magnitude (e.g. enhance factor 1.0, a no-op, at magnitude 5) -- a known quirk
we do not reproduce. Geometric ops and Cutout fill with grey (128).

Input and output: uint8 [H, W, C] with C in {1, 3}.
"""
import functools
import math

import tensorflow as tf

from nfnet_jax.data.preprocess import fold_in

FILL = 128
OP_NAMES = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize',
            'Solarize', 'Color', 'Contrast', 'Brightness', 'Sharpness',
            'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Cutout',
            'SolarizeAdd')


def _to_u8(x):
  return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def _blend(degenerate, image, factor):
  """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped."""
  d = tf.cast(degenerate, tf.float32)
  i = tf.cast(image, tf.float32)
  return _to_u8(d + factor * (i - d))


def _gray(image):
  if image.shape[-1] == 1:
    return image
  g = tf.image.rgb_to_grayscale(image)
  return tf.tile(g, [1, 1, 3])


def autocontrast(image):
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
  hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
  scaled = (x - lo) * 255.0 / tf.maximum(hi - lo, 1.0)
  return _to_u8(tf.where(hi > lo, scaled, x))


def _equalize_channel(ch):
  flat = tf.reshape(tf.cast(ch, tf.int32), [-1])
  hist = tf.math.bincount(flat, minlength=256, maxlength=256, dtype=tf.int32)
  nonzero = tf.boolean_mask(hist, hist > 0)
  last = nonzero[-1]
  step = (tf.reduce_sum(hist) - last) // 255
  safe = tf.maximum(step, 1)
  lut = (tf.cumsum(hist) + safe // 2) // safe
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
  out = tf.gather(lut, tf.cast(ch, tf.int32))
  return tf.cast(tf.where(step > 0, out, tf.cast(ch, tf.int32)), tf.uint8)


def equalize(image):
  """Per-channel histogram equalisation (PIL ImageOps.equalize algorithm)."""
  chans = [_equalize_channel(image[..., c]) for c in range(image.shape[-1])]
  return tf.stack(chans, axis=-1)


def invert(image):
  return 255 - image


def posterize(image, bits):
  shift = tf.cast(8 - bits, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.where(x >= threshold, 255 - x, x), tf.uint8)


def solarize_add(image, addition, threshold=128):
  x = tf.cast(image, tf.int32)
  added = tf.clip_by_value(x + addition, 0, 255)
  return tf.cast(tf.where(x < threshold, added, x), tf.uint8)


def color(image, factor):
  return _blend(_gray(image), image, factor)


def contrast(image, factor):
  mean = tf.reduce_mean(tf.cast(_gray(image), tf.float32))
  return _blend(tf.fill(tf.shape(image), tf.round(mean)), image, factor)


def brightness(image, factor):
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
  """Blend with the PIL SMOOTH-filtered image (borders kept unfiltered)."""
  c = image.shape[-1]
  x = tf.cast(image, tf.float32)[None]
  k = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  k = tf.tile(k[:, :, None, None], [1, 1, c, 1])
  smooth = tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], 'VALID')[0]
  smooth = tf.round(smooth)
  inner = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  border = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(border > 0, inner, x[0])
  return _blend(degenerate, image, factor)


def _transform(image, t):
  """Projective transform (output -> input coordinates), grey fill."""
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(tf.reshape(t, [1, 8]),
                                             tf.float32),
      output_shape=tf.shape(image)[:2], fill_value=float(FILL),
      interpolation='NEAREST', fill_mode='CONSTANT')
  return out[0]


def rotate(image, degrees):
  theta = degrees * math.pi / 180.0
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  cy, cx = (h - 1) / 2, (w - 1) / 2
  cos, sin = tf.cos(theta), tf.sin(theta)
  t = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
  return _transform(image, t)


def shear_x(image, s):
  return _transform(image, tf.stack([1.0, s, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


def shear_y(image, s):
  return _transform(image, tf.stack([1.0, 0.0, 0.0, s, 1.0, 0.0, 0.0, 0.0]))


def translate_x(image, pixels):
  return _transform(image,
                    tf.stack([1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0]))


def translate_y(image, pixels):
  return _transform(image,
                    tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0]))


def cutout(image, key, half_frac):
  """Grey square of half-size half_frac * side at a uniform centre."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  half = tf.cast(half_frac * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
  cy = tf.random.stateless_uniform([], key, 0, h, tf.int32)
  cx = tf.random.stateless_uniform([], fold_in(key, 1), 0, w, tf.int32)
  ys = tf.range(h)[:, None]
  xs = tf.range(w)[None, :]
  inside = ((ys >= cy - half) & (ys < cy + half) &
            (xs >= cx - half) & (xs < cx + half))
  return tf.where(inside[..., None], tf.cast(FILL, image.dtype), image)


def _signed(key, value):
  sign = tf.where(tf.random.stateless_uniform([], key) < 0.5, -1.0, 1.0)
  return sign * value


def apply_op(index, image, key, magnitude):
  """Applies op `index` (a scalar int32 tensor) at `magnitude`."""
  m = float(magnitude) / 10.0
  side = tf.cast(tf.minimum(tf.shape(image)[0], tf.shape(image)[1]),
                 tf.float32)
  ks = fold_in(key, 100)
  enhance = lambda: tf.maximum(1.0 + _signed(ks, 0.9 * m), 0.0)
  bits = max(8 - int(4 * m), 1)
  threshold = int(min(max(256 * (1 - m), 0), 256))
  branches = [
      lambda: autocontrast(image),
      lambda: equalize(image),
      lambda: invert(image),
      lambda: rotate(image, _signed(ks, 30.0 * m)),
      lambda: posterize(image, bits),
      lambda: solarize(image, threshold),
      lambda: color(image, enhance()),
      lambda: contrast(image, enhance()),
      lambda: brightness(image, enhance()),
      lambda: sharpness(image, enhance()),
      lambda: shear_x(image, _signed(ks, 0.3 * m)),
      lambda: shear_y(image, _signed(ks, 0.3 * m)),
      lambda: translate_x(image, _signed(ks, 0.45 * m) * side),
      lambda: translate_y(image, _signed(ks, 0.45 * m) * side),
      lambda: cutout(image, ks, 0.18 * m),
      lambda: solarize_add(image, int(110 * m)),
  ]
  out = tf.switch_case(index, branches)
  return tf.ensure_shape(out, image.shape)


@functools.lru_cache(maxsize=16)
def make_randaugment(num_layers: int, magnitude: float):
  """Returns fn(uint8 image [H, W, C], key) -> uint8 image.

  One layer is a `tf.function` shared by all layers and cached per
  (layers, magnitude), so the 16-branch graph is traced once per image shape
  and process rather than once per layer and per iterator.
  """
  if num_layers < 0:
    raise ValueError(f'config.data.randaugment_layers={num_layers} must be '
                     '>= 0')
  if magnitude < 0:
    raise ValueError(f'config.data.randaugment_magnitude={magnitude} must be '
                     '>= 0')

  @tf.function(autograph=False)
  def one_layer(image, key):
    op = tf.random.stateless_uniform([], key, 0, len(OP_NAMES), tf.int32)
    return apply_op(op, image, fold_in(key, 1), magnitude)

  def fn(image, key):
    for layer in range(num_layers):
      image = one_layer(image, fold_in(key, layer))
    return image

  return fn
