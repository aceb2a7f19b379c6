"""RandAugment (Cubuk et al. 2020) in TensorFlow with stateless randomness.

The op set is the one of the TPU/EfficientNet implementation
(``models/official/efficientnet/autoaugment.py`` of tensorflow/tpu, copied
as ``nfnets/autoaugment.py`` into DeepMind's NFNet code, whose
``distort_image_with_randaugment`` the paper's pipeline calls): AutoContrast,
Equalize, Invert, Rotate, Posterize, Solarize, Color, Contrast, Brightness,
Sharpness, ShearX, ShearY, TranslateX, TranslateY, Cutout, SolarizeAdd.

Each of ``num_layers`` layers picks one op uniformly at random and applies
it, always (probability 1: the TPU code draws a probability in [0.2, 0.8]
for every op but none of its RandAugment ops reads it), at the magnitude
``m`` shared by all layers. ``m`` is on the paper's 0-10 scale; larger values
(15 for NFNet-F3+) extrapolate the same formulas. Geometric ops and Cutout
fill with grey 128 and sample nearest-neighbour.

Two level-to-argument mappings, ``config.data.randaugment_mode``:

``'official'`` (default; the mapping the paper's per-variant magnitudes
were tuned with), with ``r = m / 10``:

  AutoContrast, Equalize, Invert   no argument
  Rotate       +/- 30 r degrees
  Posterize    bits = int(4 r); the image is shifted right then left by
               8 - bits, read as uint8 (-2 -> 254) and clamped to 7 as TF's
               shift kernels do: m=0 keeps 1 bit, m=5 2, m=10 4, m=15 6
               (weaker with magnitude)
  Solarize     threshold t = int(256 r) read as uint8 (256 -> 0, 384 -> 128);
               pixels >= t are inverted: m=0 and m=10 invert the whole image,
               m=5 and m=15 pixels >= 128
  SolarizeAdd  pixels < 128 get + int(110 r), clipped to 255
  Color, Contrast, Brightness, Sharpness
               blend factor f = 1.8 r + 0.1 (no sign): 0.1 at m=0, 1.0 (the
               identity) at m=5, 1.9 at m=10 -- weaker, then stronger
  ShearX/Y     +/- 0.3 r
  TranslateX/Y +/- 100 r pixels (absolute, whatever the image size)
  Cutout       grey square of half-size int(40 r) pixels (absolute)

  A sign "+/-" is negative when a uniform draw u in [0, 1) is < 0.5 (the
  TPU code's ``_randomly_negate_tensor`` keeps the sign iff
  ``floor(u + 0.5)`` is 1). The blend ``degenerate + f * (image -
  degenerate)`` is clipped to [0, 255] and truncated (not rounded) to uint8,
  as are AutoContrast's rescaled values and Sharpness's smoothed image. The
  degenerate images: Color the grey image (``tf.image.rgb_to_grayscale``),
  Brightness black, Sharpness the PIL SMOOTH filter (3x3 kernel [[1, 1, 1],
  [1, 5, 1], [1, 1, 1]] / 13, borders unfiltered), and Contrast the constant
  ``min(H * W / 256, 255)``: the TPU code means the grey level's mean but
  divides the histogram's sum (the pixel count) by 256. We reproduce that
  (at 192 px the constant is 144, at 224 px 196): it is what the paper's
  magnitudes were tuned with. TranslateX by +p moves the content p pixels
  left (output x reads input x + p), as ``tfa.image.translate(image, [-p,
  0])`` does; Cutout's centre is uniform over the image and its square is
  clipped at the borders.

``'increasing'`` (every op stronger with magnitude, like timm's increasing
variants), with ``r = m / 10``:

  Posterize keeps max(8 - int(4 r), 1) bits; Solarize threshold
  clip(256 (1 - r), 0, 256); enhance factors max(1 +/- 0.9 r, 0); rotate
  +/- 30 r degrees; shear +/- 0.3 r; translate +/- 0.45 r of the shorter
  image side (+p moves the content right); Cutout half-size
  int(0.18 r * shorter side); SolarizeAdd + int(110 r); Contrast's
  degenerate is the rounded mean grey level. Blends, AutoContrast and
  Sharpness round to the nearest integer instead of truncating.

Input: uint8 [H, W, C] with C in {1, 3} (float images are converted first:
clipped to [0, 255], then truncated in 'official' mode, as the NFNet
pipeline casts its bicubic-resized crop, rounded in 'increasing' mode).
Output: uint8.
"""
import functools
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from nfnet_jax.data import datasets
from nfnet_jax.data import warp
from nfnet_jax.data.preprocess import fold_in
# The geometric ops (gathers that compile under XLA) live in warp.py.
from nfnet_jax.data.warp import rotate, shear_x, shear_y, translate_x, translate_y  # pylint: disable=g-multiple-import

