"""MixUp and CutMix on batches, with soft labels that sum to one.

The paper's recipe (as in the official pipeline) applies MixUp to one half of
each device batch and CutMix to the other half. Here each example is mixed
with its mirror partner inside its own half (example i with the last-but-i),
which keeps one image per output example and the usual epoch accounting
(the official code draws a fresh partner, consuming two images per output).
MixUp ratios are drawn per example from Beta(alpha, alpha); CutMix draws one
box per example with an area fraction uniform in [0, 1] (Beta(1, 1), as the
official code) and a uniform centre, clipped at the border; the label ratio
is the exact pixel fraction kept.
"""
import tensorflow as tf

from nfnet_jax.data.preprocess import fold_in


def _beta(key, shape, alpha):
  """Beta(alpha, alpha) samples from two stateless gammas."""
  g1 = tf.random.stateless_gamma(shape, fold_in(key, 1), alpha)
  g2 = tf.random.stateless_gamma(shape, fold_in(key, 2), alpha)
  return g1 / tf.maximum(g1 + g2, 1e-12)


def mixup(images, labels, key, alpha):
  """MixUp of a group [n, H, W, C] with its reverse; labels [n, K] float."""
  n = tf.shape(images)[0]
  lam = _beta(key, [n], alpha)
  partner_x = tf.reverse(images, [0])
  partner_y = tf.reverse(labels, [0])
  lx = lam[:, None, None, None]
  ly = lam[:, None]
  return lx * images + (1 - lx) * partner_x, ly * labels + (1 - ly) * partner_y


def cutmix_masks(key, n, h, w):
  """Per-example box masks [n, h, w, 1]: 1 where the partner's pixels go."""
  u = tf.random.stateless_uniform([n, 3], key)
  cut = tf.sqrt(1.0 - u[:, 0])               # side ratio of the box
  cy = u[:, 1] * tf.cast(h, tf.float32)
  cx = u[:, 2] * tf.cast(w, tf.float32)
  half_h = tf.cast(cut * tf.cast(h, tf.float32), tf.int32) // 2
  half_w = tf.cast(cut * tf.cast(w, tf.float32), tf.int32) // 2
  y1 = tf.clip_by_value(tf.cast(cy, tf.int32) - half_h, 0, h)
  y2 = tf.clip_by_value(tf.cast(cy, tf.int32) + half_h, 0, h)
  x1 = tf.clip_by_value(tf.cast(cx, tf.int32) - half_w, 0, w)
  x2 = tf.clip_by_value(tf.cast(cx, tf.int32) + half_w, 0, w)
  ys = tf.range(h)[None, :]
  xs = tf.range(w)[None, :]
  in_y = (ys >= y1[:, None]) & (ys < y2[:, None])   # [n, h]
  in_x = (xs >= x1[:, None]) & (xs < x2[:, None])   # [n, w]
  mask = tf.cast(in_y[:, :, None] & in_x[:, None, :], tf.float32)
  return mask[..., None]


def cutmix(images, labels, key):
  """CutMix of a group [n, H, W, C] with its reverse; labels [n, K]."""
  n = tf.shape(images)[0]
  h, w = tf.shape(images)[1], tf.shape(images)[2]
  mask = cutmix_masks(key, n, h, w)
  partner_x = tf.reverse(images, [0])
  partner_y = tf.reverse(labels, [0])
  keep = 1.0 - tf.reduce_mean(mask, axis=[1, 2, 3])   # own-pixel fraction
  out = (1.0 - mask) * images + mask * partner_x
  ly = keep[:, None]
  return out, ly * labels + (1 - ly) * partner_y


def mix_batch(images, labels, key, *, mixup_alpha, use_cutmix, groups):
  """Applies the configured mixing to a host batch [B, H, W, C].

  Args:
    images: float32 [B, H, W, C].
    labels: float32 one-hot [B, K].
    key: stateless key for this batch.
    mixup_alpha: Beta parameter; 0 disables MixUp.
    use_cutmix: enable CutMix.
    groups: number of device batches in B (each is mixed on its own so that
      every device sees half MixUp and half CutMix).

  Returns:
    (images, labels) of the same shapes; every label row sums to 1.
  """
  use_mixup = mixup_alpha > 0
  if not use_mixup and not use_cutmix:
    return images, labels
  b = images.shape[0]
  per = b // groups
  out_x, out_y = [], []
  for g in range(groups):
    x = images[g * per:(g + 1) * per]
    y = labels[g * per:(g + 1) * per]
    kg = fold_in(key, g)
    if use_mixup and use_cutmix:
      half = per // 2
      x1, y1 = mixup(x[:half], y[:half], fold_in(kg, 10), mixup_alpha)
      x2, y2 = cutmix(x[half:], y[half:], fold_in(kg, 11))
      x, y = tf.concat([x1, x2], 0), tf.concat([y1, y2], 0)
    elif use_mixup:
      x, y = mixup(x, y, fold_in(kg, 10), mixup_alpha)
    else:
      x, y = cutmix(x, y, fold_in(kg, 11))
    out_x.append(x)
    out_y.append(y)
  return tf.concat(out_x, 0), tf.concat(out_y, 0)
