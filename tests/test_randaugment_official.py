"""RandAugment's 'official' mapping against numpy transcriptions of its formulas.

Every op runs at magnitudes 0, 5 and 10 on one fixed image with fixed draws
(sign and Cutout centre); the expected images are computed here in numpy from
the level formulas of the TPU/EfficientNet implementation (stated in
nfnet_jax/data/randaugment.py's docstring), not by calling the module's code.
"""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from nfnet_jax.data import preprocess as pp
from nfnet_jax.data import randaugment as ra
from nfnet_jax.data import warp

H, W = 64, 80
CENTER = (10, 70)          # Cutout centre near a corner: the square is clipped
MAGNITUDES = (0, 5, 10)


def _image():
  rng = np.random.default_rng(14)
  # Values in [30, 220]: AutoContrast has work to do, SolarizeAdd and
  # Solarize see both sides of 128.
  img = rng.integers(30, 221, size=(H, W, 3)).astype(np.uint8)
  img[:8, :8] = 40           # a flat patch: Sharpness's smoothing is exact
  return img


IMG = _image()


def _run(name, magnitude, negate=False, img=IMG):
  draws = ra.Draws(negate=tf.constant(negate),
                   center=tf.constant(CENTER, tf.int32))
  out = ra.apply_op_with_draws(tf.constant(ra.OP_NAMES.index(name)),
                               tf.constant(img), magnitude, draws,
                               mode='official')
  assert out.dtype == tf.uint8 and out.shape == img.shape
  return out.numpy()


def _trunc(x):
  return np.floor(np.clip(x, 0.0, 255.0)).astype(np.uint8)


def _blend(degenerate, img, factor):
  if factor == 1.0:
    return img
  d = degenerate.astype(np.float32)
  i = img.astype(np.float32)
  return _trunc(d + np.float32(factor) * (i - d))


def _enhance_factor(m):
  return m / 10 * 1.8 + 0.1


def _round_half_away(x):
  return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _warp(img, a):
  """Nearest-neighbour affine warp with grey fill: output (x, y) reads input
  (a0 x + a1 y + a2, a3 x + a4 y + a5), computed in float32 as TF's kernel
  does (a coordinate within float error of .5 rounds by float32's value)."""
  a = np.asarray(a, np.float32)
  ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float32)
  ix = _round_half_away(a[0] * xs + a[1] * ys + a[2]).astype(int)
  iy = _round_half_away(a[3] * xs + a[4] * ys + a[5]).astype(int)
  ok = (iy >= 0) & (iy < img.shape[0]) & (ix >= 0) & (ix < img.shape[1])
  out = np.full_like(img, 128)
  out[ok] = img[iy[ok], ix[ok]]
  return out


def _gray(img):
  # tf.image.rgb_to_grayscale: weights (0.2989, 0.587, 0.114) on [0, 1]
  # values, back to uint8 by * 255.5 and truncation.
  f = img.astype(np.float32) / np.float32(255)
  g = f @ np.array([0.2989, 0.5870, 0.1140], np.float32)
  return np.floor(g * np.float32(255.5)).astype(np.uint8)[..., None]


# ---------------------------------------------------------------------------
# Ops without a magnitude


@pytest.mark.parametrize('m', MAGNITUDES)
def test_autocontrast_equalize_invert(m):
  x = IMG.astype(np.float32)
  lo = x.min(axis=(0, 1))
  hi = x.max(axis=(0, 1))
  scale = np.float32(255.0) / (hi - lo)
  want = _trunc(x * scale - lo * scale)
  np.testing.assert_array_equal(_run('AutoContrast', m), want)
  np.testing.assert_array_equal(
      _run('Equalize', m), np.asarray(ImageOps.equalize(Image.fromarray(IMG))))
  np.testing.assert_array_equal(_run('Invert', m), 255 - IMG)


def test_autocontrast_keeps_a_constant_channel():
  img = IMG.copy()
  img[..., 1] = 77
  out = _run('AutoContrast', 5, img=img)
  assert (out[..., 1] == 77).all() and out[..., 0].max() == 255


# ---------------------------------------------------------------------------
# Point ops


@pytest.mark.parametrize('m,keep_bits', [(0, 1), (5, 2), (10, 4), (15, 6)])
def test_posterize(m, keep_bits):
  # bits = int(4 m / 10); shift 8 - bits, clamped to 7 by TF (so m=0 keeps
  # one bit, not zero).
  assert keep_bits == max(int(m / 10 * 4), 1)
  shift = min(8 - int(m / 10 * 4), 7)
  want = (IMG >> shift) << shift
  np.testing.assert_array_equal(_run('Posterize', m), want)
  assert len(np.unique(_run('Posterize', m))) <= 2 ** keep_bits


@pytest.mark.parametrize('m', (0, 5, 10, 15))
def test_solarize(m):
  threshold = int(m / 10 * 256) % 256     # uint8: 256 -> 0, 384 -> 128
  want = np.where(IMG < threshold, IMG, 255 - IMG)
  np.testing.assert_array_equal(_run('Solarize', m), want)
  if m in (0, 10):
    np.testing.assert_array_equal(_run('Solarize', m), 255 - IMG)