FILL = warp.FILL
OP_NAMES = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize',
            'Solarize', 'Color', 'Contrast', 'Brightness', 'Sharpness',
            'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Cutout',
            'SolarizeAdd')
MODES = datasets.RANDAUGMENT_MODES
MAX_LEVEL = 10.0
# distort_image_with_randaugment's hparams: pixels at level 10.
TRANSLATE_CONST = 100.0
CUTOUT_CONST = 40


def official_level_to_arg(name: str, magnitude: float):
  """The 'official' op argument at `magnitude`, before any random sign.

  Returns None for the ops without an argument. Values are Python numbers:
  the TPU code computes them in Python from a float magnitude.
  """
  r = float(magnitude) / MAX_LEVEL
  table = {
      'Rotate': r * 30.0,
      'Posterize': int(r * 4),
      'Solarize': int(r * 256),
      'SolarizeAdd': int(r * 110),
      'Color': r * 1.8 + 0.1,
      'Contrast': r * 1.8 + 0.1,
      'Brightness': r * 1.8 + 0.1,
      'Sharpness': r * 1.8 + 0.1,
      'ShearX': r * 0.3,
      'ShearY': r * 0.3,
      'TranslateX': r * TRANSLATE_CONST,
      'TranslateY': r * TRANSLATE_CONST,
      'Cutout': int(r * CUTOUT_CONST),
  }
  if name not in OP_NAMES:
    raise ValueError(f'unknown RandAugment op {name!r}; one of {OP_NAMES}')
  return table.get(name)


def _to_u8(x):
  return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


@functools.lru_cache(maxsize=64)
def _blend_table(factor: float, truncate: bool) -> np.ndarray:
  """uint8 [256 * 256]: the blend of degenerate level d with pixel i at
  index ``256 d + i``, computed in float32 numpy as TF's kernels compute
  it (product and sum rounded separately), clipped, then truncated or
  rounded half to even."""
  d = np.arange(256, dtype=np.float32)[:, None]
  i = np.arange(256, dtype=np.float32)[None, :]
  v = np.clip(d + np.float32(factor) * (i - d), 0.0, 255.0)
  return (v if truncate else np.round(v)).astype(np.uint8).reshape(-1)


def _blend_lookup(degenerate, image, factor: float, truncate: bool):
  """`degenerate` + `factor` * (`image` - `degenerate`) for a Python
  `factor`, as a table lookup.

  Compiled, XLA fuses the product and the sum into one multiply-add with a
  single rounding, which moves ~0.3% of truncated pixels by one level; the
  table holds TF's own float32 results, so compiled and op-by-op agree, and
  the gather costs about what the arithmetic did.
  """
  index = tf.cast(degenerate, tf.int32) * 256 + tf.cast(image, tf.int32)
  return tf.gather(tf.constant(_blend_table(float(factor), truncate)), index)


def _blend(degenerate, image, factor):
  """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped
  and rounded; `degenerate` holds integer levels."""
  if isinstance(factor, (int, float)):
    return _blend_lookup(degenerate, image, factor, truncate=False)
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
  # A scatter-add histogram and a masked max instead of bincount and
  # boolean_mask: both compile under XLA (see make_randaugment).
  hist = tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, 256)
  levels = tf.range(256)
  last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0, levels, 0)))
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


