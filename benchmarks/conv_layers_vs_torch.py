"""Per-layer forward+backward of NFNet-F0's convolutions: ours vs PyTorch.

For every distinct convolution of NFNet-F0 at a given batch and resolution
this times forward + gradients w.r.t. input and kernel of our
`nfnet_jax.nn.grouped_conv` (the path 'auto' picks on this backend) and of
`torch.nn.functional.conv2d` (what timm's `dm_nfnet_f0` runs), alternating
the two, and prints both medians, their ratio and the layer's total over the
network (count x time). The sum shows how much of the whole-step gap to timm
(`benchmarks/timm_compare.py`) the convolutions explain; the rest is
everything else (activations, weight standardization, SE, the optimizer).

    python benchmarks/conv_layers_vs_torch.py [--batch 8 --resolution 128]

Needs torch (the `bench` extra; tested version in constraints.txt). Weight
standardization is not included (it costs the same on both sides, per
kernel, independent of the batch).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# NFNet-F0 (arXiv 2102.06171, official code): stem 3x3 convs 3->16 (s2),
# 16->32, 32->64, 64->128 (s2); stages of widths 256, 512, 1536, 1536 with
# depths 1, 2, 6, 3, bottleneck ratio 0.5, group width 128, strides 1, 2, 2,
# 2; each block: 1x1 conv0, grouped 3x3 conv1 (strided in a stage's first
# block), grouped 3x3 conv1b, 1x1 conv2, plus a 1x1 shortcut conv in a
# stage's first block; final 1x1 conv to 2 x 1536 = 3072.
STEM = ((3, 16, 2), (16, 32, 1), (32, 64, 1), (64, 128, 2))
WIDTHS = (256, 512, 1536, 1536)
DEPTHS = (1, 2, 6, 3)
STRIDES = (1, 2, 2, 2)
GROUP_WIDTH = 128
BOTTLENECK = 0.5
FINAL = 3072


def f0_conv_layers(batch: int, resolution: int):
  """{(n, h, cin, cout, k, stride, groups): count} for NFNet-F0."""
  layers = {}

  def add(*key):
    layers[key] = layers.get(key, 0) + 1

  h = resolution
  for cin, cout, s in STEM:
    add(batch, h, cin, cout, 3, s, 1)
    h = -(-h // s)
  cin = STEM[-1][1]
  for width, depth, stride in zip(WIDTHS, DEPTHS, STRIDES):
    mid = int(width * BOTTLENECK)
    groups = mid // GROUP_WIDTH
    for i in range(depth):
      s = stride if i == 0 else 1
      add(batch, h, cin, mid, 1, 1, 1)              # conv0
      add(batch, h, mid, mid, 3, s, groups)         # conv1
      h_out = -(-h // s)
      add(batch, h_out, mid, mid, 3, 1, groups)     # conv1b
      add(batch, h_out, mid, width, 1, 1, 1)        # conv2
      if i == 0:                                    # shortcut (after avg-pool)
        add(batch, h_out, cin, width, 1, 1, 1)
      h, cin = h_out, width
  add(batch, h, cin, FINAL, 1, 1, 1)                # final_conv
  return layers


def _median_ms(fn, reps):
  out = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    out.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(out)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--resolution', type=int, default=128)
  p.add_argument('--rounds', type=int, default=3, help='alternations per layer')
  p.add_argument('--reps', type=int, default=3, help='timed calls per round')
  p.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
  a = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from nfnet_jax.nn.grouped_conv import grouped_conv, resolve_impl  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(a.threads)
  rng = np.random.default_rng(0)
  print(f'NFNet-F0 convolutions, fwd + input and kernel gradients, batch {a.batch} @ '
        f'{a.resolution} px; ours: grouped_conv impl '
        f"{resolve_impl('auto')!r} on {jax.default_backend()}; torch {torch.__version__} "
        f'{a.threads} threads; load {os.getloadavg()[0]:.2f}')
  print(f"{'layer (n h cin->cout k s g)':34s} {'count':>5s} {'ours ms':>8s} {'torch ms':>8s} "
        f"{'ours/torch':>10s} {'ours total':>10s} {'torch total':>11s}")
  tot_ours = tot_torch = 0.0
  for (n, h, cin, cout, k, s, g), count in f0_conv_layers(a.batch, a.resolution).items():
    x = rng.standard_normal((n, h, h, cin)).astype(np.float32)
    w = (rng.standard_normal((k, k, cin // g, cout)) * 0.05).astype(np.float32)
    ho = -(-h // s)
    ct = rng.standard_normal((n, ho, ho, cout)).astype(np.float32)

    grad = jax.jit(jax.grad(
        lambda x, w, ct, s=s, g=g: jnp.vdot(grouped_conv(x, w, s, 'SAME', g, 'auto'), ct),
        argnums=(0, 1)))
    jx, jw, jct = jnp.asarray(x), jnp.asarray(w), jnp.asarray(ct)

    def ours(grad=grad, jx=jx, jw=jw, jct=jct):
      jax.block_until_ready(grad(jx, jw, jct))

    tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tw = torch.tensor(w.transpose(3, 2, 0, 1).copy(), requires_grad=True)
    tct = torch.tensor(ct.transpose(0, 3, 1, 2).copy())
    # TF 'SAME' padding as timm's dm_ models do it (asymmetric for stride 2).
    total_pad = max((ho - 1) * s + k - h, 0)
    lo, hi = total_pad // 2, total_pad - total_pad // 2

    def theirs(tx=tx, tw=tw, tct=tct, lo=lo, hi=hi, s=s, g=g):
      xx = torch.nn.functional.pad(tx, (lo, hi, lo, hi)) if hi else tx
      y = torch.nn.functional.conv2d(xx, tw, stride=s, groups=g)
      tx.grad = None
      tw.grad = None
      y.backward(tct)

    for fn in (ours, ours, theirs, theirs):  # compile / warm up
      fn()
    mo, mt = [], []
    for _ in range(a.rounds):
      mo.append(_median_ms(ours, a.reps))
      mt.append(_median_ms(theirs, a.reps))
    o, t = statistics.median(mo), statistics.median(mt)
    tot_ours += o * count
    tot_torch += t * count
    name = f'{n} {h} {cin}->{cout} {k}x{k} s{s} g{g}'
    print(f'{name:34s} {count:5d} {o:8.2f} {t:8.2f} {o / t:10.2f} {o * count:10.1f} '
          f'{t * count:11.1f}', flush=True)
  print(f"{'all convolutions':34s} {'':5s} {'':8s} {'':8s} {tot_ours / tot_torch:10.2f} "
        f'{tot_ours:10.1f} {tot_torch:11.1f}')


if __name__ == '__main__':
  main()
