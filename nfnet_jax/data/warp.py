"""Nearest-neighbour projective warps that compile under XLA.

TF's ``ImageProjectiveTransformV3`` (what ``tfa.image.transform`` and the
TPU RandAugment call) has no XLA kernel. `transform` computes the same
thing as a gather: float32 output-to-input coordinates in the kernel's order
of operations, ``std::round``, a grey fill outside the image. With a
transform given as numpy and a static image size, the source of every
output pixel is computed in numpy once, when the graph is built, so that
the compiled gather reads exactly the kernel's pixels (XLA's own float
arithmetic may fuse a product and a sum and move a pixel whose coordinate
is within float error of a half).
"""
import math

import numpy as np
import tensorflow as tf

FILL = 128


def height_width(image):
  """(H, W) as Python ints where the shape is static (XLA then sees static
  slices), else as tensors."""
  h, w = image.shape[0], image.shape[1]
  if h is None or w is None:
    return tf.shape(image)[0], tf.shape(image)[1]
  return h, w


def _round_half_away(x, xp=tf):
  """std::round (half away from zero), exactly: the integer part plus one
  step where the fraction's magnitude is at least 0.5."""
  whole = xp.sign(x) * xp.floor(xp.abs(x))
  frac = x - whole
  return whole + xp.where(xp.abs(frac) >= 0.5, xp.sign(x), 0.0)


def _source_pixels(t, h: int, w: int):
  """Where each output pixel of a constant transform reads, in numpy.

  The arithmetic of TF's ``ImageProjectiveTransformV3`` kernel: float32
  coordinates, products and sums in its order, ``std::round``; the map is
  computed once when the graph is built.

  Returns:
    (index int32 [H, W] into the flattened image, inside bool [H, W]).
  """
  t = np.asarray(t, np.float32)
  ys = np.arange(h, dtype=np.float32)[:, None]
  xs = np.arange(w, dtype=np.float32)[None, :]
  line = lambda a, b, c: (a * xs + b * ys) + c
  with np.errstate(divide='ignore', invalid='ignore'):
    proj = line(t[6], t[7], np.float32(1.0))
    safe = np.where(proj == 0, np.float32(1.0), proj)
    ix = _round_half_away(line(t[0], t[1], t[2]) / safe, np)
    iy = _round_half_away(line(t[3], t[4], t[5]) / safe, np)
  inside = (proj != 0) & (ix >= 0) & (iy >= 0) & (ix < w) & (iy < h)
  index = np.where(inside, iy * w + ix, 0).astype(np.int32)
  return np.broadcast_to(index, (h, w)), np.broadcast_to(inside, (h, w))


def transform(image, t):
  """Projective transform (output -> input coordinates), nearest neighbour,
  grey fill: TF's ``ImageProjectiveTransformV3`` written as a gather.

  `t` is 8 floats. Given as numpy with a static image size (how every
  RandAugment branch calls it), the source of each pixel is a graph
  constant computed by `_source_pixels`: exact, and only a gather to run.
  Otherwise (a tensor `t` or a dynamic size) the coordinates are computed
  in the graph, where XLA may round a product and sum once (fused) where
  the kernel rounds twice, moving a pixel whose coordinate is within float
  error of a half.
  """
  h, w = height_width(image)
  if isinstance(t, np.ndarray) and isinstance(h, int) and isinstance(w, int):
    index, inside = (tf.constant(a) for a in _source_pixels(t, h, w))
  else:
    t = tf.unstack(tf.cast(tf.reshape(t, [8]), tf.float32))
    ys = tf.cast(tf.range(h), tf.float32)[:, None]
    xs = tf.cast(tf.range(w), tf.float32)[None, :]
    line = lambda a, b, c: (a * xs + b * ys) + c
    proj = line(t[6], t[7], 1.0)
    safe = tf.where(proj == 0.0, 1.0, proj)
    ix = _round_half_away(line(t[0], t[1], t[2]) / safe)
    iy = _round_half_away(line(t[3], t[4], t[5]) / safe)
    inside = ((proj != 0.0) & (ix >= 0.0) & (iy >= 0.0) &
              (ix < tf.cast(w, tf.float32)) & (iy < tf.cast(h, tf.float32)))
    index = tf.where(inside, tf.cast(iy, tf.int32) * w + tf.cast(ix, tf.int32),
                     0)
  pixels = tf.gather(tf.reshape(image, [h * w, -1]), tf.reshape(index, [-1]))
  pixels = tf.reshape(pixels, tf.shape(image))
  return tf.where(inside[..., None], pixels, tf.cast(FILL, image.dtype))


def _matrix(*values):
  """A transform's 8 floats: float32 numpy if all are Python numbers (then
  `_transform` precomputes the map), else a tensor."""
  if all(isinstance(v, (int, float, np.floating)) for v in values):
    return np.array(values, np.float32)
  return tf.stack([tf.cast(v, tf.float32) for v in values])


def _rotation(theta, h, w, xp):
  """tfa.image.rotate's transform for angle `theta` (radians) about the
  centre of an h x w image, in numpy (xp=np) or TensorFlow (xp=tf)."""
  cos, sin = xp.cos(theta), xp.sin(theta)
  x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
  y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
  return [cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0]


def rotate(image, degrees):
  """Rotation about the image centre (tfa.image.rotate's transform)."""
  h, w = image.shape[0], image.shape[1]
  if isinstance(degrees, (int, float)) and h is not None and w is not None:
    f32 = np.float32
    theta = f32(degrees) * f32(math.pi / 180.0)
    return transform(image, np.array(_rotation(theta, f32(h), f32(w), np),
                                      np.float32))
  theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  return transform(image, tf.stack(_rotation(theta, h, w, tf)))


def shear_x(image, s):
  return transform(image, _matrix(1.0, s, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0))


def shear_y(image, s):
  return transform(image, _matrix(1.0, 0.0, 0.0, s, 1.0, 0.0, 0.0, 0.0))


def translate_x(image, pixels):
  return transform(image, _matrix(1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0))


def translate_y(image, pixels):
  return transform(image, _matrix(1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0))