def _smooth_sum(image):
  """13 x PIL's SMOOTH filter, float32 [H, W, C] holding exact integers,
  and the interior mask [H, W, 1] where the filter applies (PIL leaves a
  one-pixel border).

  The 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] is summed over shifted
  slices of the zero-padded image. Slices and masks of the image's own size
  compile to one XLA loop; a depthwise convolution runs ~30x slower on
  XLA:CPU, padding a 222 x 222 interior back out ~3x, and int32 sums ~1.6x.
  """
  x = tf.cast(image, tf.float32)
  h, w = warp.height_width(x)
  padded = tf.pad(x, [[1, 1], [1, 1], [0, 0]])
  acc = 4.0 * x
  for dy in range(3):
    for dx in range(3):
      acc += padded[dy:dy + h, dx:dx + w]
  ys = tf.range(h)[:, None, None]
  xs = tf.range(w)[None, :, None]
  interior = (ys > 0) & (ys < h - 1) & (xs > 0) & (xs < w - 1)
  return acc, interior


def _floor_div13(n):
  """floor(n / 13) of float32 integers 0 <= n < 2**20, exactly.

  XLA may divide through a rounded reciprocal, which puts 13 k / 13 just
  below k; the quotient is corrected with integer-valued (exact) float
  arithmetic. This equals truncating TF's float32 n / 13, which is exact at
  multiples of 13 and at least 1/13 away from an integer elsewhere.
  """
  q = tf.floor(n / 13.0)
  q = tf.where((q + 1.0) * 13.0 <= n, q + 1.0, q)
  return tf.where(q * 13.0 > n, q - 1.0, q)


def sharpness(image, factor):
  """Blend with the PIL SMOOTH-filtered image (borders kept unfiltered)."""
  acc, interior = _smooth_sum(image)
  smooth = _floor_div13(acc + 6.0)    # rounded: n / 13 is never k + 1/2
  degenerate = tf.where(interior, smooth, tf.cast(image, tf.float32))
  return _blend(degenerate, image, factor)


def signed(op, image, value: float, negate):
  """``op(image, -value)`` where `negate` (a bool tensor), else
  ``op(image, value)``: a Python argument either way, so that geometric ops
  get a precomputed pixel map."""
  return tf.cond(negate, lambda: op(image, -value), lambda: op(image, value))


def _trunc_u8(x):
  """float -> uint8 the TPU way: clip to [0, 255], then truncate."""
  return tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)


def blend_truncated(degenerate, image, factor: float):
  """The TPU blend: ``degenerate + factor * (image - degenerate)``, truncated.

  `factor` is a Python float, as in the TPU code, whose exact 0 and 1
  return the degenerate / original image without arithmetic.
  """
  if factor == 0.0:
    return tf.convert_to_tensor(degenerate)
  if factor == 1.0:
    return tf.convert_to_tensor(image)
  return _blend_lookup(degenerate, image, factor, truncate=True)


def autocontrast_truncated(image):
  """Per-channel ``x * 255 / (hi - lo) - lo * 255 / (hi - lo)``, truncated;
  a constant channel is left unchanged."""
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
  hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
  scale = 255.0 / tf.where(hi > lo, hi - lo, 1.0)
  offset = -lo * scale
  return tf.where(hi > lo, _trunc_u8(x * scale + offset), image)


def posterize_official(image, bits: int):
  """Shift right then left by ``8 - bits`` as uint8, clamped to 7 (TF)."""
  shift = min((8 - int(bits)) % 256, 7)
  return posterize(image, 8 - shift)


def solarize_official(image, threshold: int):
  """Inverts pixels >= ``threshold`` read as uint8 (256 wraps to 0)."""
  return solarize(image, int(threshold) % 256)


def contrast_official(image, factor: float):
  """Blend with the constant ``min(H * W / 256, 255)`` (see module doc)."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  level = tf.cast(h * w, tf.float32) / 256.0
  degenerate = tf.fill(tf.shape(image), _trunc_u8(level))
  return blend_truncated(degenerate, image, factor)


def sharpness_official(image, factor: float):
  """Blend with the truncated SMOOTH-filtered image (borders unfiltered)."""
  acc, interior = _smooth_sum(image)
  degenerate = tf.where(interior, tf.cast(_floor_div13(acc), tf.uint8),
                        image)
  return blend_truncated(degenerate, image, factor)


def cutout_at(image, center, half):
  """Grey square ``[cy - half, cy + half) x [cx - half, cx + half)``,
  clipped at the borders; `center` is an int32 [2] (y, x)."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  cy, cx = center[0], center[1]
  ys = tf.range(h)[:, None]
  xs = tf.range(w)[None, :]
  inside = ((ys >= cy - half) & (ys < cy + half) &
            (xs >= cx - half) & (xs < cx + half))
  return tf.where(inside[..., None], tf.cast(FILL, image.dtype), image)


