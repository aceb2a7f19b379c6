"""Random erasing (Zhong et al. 2017, arXiv 1708.04896) on whole batches.

With probability ``prob`` an example gets one rectangle of random pixels.
The rectangle's area is a uniform fraction in ``area`` of the image and its
aspect ratio (height / width) uniform in ``[min_aspect, 1 / min_aspect]``;
height and width are rounded, and a draw that does not fit strictly inside
the image is redrawn, up to ``ATTEMPTS`` times (then the example is left
as it is). The position is uniform over the places it fits. The pixels are
replaced by independent uniform values over the pixel range, the paper's
best fill ("RE-R"). The paper's defaults: prob 0.5, area (0.02, 0.4),
min_aspect 0.3.

The batch version draws every attempt at once: each example keeps its first
attempt that fits, which is the same distribution as redrawing in a loop.
It runs on the normalised batch after MixUp/CutMix (timm and the paper's
code erase each example before batching; for an example that mixing leaves
alone the two are the same).
"""
import tensorflow as tf

from nfnet_jax.data.preprocess import box_mask
from nfnet_jax.data.preprocess import fold_in

ATTEMPTS = 100            # the paper's code tries up to 100 rectangles


def erase_boxes(key, n, h, w, *, area, min_aspect):
  """Per-example rectangles: (y0, x0, height, width, fits), each [n].

  Args:
    key: stateless key for this batch.
    n, h, w: batch size and image size (static ints).
    area: (lo, hi) range of the erased fraction of the image.
    min_aspect: the aspect ratio is uniform in [min_aspect, 1 / min_aspect].

  Returns:
    int32 y0, x0, height, width and bool ``fits``: False where none of the
    ``ATTEMPTS`` draws fitted (then height and width are 0).
  """
  u = tf.random.stateless_uniform([n, ATTEMPTS, 2], key, dtype=tf.float64)
  lo, hi = float(area[0]), float(area[1])
  target = (lo + (hi - lo) * u[..., 0]) * float(h * w)
  aspect = min_aspect + (1.0 / min_aspect - min_aspect) * u[..., 1]
  # Python's round() (the paper's code) rounds halves to even, as tf.round.
  eh = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
  ew = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
  ok = (eh < h) & (ew < w)
  first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
  fits = tf.reduce_any(ok, axis=1)
  eh = tf.where(fits, tf.gather(eh, first, batch_dims=1), 0)
  ew = tf.where(fits, tf.gather(ew, first, batch_dims=1), 0)
  # Top-left corner uniform over the h - eh + 1 (w - ew + 1) places.
  pos = tf.random.stateless_uniform([n, 2], fold_in(key, 1))
  y0 = tf.minimum(tf.cast(pos[:, 0] * tf.cast(h - eh + 1, tf.float32),
                          tf.int32), h - eh)
  x0 = tf.minimum(tf.cast(pos[:, 1] * tf.cast(w - ew + 1, tf.float32),
                          tf.int32), w - ew)
  return y0, x0, eh, ew, fits


@tf.function(jit_compile=True, autograph=False)
def _erase_fused(images, y0, x0, eh, ew, apply, fill):
  mask = box_mask(y0, y0 + eh, x0, x0 + ew, images.shape[1], images.shape[2])
  mask &= apply[:, None, None]
  return tf.where(mask[..., None], fill, images)


def random_erase(images, key, *, prob, area, min_aspect, mean, std):
  """Erases one random rectangle in each chosen example of a batch.

  Args:
    images: float32 [n, h, w, c], normalised as ``(pixel - mean) / std``.
    key: stateless key for this batch (the same key, the same rectangles).
    prob: probability that an example is erased.
    area: (lo, hi) range of the erased fraction of the image.
    min_aspect: aspect ratios uniform in [min_aspect, 1 / min_aspect].
    mean, std: the normalisation, per channel in [0, 255] pixel units; the
      fill is uniform over [0, 255] pixels, normalised the same way.

  Returns:
    The batch with the rectangles replaced.
  """
  n, h, w, c = images.shape
  y0, x0, eh, ew, fits = erase_boxes(key, n, h, w, area=area,
                                     min_aspect=min_aspect)
  apply = (tf.random.stateless_uniform([n], fold_in(key, 2)) < prob) & fits
  pixels = 255.0 * tf.random.stateless_uniform([n, h, w, c], fold_in(key, 3))
  fill = (pixels - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
  return _erase_fused(images, y0, x0, eh, ew, apply, fill)
