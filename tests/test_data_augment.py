"""Augmentation ops against independent numpy/PIL computations."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from nfnet_jax.data import mixing
from nfnet_jax.data import preprocess as pp
from nfnet_jax.data import randaugment as ra


def _key(i):
  return pp.make_key(0, i)


def test_mixup_cutmix_half_split_label_mass():
  rng = np.random.default_rng(0)
  b, k, groups = 16, 5, 2
  x = tf.constant(rng.normal(size=(b, 8, 8, 3)).astype(np.float32))
  labels = rng.integers(0, k, size=b)
  y = tf.one_hot(labels, k)
  xm, ym = mixing.mix_batch(x, y, _key(1), mixup_alpha=0.2, use_cutmix=True,
                            groups=groups)
  xm, ym, x = xm.numpy(), ym.numpy(), x.numpy()
  np.testing.assert_allclose(ym.sum(-1), 1.0, rtol=1e-6)
  per = b // groups
  for g in range(groups):
    s = g * per
    mix_part = range(s, s + per // 2)
    cut_part = range(s + per // 2, s + per)
    for part, kind in ((mix_part, 'mixup'), (cut_part, 'cutmix')):
      part = list(part)
      for j, i in enumerate(part):
        partner = part[len(part) - 1 - j]
        lam = ym[i, labels[i]] if labels[i] != labels[partner] else None
        if kind == 'mixup':
          # image = lam x_i + (1 - lam) x_partner, lam from the label row
          if lam is not None:
            np.testing.assert_allclose(
                xm[i], lam * x[i] + (1 - lam) * x[partner], atol=1e-5)
        else:
          own = np.isclose(xm[i], x[i]).all(-1)
          other = np.isclose(xm[i], x[partner]).all(-1)
          assert (own | other).all()       # every pixel from one of the two
          if lam is not None and i != partner:
            np.testing.assert_allclose(lam, own.mean(), atol=1e-6)


def test_mixup_lambda_distribution_is_beta():
  lam = mixing._beta(_key(2), [20000], 0.2).numpy()
  # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1786
  assert abs(lam.mean() - 0.5) < 0.01
  assert abs(lam.var() - 1 / (4 * 1.4)) < 0.01


def test_cutmix_box_area_is_uniform():
  m = mixing.cutmix_masks(_key(3), 4000, 64, 64).numpy()
  area = m.mean(axis=(1, 2, 3))
  # area ~ (1 - U) clipped at the border: mean below 1/2, range [0, 1]
  assert area.min() >= 0 and area.max() <= 1
  assert 0.2 < area.mean() < 0.5


def _u8(rng, shape=(20, 24, 3)):
  return rng.integers(0, 256, size=shape, dtype=np.uint8)


def test_point_ops_match_pil():
  rng = np.random.default_rng(0)
  img = _u8(rng)
  pil = Image.fromarray(img)
  np.testing.assert_array_equal(ra.invert(tf.constant(img)).numpy(),
                                np.asarray(ImageOps.invert(pil)))
  np.testing.assert_array_equal(ra.posterize(tf.constant(img), 3).numpy(),
                                np.asarray(ImageOps.posterize(pil, 3)))
  np.testing.assert_array_equal(ra.solarize(tf.constant(img), 100).numpy(),
                                np.asarray(ImageOps.solarize(pil, 100)))
  np.testing.assert_array_equal(ra.equalize(tf.constant(img)).numpy(),
                                np.asarray(ImageOps.equalize(pil)))
  low = (img // 2 + 40).astype(np.uint8)   # autocontrast has work to do
  np.testing.assert_allclose(
      ra.autocontrast(tf.constant(low)).numpy().astype(int),
      np.asarray(ImageOps.autocontrast(Image.fromarray(low))).astype(int),
      atol=1)


def test_geometric_ops():
  img = np.zeros((9, 9, 1), np.uint8)
  img[4, 6] = 200
  out = ra.translate_x(tf.constant(img), 2.0).numpy()
  assert out[4, 8, 0] == 200 and out[:, :2].max() == ra.FILL
  out = ra.rotate(tf.constant(img), 90.0).numpy()
  assert out[..., 0].max() == 200
  ys, xs = np.nonzero(out[..., 0] == 200)
  assert (ys[0], xs[0]) in ((6, 4), (2, 4))      # quarter turn about centre
  np.testing.assert_array_equal(ra.shear_x(tf.constant(img), 0.0).numpy(),
                                img)


def test_randaugment_runs_every_op_and_keeps_dtype():
  rng = np.random.default_rng(1)
  img = tf.constant(_u8(rng, (16, 16, 3)))
  for i in range(len(ra.OP_NAMES)):
    out = ra.apply_op(tf.constant(i), img, _key(i), 9)
    assert out.dtype == tf.uint8 and out.shape == img.shape
  fn = ra.make_randaugment(2, 9.0)
  a = fn(img, _key(5)).numpy()
  np.testing.assert_array_equal(a, fn(img, _key(5)).numpy())   # stateless
  gray = tf.constant(_u8(rng, (16, 16, 1)))
  assert fn(gray, _key(6)).shape == (16, 16, 1)


def test_inception_crop_bounds_and_fallback():
  img = tf.zeros([100, 200, 3], tf.uint8)
  for i in range(20):
    out = pp.inception_crop(img, _key(i), size=32, jpeg=False, channels=3)
    assert out.shape == (32, 32, 3)
  # window statistics: area fraction in [0.08, 1], aspect in [3/4, 4/3]
  hw = tf.constant([100, 200])
  for i in range(50):
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        [100, 200, 3], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=_key(i),
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    h, w = int(size[0]), int(size[1])
    if (h, w) != (100, 200):
      assert 0.08 * 20000 * 0.9 <= h * w <= 20000
      assert 0.7 <= w / h <= 1.4
  # a very thin image cannot fit aspect 3/4..4/3 at >= 8% area: centre crop
  thin = tf.constant(np.arange(4 * 400 * 3).reshape(4, 400, 3) % 251,
                     tf.uint8)
  win = pp.center_window(tf.constant([4, 400]), 32, 32)
  # crop side 4 * 32/64 = 2; offsets ((4-2)+1)//2, ((400-2)+1)//2
  np.testing.assert_array_equal(win.numpy(), [1, 199, 2, 2])
  out = pp.inception_crop(thin, _key(0), size=8, jpeg=False, channels=3)
  assert out.shape == (8, 8, 3)


@pytest.mark.parametrize('mode', ['squash', 'aspect'])
def test_eval_image_jpeg_and_decoded_agree(mode):
  rng = np.random.default_rng(0)
  img = np.repeat(np.repeat(_u8(rng, (12, 16, 3)), 5, 0), 5, 1)  # 60x80
  jpeg = tf.io.encode_jpeg(img, quality=100)
  a = pp.eval_image(jpeg, size=24, jpeg=True, channels=3, padding=8,
                    mode=mode).numpy()
  b = pp.eval_image(tf.io.decode_jpeg(jpeg), size=24, jpeg=False,
                    channels=3, padding=8, mode=mode).numpy()
  assert a.shape == (24, 24, 3)
  np.testing.assert_allclose(a, b, atol=1e-3)


def test_batch_pad_crop_flip_matches_numpy():
  rng = np.random.default_rng(0)
  x = _u8(rng, (6, 10, 10, 1))
  out = pp.batch_pad_crop_flip(tf.constant(x), _key(9), size=10, padding=2,
                               flip=True).numpy()
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))).astype(np.float32)
  for i in range(6):
    found = False
    for oy in range(5):
      for ox in range(5):
        crop = padded[i, oy:oy + 10, ox:ox + 10]
        if np.array_equal(out[i], crop) or np.array_equal(out[i],
                                                          crop[:, ::-1]):
          found = True
    assert found


def test_fused_mix_and_normalize_equal_normalizing_then_mixing():
  """The pipeline mixes uint8 pixels and normalises once (XLA-fused); that
  equals normalising first and mixing the floats (mixing is convex)."""
  from nfnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  u8 = tf.constant(rng.integers(0, 256, size=(8, 12, 10, 3), dtype=np.uint8))
  y = tf.one_hot(rng.integers(0, 4, size=8), 4)
  mean, std = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
  key = _key(7)
  partner, lam, cut, keep = mixing.mix_weights(key, 8, 12, 10, mixup_alpha=0.2,
                                               use_cutmix=True, groups=2)
  fused = pipeline._mix_normalize_fused(  # pylint: disable=protected-access
      u8, partner, lam, cut, tf.constant(mean), tf.constant(std)).numpy()
  ref, ref_y = mixing.mix_batch(pp.normalize(u8, mean, std), y, key,
                                mixup_alpha=0.2, use_cutmix=True, groups=2)
  np.testing.assert_allclose(fused, ref.numpy(), atol=2e-5)
  np.testing.assert_allclose(mixing.mix_labels(y, partner, keep).numpy(), ref_y.numpy())
  plain = pipeline._normalize_fused(u8, tf.constant(mean), tf.constant(std))  # pylint: disable=protected-access
  np.testing.assert_allclose(plain.numpy(), pp.normalize(u8, mean, std).numpy(), atol=2e-6)
  # uint8 in, float32 out; the same numbers as mixing the float pixels.
  a, _ = mixing.mix_batch(u8, y, key, mixup_alpha=0.2, use_cutmix=True, groups=2)
  b, _ = mixing.mix_batch(tf.cast(u8, tf.float32), y, key, mixup_alpha=0.2,
                          use_cutmix=True, groups=2)
  assert a.dtype == tf.float32
  np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_train_image_is_uint8():
  img = tf.constant(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
  out = pp.train_image(img, _key(0), size=16, jpeg=False, channels=3)
  assert out.dtype == tf.uint8 and out.shape == (16, 16, 3)
  out = pp.train_image(img, _key(0), size=16, jpeg=False, channels=3, crop='none',
                       randaugment=ra.make_randaugment(2, 9))
  assert out.dtype == tf.uint8 and out.shape == (16, 16, 3)
