"""Micro-benchmark of grouped 3x3 conv formulations on XLA:CPU (fwd + bwd).

Times forward + backward (gradients w.r.t. input and kernel) of NFNet-F0's
grouped conv shapes for each candidate formulation, alternating between the
formulations so that load from other processes hits all of them alike.

  python benchmarks/grouped_conv_micro.py [--reps 7] [--impls xla,split,...]
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

DN = ('NHWC', 'HWIO', 'NHWC')


def conv_xla(x, w, s, g):
  return lax.conv_general_dilated(x, w, (s, s), 'SAME', dimension_numbers=DN,
                                  feature_group_count=g)


def conv_split(x, w, s, g):
  ci, co = w.shape[2], w.shape[3] // g
  return jnp.concatenate([
      lax.conv_general_dilated(x[..., i * ci:(i + 1) * ci], w[..., i * co:(i + 1) * co],
                               (s, s), 'SAME', dimension_numbers=DN) for i in range(g)], -1)


def conv_blockdiag(x, w, s, g):
  kh, kw, ci, o = w.shape
  co = o // g
  wg = w.reshape(kh, kw, ci, g, co)
  eye = jnp.eye(g, dtype=w.dtype)
  full = jnp.einsum('hwigo,Gg->hwGigo', wg, eye).reshape(kh, kw, g * ci, o)
  return lax.conv_general_dilated(x, full, (s, s), 'SAME', dimension_numbers=DN)


def _same_pads(size, k, s):
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return out, (total // 2, total - total // 2)


def conv_im2col(x, w, s, g):
  """Patches (shifted slices) then a batched matmul over groups."""
  n, h, wd, c = x.shape
  kh, kw, ci, o = w.shape
  co = o // g
  ho, ph = _same_pads(h, kh, s)
  wo, pw = _same_pads(wd, kw, s)
  xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
  cols = [xp[:, i:i + (ho - 1) * s + 1:s, j:j + (wo - 1) * s + 1:s, :]
          for i in range(kh) for j in range(kw)]
  p = jnp.stack(cols, axis=3).reshape(n * ho * wo, kh * kw, g, ci)
  wk = w.reshape(kh * kw, ci, g, co)
  y = jnp.einsum('pkgi,kigo->pgo', p, wk)
  return y.reshape(n, ho, wo, o)


def conv_vmapgroups(x, w, s, g):
  """Groups moved into the batch dim: one dense conv per group via lax.map-free vmap."""
  n, h, wd, c = x.shape
  kh, kw, ci, o = w.shape
  co = o // g
  xg = x.reshape(n, h, wd, g, ci).transpose(3, 0, 1, 2, 4)
  wg = w.reshape(kh, kw, ci, g, co).transpose(3, 0, 1, 2, 4)
  f = lambda a, b: lax.conv_general_dilated(a, b, (s, s), 'SAME', dimension_numbers=DN)
  y = jax.vmap(f)(xg, wg)  # [g, n, ho, wo, co]
  return y.transpose(1, 2, 3, 0, 4).reshape(n, y.shape[2], y.shape[3], o)


IMPLS = {
    'xla': conv_xla,
    'split': conv_split,
    'blockdiag': conv_blockdiag,
    'im2col': conv_im2col,
    'vmap': conv_vmapgroups,
}

# (name, N, H, C, groups, stride) -- C is the input = output width of the conv.
SHAPES = [
    ('F0s2 b8@128 16x16 256c g2', 8, 16, 256, 2, 1),
    ('F0s2 b8@128 32->16 256c g2 s2', 8, 32, 256, 2, 2),
    ('F0s3 b8@128 8x8 768c g6', 8, 8, 768, 6, 1),
    ('F0s3 b8@128 16->8 768c g6 s2', 8, 16, 768, 6, 2),
    ('F0s4 b8@128 4x4 768c g6', 8, 4, 768, 6, 1),
    ('F0s3 b4@192 12x12 768c g6', 4, 12, 768, 6, 1),
    ('F0s3 b8@256 16x16 768c g6', 8, 16, 768, 6, 1),
    ('1536c g12 8x8', 8, 8, 1536, 12, 1),
]


def build(impl, shape, mode):
  _, n, h, c, g, s = shape
  fn = IMPLS[impl]
  if mode == 'fwd':
    return jax.jit(lambda x, w: fn(x, w, s, g))

  def loss(x, w, ct):
    return jnp.vdot(fn(x, w, s, g), ct)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--reps', type=int, default=7)
  p.add_argument('--impls', default=','.join(IMPLS))
  p.add_argument('--mode', default='fwdbwd', choices=['fwd', 'fwdbwd'])
  p.add_argument('--shapes', default='')
  a = p.parse_args()
  impls = a.impls.split(',')
  rng = np.random.default_rng(0)
  for shape in SHAPES:
    if a.shapes and not any(t in shape[0] for t in a.shapes.split(',')):
      continue
    name, n, h, c, g, s = shape
    x = jnp.asarray(rng.standard_normal((n, h, h, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, c // g, c)) * 0.05, jnp.float32)
    ho = -(-h // s)
    ct = jnp.asarray(rng.standard_normal((n, ho, ho, c)), jnp.float32)
    fns = {}
    for i in impls:
      f = build(i, shape, a.mode)
      args = (x, w) if a.mode == 'fwd' else (x, w, ct)
      jax.block_until_ready(f(*args))
      jax.block_until_ready(f(*args))
      fns[i] = (f, args)
    times = {i: [] for i in impls}
    for _ in range(a.reps):
      for i in impls:
        f, args = fns[i]
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times[i].append((time.perf_counter() - t) * 1e3)
    row = '  '.join(f'{i}={statistics.median(times[i]):7.2f}' for i in impls)
    print(f'{name:32s} {row}  (ms, median of {a.reps})', flush=True)


if __name__ == '__main__':
  main()
