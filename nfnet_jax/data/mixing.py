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

from nfnet_jax.data.preprocess import box_mask
from nfnet_jax.data.preprocess import fold_in


def _beta(key, shape, alpha):
  """Beta(alpha, alpha) samples from two stateless gammas."""
  g1 = tf.random.stateless_gamma(shape, fold_in(key, 1), alpha)
  g2 = tf.random.stateless_gamma(shape, fold_in(key, 2), alpha)
  return g1 / tf.maximum(g1 + g2, 1e-12)


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
  return tf.cast(box_mask(y1, y2, x1, x2, h, w), tf.float32)[..., None]


def mix_weights(key, b, h, w, *, mixup_alpha, use_cutmix, groups):
  """The random part of `mix_batch`: who mixes with whom, and how much.

  Args:
    key: stateless key for this batch.
    b, h, w: batch size and image size (static ints).
    mixup_alpha, use_cutmix, groups: as in `mix_batch`.

  Returns:
    (partner, lam, cut, keep): partner int32 [b] (a static mirror
    permutation inside each MixUp / CutMix part of each device batch), lam
    float32 [b] (MixUp weight of the example's own pixels, 1 elsewhere), cut
    bool [b, h, w, 1] (CutMix box: where the partner's pixels go), keep
    float32 [b] (weight of the example's own label). None when no mixing
    is configured.
  """
  use_mixup = mixup_alpha > 0
  if not use_mixup and not use_cutmix:
    return None
  per = b // groups
  partner, lams, cuts, keeps = [], [], [], []
  for g in range(groups):
    kg = fold_in(key, g)
    s = g * per
    if use_mixup and use_cutmix:
      parts = [('mixup', s, per // 2), ('cutmix', s + per // 2, per - per // 2)]
    else:
      parts = [('mixup' if use_mixup else 'cutmix', s, per)]
    for kind, start, n in parts:
      partner.extend(range(start + n - 1, start - 1, -1))
      if kind == 'mixup':
        lam = _beta(fold_in(kg, 10), [n], mixup_alpha)
        lams.append(lam)
        keeps.append(lam)
        cuts.append(tf.zeros([n, h, w, 1], tf.bool))
      else:
        mask = cutmix_masks(fold_in(kg, 11), n, h, w)
        lams.append(tf.ones([n], tf.float32))
        keeps.append(1.0 - tf.reduce_mean(mask, axis=[1, 2, 3]))
        cuts.append(mask > 0.5)
  return (tf.constant(partner, tf.int32), tf.concat(lams, 0),
          tf.concat(cuts, 0), tf.concat(keeps, 0))


def mix_pixels(images, partner, lam, cut):
  """Pure arithmetic of the mixing (XLA-fusable): float32 [b, H, W, C].

  MixUp is ``partner + lam * (x - partner)``; CutMix selects the partner's
  pixels inside the box. Examples with lam = 1 and no box come out as they
  went in (exactly, for integer-valued pixels).
  """
  x = tf.cast(images, tf.float32)
  xp = tf.gather(x, partner)
  return tf.where(cut, xp, xp + lam[:, None, None, None] * (x - xp))


def mix_labels(labels, partner, keep):
  """``keep * own label + (1 - keep) * partner's label``; rows sum to 1."""
  k = keep[:, None]
  return k * labels + (1 - k) * tf.gather(labels, partner)


def mix_batch(images, labels, key, *, mixup_alpha, use_cutmix, groups):
  """Applies the configured mixing to a host batch [B, H, W, C].

  Args:
    images: [B, H, W, C], uint8 or float; returned as float32 when mixing
      is on (pixel ranges are kept: mixing is a convex combination, so it
      commutes with a per-channel normalisation).
    labels: float32 one-hot [B, K].
    key: stateless key for this batch.
    mixup_alpha: Beta parameter; 0 disables MixUp.
    use_cutmix: enable CutMix.
    groups: number of device batches in B (each is mixed on its own so that
      every device sees half MixUp and half CutMix).

  Returns:
    (images, labels) of the same shapes; every label row sums to 1.
  """
  b, h, w = images.shape[0], images.shape[1], images.shape[2]
  weights = mix_weights(key, b, h, w, mixup_alpha=mixup_alpha,
                        use_cutmix=use_cutmix, groups=groups)
  if weights is None:
    return images, labels
  partner, lam, cut, keep = weights
  return mix_pixels(images, partner, lam, cut), mix_labels(labels, partner, keep)