class Draws(NamedTuple):
  """The random numbers one RandAugment layer's op may use.

  Attributes:
    negate: bool scalar; the signed argument is negated when True.
    center: int32 [2], Cutout's centre (y, x), uniform over the image.
  """
  negate: tf.Tensor
  center: tf.Tensor


def sample_draws(key, image) -> Draws:
  """Draws for one layer from a stateless key (u < 0.5 negates)."""
  ks = fold_in(key, 100)
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  negate = tf.random.stateless_uniform([], ks) < 0.5
  cy = tf.random.stateless_uniform([], ks, 0, h, tf.int32)
  cx = tf.random.stateless_uniform([], fold_in(ks, 1), 0, w, tf.int32)
  return Draws(negate=negate, center=tf.stack([cy, cx]))


def _official_branches(image, magnitude, draws):
  arg = lambda name: official_level_to_arg(name, magnitude)
  neg = draws.negate
  return [
      lambda: autocontrast_truncated(image),
      lambda: equalize(image),
      lambda: invert(image),
      lambda: signed(rotate, image, arg('Rotate'), neg),
      lambda: posterize_official(image, arg('Posterize')),
      lambda: solarize_official(image, arg('Solarize')),
      lambda: blend_truncated(_gray(image), image, arg('Color')),
      lambda: contrast_official(image, arg('Contrast')),
      lambda: blend_truncated(tf.zeros_like(image), image, arg('Brightness')),
      lambda: sharpness_official(image, arg('Sharpness')),
      lambda: signed(shear_x, image, arg('ShearX'), neg),
      lambda: signed(shear_y, image, arg('ShearY'), neg),
      # translate_x(image, p) moves the content right; the TPU op moves it
      # left for a positive argument.
      lambda: signed(translate_x, image, -arg('TranslateX'), neg),
      lambda: signed(translate_y, image, -arg('TranslateY'), neg),
      lambda: cutout_at(image, draws.center, arg('Cutout')),
      lambda: solarize_add(image, arg('SolarizeAdd')),
  ]


def _increasing_branches(image, magnitude, draws):
  m = float(magnitude) / 10.0
  side = tf.cast(tf.minimum(tf.shape(image)[0], tf.shape(image)[1]),
                 tf.float32)
  static_side = (min(image.shape[0], image.shape[1])
                 if image.shape[0] is not None and image.shape[1] is not None
                 else None)
  neg = draws.negate
  sign = tf.where(neg, -1.0, 1.0)
  # max(1 +/- 0.9 m, 0) as float32 computes it, as Python floats (so that
  # the blends are table lookups).
  strength = np.float32(0.9 * m)
  factors = [float(np.maximum(np.float32(1.0) + s * strength, np.float32(0)))
             for s in (np.float32(1.0), np.float32(-1.0))]
  enhance = lambda op: tf.cond(neg, lambda: op(image, factors[1]),
                               lambda: op(image, factors[0]))
  bits = max(8 - int(4 * m), 1)
  threshold = int(min(max(256 * (1 - m), 0), 256))
  half = tf.cast(0.18 * m * side, tf.int32)

  def translate(op):
    if static_side is None:
      return op(image, sign * (0.45 * m) * side)
    pixels = float(np.float32(0.45 * m) * np.float32(static_side))
    return signed(op, image, pixels, neg)

  return [
      lambda: autocontrast(image),
      lambda: equalize(image),
      lambda: invert(image),
      lambda: signed(rotate, image, 30.0 * m, neg),
      lambda: posterize(image, bits),
      lambda: solarize(image, threshold),
      lambda: enhance(color),
      lambda: enhance(contrast),
      lambda: enhance(brightness),
      lambda: enhance(sharpness),
      lambda: signed(shear_x, image, 0.3 * m, neg),
      lambda: signed(shear_y, image, 0.3 * m, neg),
      lambda: translate(translate_x),
      lambda: translate(translate_y),
      lambda: cutout_at(image, draws.center, half),
      lambda: solarize_add(image, int(110 * m)),
  ]


