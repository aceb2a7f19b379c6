"""Random erasing against the paper's per-example loop (numpy / Python), and
in the Fashion-MNIST pipeline: one rectangle per erased example, the fill,
the probability, determinism and exact resumption."""
import math
import random

import numpy as np
import pytest
import tensorflow as tf

from nfnet_jax import data
from nfnet_jax.data import erasing
from nfnet_jax.data import preprocess as pp
from test_data_fashion import idx_dir  # noqa: F401  (fixture)
from test_data_fashion import make_config

AREA, MIN_ASPECT = (0.02, 0.4), 0.3


def _paper_box(u_attempts, h, w):
  """The paper's code, one example: the first of the draws that fits."""
  for u_area, u_aspect in u_attempts:
    target = (AREA[0] + (AREA[1] - AREA[0]) * u_area) * h * w
    aspect = MIN_ASPECT + (1 / MIN_ASPECT - MIN_ASPECT) * u_aspect
    eh = int(round(math.sqrt(target * aspect)))
    ew = int(round(math.sqrt(target / aspect)))
    if eh < h and ew < w:
      return eh, ew
  return 0, 0


@pytest.mark.parametrize('h,w', [(28, 28), (12, 40), (4, 4)])
def test_first_fitting_draw_equals_the_papers_loop(h, w):
  key = pp.make_key(5, h, w)
  n = 300
  y0, x0, eh, ew, fits = [t.numpy() for t in erasing.erase_boxes(
      key, n, h, w, area=AREA, min_aspect=MIN_ASPECT)]
  # The same uniforms the batch version drew, replayed through the loop.
  u = tf.random.stateless_uniform([n, erasing.ATTEMPTS, 2], key,
                                  dtype=tf.float64).numpy()
  expected = np.array([_paper_box(u[i], h, w) for i in range(n)])
  np.testing.assert_array_equal(eh, expected[:, 0])
  np.testing.assert_array_equal(ew, expected[:, 1])
  np.testing.assert_array_equal(fits, expected[:, 0] > 0)
  assert (y0 >= 0).all() and (x0 >= 0).all()
  assert (y0 + eh <= h).all() and (x0 + ew <= w).all()


def test_box_sizes_and_positions_match_an_independent_simulation():
  """Against Python's `random` running the paper's algorithm (no shared
  draws): mean height, width, area and corner position within 5 SE."""
  h = w = 28
  n = 20000
  _, x0, eh, ew, _ = [t.numpy() for t in erasing.erase_boxes(
      pp.make_key(9), n, h, w, area=AREA, min_aspect=MIN_ASPECT)]
  rng = random.Random(0)
  sim = []
  for _ in range(n):
    eh_s, ew_s = _paper_box(((rng.random(), rng.random())
                             for _ in range(erasing.ATTEMPTS)), h, w)
    sim.append((eh_s, ew_s, rng.randint(0, w - ew_s)))
  sim = np.array(sim, dtype=np.float64)
  for ours, theirs in ((eh, sim[:, 0]), (ew, sim[:, 1]),
                       (eh * ew, sim[:, 0] * sim[:, 1]), (x0, sim[:, 2])):
    se = math.sqrt(ours.var() / n + theirs.var() / n)
    assert abs(ours.mean() - theirs.mean()) < 5 * se, (ours.mean(),
                                                       theirs.mean())
  # Area fraction inside [lo, hi] up to the rounding of the sides.
  frac = eh * ew / (h * w)
  assert frac.min() > 0.01 and frac.max() < 0.5


def test_erasing_replaces_exactly_the_box_with_uniform_pixels():
  n, h, w, c = 2000, 16, 20, 3
  mean, std = [120.0, 110.0, 100.0], [60.0, 50.0, 40.0]
  images = tf.fill([n, h, w, c], -100.0)   # outside every fill value
  key = pp.make_key(3)
  out = erasing.random_erase(images, key, prob=1.0, area=AREA,
                             min_aspect=MIN_ASPECT, mean=mean,
                             std=std).numpy()
  y0, x0, eh, ew, fits = [t.numpy() for t in erasing.erase_boxes(
      key, n, h, w, area=AREA, min_aspect=MIN_ASPECT)]
  assert fits.all()
  changed = (out != -100.0)
  fills = []
  for i in range(n):
    box = np.zeros((h, w, c), bool)
    box[y0[i]:y0[i] + eh[i], x0[i]:x0[i] + ew[i]] = True
    np.testing.assert_array_equal(changed[i], box)
    fills.append(out[i][box].reshape(-1, c))
  pixels = np.concatenate(fills) * np.array(std) + np.array(mean)
  assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
  # Uniform on [0, 255] per channel: mean 127.5, std 255 / sqrt(12).
  np.testing.assert_allclose(pixels.mean(0), 127.5, atol=1.0)
  np.testing.assert_allclose(pixels.std(0), 255 / math.sqrt(12), atol=1.0)


def test_probability_and_off():
  n = 4000
  images = tf.zeros([n, 8, 8, 1])
  out = erasing.random_erase(images, pp.make_key(4), prob=0.5, area=AREA,
                             min_aspect=MIN_ASPECT, mean=[0.0], std=[1.0])
  erased = (out.numpy() != 0).any(axis=(1, 2, 3)).mean()
  assert abs(erased - 0.5) < 4 * math.sqrt(0.25 / n)
  off = erasing.random_erase(images, pp.make_key(4), prob=0.0, area=AREA,
                             min_aspect=MIN_ASPECT, mean=[0.0], std=[1.0])
  assert (off.numpy() == 0).all()


def _batches(c, n, start_step=0):
  it = data.train_iterator(c, layout='host', process_index=0,
                           process_count=1, local_device_count=1,
                           start_step=start_step)
  return [next(it) for _ in range(n)]


def test_pipeline_erases_rectangles_deterministically_and_resumes(idx_dir):  # noqa: F811
  base = dict(train_crop='none', random_flip=False)
  plain = _batches(make_config(idx_dir, **base), 4)
  c = make_config(idx_dir, random_erase=1.0, **base)
  erased = _batches(c, 4)
  for p, e in zip(plain, erased):
    np.testing.assert_array_equal(p['labels'], e['labels'])
    diff = (p['images'] != e['images'])[..., 0]          # [b, 28, 28]
    for d in diff:
      ys, xs = np.nonzero(d)
      # one rectangle per example (a random pixel may equal the original,
      # so the differing pixels lie inside a box of 2-40% of the image)
      assert len(ys) > 0
      box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
      assert 0.01 * 784 < box < 0.5 * 784
      assert len(ys) > 0.9 * box
  again = _batches(c, 4)
  resumed = _batches(c, 2, start_step=2)
  for a, b in zip(erased, again):
    np.testing.assert_array_equal(a['images'], b['images'])
  for a, b in zip(erased[2:], resumed):
    np.testing.assert_array_equal(a['images'], b['images'])