@pytest.mark.parametrize('m', MAGNITUDES)
def test_solarize_add(m):
  add = int(m / 10 * 110)
  want = np.where(IMG < 128, np.clip(IMG.astype(int) + add, 0, 255), IMG)
  np.testing.assert_array_equal(_run('SolarizeAdd', m), want.astype(np.uint8))


# ---------------------------------------------------------------------------
# Enhance ops: factor 1.8 m / 10 + 0.1, weaker then stronger


@pytest.mark.parametrize('m', MAGNITUDES)
def test_color_and_brightness(m):
  f = _enhance_factor(m)
  gray = np.repeat(_gray(IMG), 3, axis=-1)
  np.testing.assert_array_equal(_run('Color', m), _blend(gray, IMG, f))
  np.testing.assert_array_equal(_run('Brightness', m),
                                _blend(np.zeros_like(IMG), IMG, f))
  if m == 5:        # factor 1.0: the identity
    np.testing.assert_array_equal(_run('Brightness', m), IMG)


@pytest.mark.parametrize('m', MAGNITUDES)
def test_contrast_blends_with_pixel_count_over_256(m):
  # The TPU code's "mean" is sum(histogram) / 256 = H * W / 256 = 20 here.
  level = min(H * W / 256.0, 255.0)
  degenerate = np.full_like(IMG, int(level))
  np.testing.assert_array_equal(_run('Contrast', m),
                                _blend(degenerate, IMG, _enhance_factor(m)))


@pytest.mark.parametrize('m', MAGNITUDES)
def test_sharpness(m):
  x = IMG.astype(np.int64)
  kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]])
  acc = np.zeros((H - 2, W - 2, 3), np.int64)
  for dy in range(3):
    for dx in range(3):
      acc += kernel[dy, dx] * x[dy:dy + H - 2, dx:dx + W - 2]
  degenerate = IMG.copy()
  degenerate[1:-1, 1:-1] = np.floor(acc / 13.0).astype(np.uint8)
  want = _blend(degenerate, IMG, _enhance_factor(m))
  got = _run('Sharpness', m)
  # TF smooths in float32 with weights 1/13 before truncating: a smoothed
  # value that is exactly an integer can come out one lower there.
  diff = np.abs(got.astype(int) - want.astype(int))
  assert diff.max() <= 1 and (diff > 0).mean() < 0.02
  np.testing.assert_array_equal(got[0], want[0])        # borders unfiltered
  np.testing.assert_array_equal(got[2:6, 2:6], want[2:6, 2:6])  # flat patch


# ---------------------------------------------------------------------------
# Geometric ops and Cutout (fill 128, nearest neighbour, random sign)


@pytest.mark.parametrize('negate', (False, True))
@pytest.mark.parametrize('m', MAGNITUDES)
def test_rotate(m, negate):
  # +/- 30 m / 10 degrees about the centre (tfa.image.rotate's transform).
  t = np.float32((-1 if negate else 1) * m / 10 * 30.0) * np.float32(
      np.pi / 180)
  c, s = np.cos(t), np.sin(t)
  x_off = ((W - 1) - (c * (W - 1) - s * (H - 1))) / 2
  y_off = ((H - 1) - (s * (W - 1) + c * (H - 1))) / 2
  np.testing.assert_array_equal(_run('Rotate', m, negate),
                                _warp(IMG, [c, -s, x_off, s, c, y_off]))
  if m == 0:
    np.testing.assert_array_equal(_run('Rotate', m, negate), IMG)


@pytest.mark.parametrize('negate', (False, True))
@pytest.mark.parametrize('m', MAGNITUDES)
def test_shear(m, negate):
  level = (-1 if negate else 1) * m / 10 * 0.3
  np.testing.assert_array_equal(_run('ShearX', m, negate),
                                _warp(IMG, [1, level, 0, 0, 1, 0]))
  np.testing.assert_array_equal(_run('ShearY', m, negate),
                                _warp(IMG, [1, 0, 0, level, 1, 0]))


@pytest.mark.parametrize('negate', (False, True))
@pytest.mark.parametrize('m', MAGNITUDES)
def test_translate_in_absolute_pixels(m, negate):
  # TranslateX(p) reads input x + p: the content moves p pixels left.
  pixels = (-1 if negate else 1) * m / 10 * 100.0
  np.testing.assert_array_equal(_run('TranslateX', m, negate),
                                _warp(IMG, [1, 0, pixels, 0, 1, 0]))
  np.testing.assert_array_equal(_run('TranslateY', m, negate),
                                _warp(IMG, [1, 0, 0, 0, 1, pixels]))
  if m == 10:     # 100 px is wider than the image: all grey
    assert (_run('TranslateX', m, negate) == 128).all()


@pytest.mark.parametrize('m', MAGNITUDES)
def test_cutout_half_size_in_absolute_pixels(m):
  half = int(m / 10 * 40)
  cy, cx = CENTER
  want = IMG.copy()
  want[max(cy - half, 0):min(cy + half, H),
       max(cx - half, 0):min(cx + half, W)] = 128
  np.testing.assert_array_equal(_run('Cutout', m), want)