def apply_op_with_draws(index, image, magnitude, draws: Draws,
                        mode: str = 'official'):
  """Applies op `index` (scalar int32 tensor) at `magnitude` with `draws`."""
  datasets.check_randaugment_mode(mode)
  make = _official_branches if mode == 'official' else _increasing_branches
  out = tf.switch_case(index, make(image, magnitude, draws))
  return tf.ensure_shape(out, image.shape)


def apply_op(index, image, key, magnitude, mode: str = 'official'):
  """Applies op `index` at `magnitude`, its draws taken from `key`."""
  return apply_op_with_draws(index, image, magnitude,
                             sample_draws(key, image), mode)


def to_uint8(image, mode: str = 'official'):
  """A float image as uint8: clipped, then truncated (official) or rounded."""
  if image.dtype == tf.uint8:
    return image
  x = tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)
  return tf.cast(x if mode == 'official' else tf.round(x), tf.uint8)


def layer_draws(key, image, num_layers: int):
  """Each layer's op index and draws, in TensorFlow (not XLA: XLA's
  stateless generators give other numbers for the same key).

  Layer ``l`` picks its op from ``fold_in(key, l)`` and takes its draws from
  ``fold_in(fold_in(key, l), 1)``, exactly as `apply_op` would.

  Returns:
    (ops int32 [L], Draws with negate bool [L] and center int32 [L, 2]).
  """
  ops, negates, centers = [], [], []
  for layer in range(num_layers):
    layer_key = fold_in(key, layer)
    ops.append(tf.random.stateless_uniform([], layer_key, 0, len(OP_NAMES),
                                           tf.int32))
    draws = sample_draws(fold_in(layer_key, 1), image)
    negates.append(draws.negate)
    centers.append(draws.center)
  return tf.stack(ops), Draws(negate=tf.stack(negates),
                              center=tf.stack(centers))


@functools.lru_cache(maxsize=16)
def make_randaugment(num_layers: int, magnitude: float,
                     mode: str = 'official'):
  """Returns fn(image [H, W, C], key) -> uint8 image.

  A float image is converted with `to_uint8` first (inside the compiled
  call, where it fuses into the first op). The layers' ops and
  draws come from `layer_draws` (TensorFlow); the ops themselves run in one
  XLA-compiled call (`apply_op_with_draws` per layer, the 16 ops as XLA
  conditional branches). Run op by op, TensorFlow spends 0.2-8 ms of CPU
  per 224 px image on an op plus ~0.7 ms on the branch dispatch; compiled,
  an op's elementwise work fuses into one loop over the pixels: 2 layers at
  magnitude 15 take 1.5 ms of CPU per 224 px image instead of 4.7
  (`benchmarks/randaugment_ops.py`). The result is the same image, pixel for
  pixel (tests/test_randaugment_official.py). The compiled function is
  cached per (layers, magnitude, mode) and traced once per image shape.
  """
  datasets.check_randaugment_mode(mode)
  if num_layers < 0:
    raise ValueError(f'config.data.randaugment_layers={num_layers} must be '
                     '>= 0')
  if magnitude < 0:
    raise ValueError(f'config.data.randaugment_magnitude={magnitude} must be '
                     '>= 0')

  @tf.function(autograph=False, jit_compile=True)
  def apply_layers(image, ops, negate, center):
    image = to_uint8(image, mode)       # fused into the first op
    for layer in range(num_layers):
      draws = Draws(negate=negate[layer], center=center[layer])
      image = apply_op_with_draws(ops[layer], image, magnitude, draws, mode)
    return image

  def fn(image, key):
    if not num_layers:
      return to_uint8(image, mode)
    ops, draws = layer_draws(key, image, num_layers)
    return apply_layers(image, ops, draws.negate, draws.center)

  return fn