# ---------------------------------------------------------------------------
# Draws and op probability


def test_draws_negate_half_the_time_and_centres_cover_the_image():
  img = tf.zeros([H, W, 3], tf.uint8)
  draws = [ra.sample_draws(pp.make_key(0, i), img) for i in range(400)]
  neg = np.array([bool(d.negate) for d in draws])
  centers = np.array([d.center.numpy() for d in draws])
  assert 0.42 < neg.mean() < 0.58
  assert centers[:, 0].min() >= 0 and centers[:, 0].max() < H
  assert centers[:, 1].min() >= 0 and centers[:, 1].max() < W
  assert centers[:, 0].max() - centers[:, 0].min() > H * 0.8


def test_every_layer_applies_its_op():
  # At magnitude 10 every one of the 16 ops changes this image, so a layer
  # that skipped its op (the TPU code draws a probability per op but its
  # RandAugment never reads it) would leave some outputs unchanged.
  fn = ra.make_randaugment(1, 10.0, 'official')
  img = tf.constant(IMG)
  for i in range(48):
    assert (fn(img, pp.make_key(1, i)).numpy() != IMG).any(), i


def test_float_input_is_clipped_then_truncated():
  x = tf.constant([[[-3.0], [12.9], [255.7], [128.5]]])
  np.testing.assert_array_equal(ra.to_uint8(x, 'official').numpy().ravel(),
                                [0, 12, 255, 128])
  np.testing.assert_array_equal(ra.to_uint8(x, 'increasing').numpy().ravel(),
                                [0, 13, 255, 128])


def test_unknown_mode_is_one_clear_error():
  with pytest.raises(ValueError, match=r"config\.data\.randaugment_mode='tpu'"
                     r".*'official', 'increasing'"):
    ra.make_randaugment(2, 5.0, 'tpu')


# ---------------------------------------------------------------------------
# The compiled path: make_randaugment runs the ops under XLA


@pytest.mark.parametrize('mode', ra.MODES)
def test_compiled_ops_equal_op_by_op_tensorflow(mode):
  # XLA fuses a product and a sum into one multiply-add and may divide
  # through a reciprocal; the blends are table lookups, the warps read
  # precomputed maps and Sharpness divides exactly so that the compiled ops
  # give op-by-op TensorFlow's pixels. Odd sizes, every op, both signs, a
  # weak and a strong magnitude.
  img = tf.constant(np.random.default_rng(3).integers(0, 256, (37, 45, 3),
                                                      dtype=np.uint8))
  center = tf.constant([5, 40], tf.int32)
  for magnitude in (3.0, 13.0):
    compiled = tf.function(
        lambda i, x, neg, c, m=magnitude: ra.apply_op_with_draws(
            i, x, m, ra.Draws(negate=neg, center=c), mode),
        jit_compile=True, autograph=False)
    for index, name in enumerate(ra.OP_NAMES):
      for negate in (False, True):
        neg = tf.constant(negate)
        want = ra.apply_op_with_draws(tf.constant(index), img, magnitude,
                                      ra.Draws(negate=neg, center=center),
                                      mode)
        got = compiled(tf.constant(index), img, neg, center)
        np.testing.assert_array_equal(got.numpy(), want.numpy(),
                                      err_msg=f'{name} m={magnitude} '
                                      f'negate={negate}')


@pytest.mark.parametrize('mode', ra.MODES)
def test_randaugment_equals_its_layers_applied_one_by_one(mode):
  # make_randaugment's draws (TensorFlow) and compiled ops against apply_op
  # layer by layer with the keys its docstring names.
  fn = ra.make_randaugment(2, 12.0, mode)
  img = tf.constant(IMG)
  for i in range(12):      # a wrong layer key or op shows in most of them
    key = pp.make_key(9, i)
    want = img
    for layer in range(2):
      layer_key = pp.fold_in(key, layer)
      op = tf.random.stateless_uniform([], layer_key, 0, len(ra.OP_NAMES),
                                       tf.int32)
      want = ra.apply_op(op, want, pp.fold_in(layer_key, 1), 12.0, mode)
    np.testing.assert_array_equal(fn(img, key).numpy(), want.numpy())


def test_precomputed_warp_equals_tensorflows_projective_transform():
  # The gather with a map built in numpy against TF's own kernel (the op
  # the TPU code's warps call) and against the in-graph coordinates.
  rng = np.random.default_rng(8)
  for _ in range(12):
    a = rng.uniform(-1.5, 1.5, 6).astype(np.float32)
    a[2], a[5] = rng.uniform(-30, 30, 2)
    t = np.concatenate([a, np.zeros(2, np.float32)]).astype(np.float32)
    want = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(IMG)[None], transforms=tf.constant(t)[None],
        output_shape=[H, W], fill_value=float(ra.FILL),
        interpolation='NEAREST', fill_mode='CONSTANT')[0].numpy()
    np.testing.assert_array_equal(
        warp.transform(tf.constant(IMG), t).numpy(), want)
    np.testing.assert_array_equal(
        warp.transform(tf.constant(IMG), tf.constant(t)).numpy(), want)
