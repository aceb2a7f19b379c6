"""Writes and executes docs/tutorial.ipynb (the committed notebook is this output).

  python docs/make_tutorial.py              # full setting, ~5-10 min on a 2-core CPU
  NFNET_TUTORIAL_TINY=1 python docs/make_tutorial.py --out /tmp/t.ipynb   # what the test runs

The notebook's first code cell reads NFNET_TUTORIAL_TINY: "1" swaps in tiny
models and a handful of steps, so tests/test_tutorial.py re-executes every
cell in about a minute.
"""
import argparse
import os
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))

CELLS = [
    ('md', """# nfnet_jax tutorial

Build NFNet-F0 and count it, load official-format weights and classify an
image, compare the signal propagation of an NF-ResNet with a BatchNorm
ResNet, load timm weights, and train the quickstart model while watching AGC.
Every cell runs on a CPU. Set `NFNET_TUTORIAL_TINY=1` for a one-minute run
with tiny models (what `tests/test_tutorial.py` executes)."""),
    ('code', """import os, sys, time, tempfile, warnings
warnings.filterwarnings('ignore', message='IProgress not found')   # tqdm in a notebook
TINY = os.environ.get('NFNET_TUTORIAL_TINY') == '1'   # the test's tiny setting
REPO = os.path.abspath('..') if os.path.isdir('../nfnet_jax') else os.path.abspath('.')
sys.path.insert(0, REPO)
from nfnet_jax.commands import base
base.quiet_console()          # no TensorFlow start-up lines in the outputs
WORK = tempfile.mkdtemp(prefix='nfnet_tutorial_')
print('tiny setting' if TINY else 'full setting', '| scratch dir', WORK)"""),
    ('md', """## 1. NFNet-F0: parameters and FLOPs

`create_model` builds any registered model from its config; `jax.eval_shape`
gives the parameter shapes without computing anything. FLOPs are counted by
DeepMind's `count_flops` rule (multiply-adds of convs, SE and classifier), the
convention of the papers' tables (F0: 12.38 G at 256 px)."""),
    ('code', """import functools
import jax, jax.numpy as jnp, numpy as np
from nfnet_jax.config.load import load_config
from nfnet_jax.models import create_model
from nfnet_jax.analysis import zoo

f0 = {'name': 'NFNet', 'variant': 'F0'}          # registry name + constructor keywords
print('NFNet-F0 parameters:', f'{zoo.count_params(f0):,}')
print('NFNet-F0 GMACs at 256 px (official count):', round(zoo.official_macs(f0, 256) / 1e9, 2))"""),
    ('md', """## 2. Official-format weights: load and classify

DeepMind publishes the trained NFNets as `F0_haiku.npz` ... `F6_haiku.npz`
(dill pickles of the Haiku params):

```bash
wget https://storage.googleapis.com/dm-nfnets/F0_haiku.npz
```

This notebook runs without internet, so it writes a file of the same format
from freshly initialised weights and loads that. With the real file, the same
two lines (`pretrained.load_official`, then `apply`) give ImageNet
predictions; with random weights the "prediction" below is meaningless, only
the mechanics are shown."""),
    ('code', """from nfnet_jax import pretrained
model_cfg = dict(f0, depths=(1, 1, 1, 1), widths=(16, 32, 64, 64), stem_widths=(4, 8, 8, 8), group_width=8) if TINY else f0
res = 64 if TINY else 256
model = create_model(model_cfg, num_classes=1000)
params, _ = jax.jit(model.init, static_argnums=2)(jax.random.PRNGKey(0), jnp.zeros((1, res, res, 3)), False)
path = os.path.join(WORK, 'F0_haiku.npz')
pretrained.save_official(params, path)                       # the official file format
loaded = pretrained.load_official(path, model_cfg)            # names and shapes checked
print(f'{path}: {os.path.getsize(path) / 2**20:.1f} MiB, {len(loaded)} modules')

# An image: a smooth synthetic picture, normalised like the ImageNet eval
# pipeline (mean/std in 0-255 units).
yy, xx = np.mgrid[0:res, 0:res] / res
image = np.stack([np.sin(6 * xx), np.cos(4 * yy), xx * yy], -1) * 127 + 128
mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
x = ((image - mean) / std)[None].astype(np.float32)
logits = jax.jit(lambda p, x: model.apply(p, {}, None, x, False)[0]['logits'])(loaded, x)
probs = jax.nn.softmax(logits[0])
top5 = np.argsort(-probs)[:5]
print('top-5 classes (random weights):', [(int(c), round(float(probs[c]), 4)) for c in top5])"""),
    ('md', """## 3. Signal propagation: NF-ResNet-50 against a BatchNorm ResNet-50

The NF-ResNet paper's signal propagation plot: per residual block, the
average squared channel mean, the average channel variance and the
residual branch's variance, at initialization on Gaussian input. The NF-ResNet
(scaled weight standardization, alpha 0.2) follows the staircase
`1 + k * alpha^2` (dashed), reset at each transition; the BN-ReLU-Conv ResNet
grows linearly within each stage."""),
    ('code', """import matplotlib.pyplot as plt
from IPython.display import Image, display
from nfnet_jax.analysis import spp as spp_lib
names = ([f'{n}:widths=(16,16,16,16);stem_width=8' for n in ('nf_resnet26', 'bn_resnet26_bn_relu_conv')]
         if TINY else ['nf_resnet50', 'bn_resnet50_bn_relu_conv'])
size, batch = (32, 4) if TINY else (64, 16)
images = spp_lib.gaussian_batch(batch, size)
configs = {n: spp_lib.resolve_spec(n) for n in names}
results = {n: spp_lib.compute_spp(configs[n], images, jit=not TINY) for n in names}
png = os.path.join(WORK, 'spp.png')
spp_lib.plot_spp(results, png, configs, title=f'Signal propagation at init ({size} px, batch {batch})')
print(spp_lib.summarize(results, configs))
display(Image(png))"""),
    ('md', """## 4. timm weights in, same logits out

`nfnet_jax.interop.timm` maps every timm NF model's state dict onto our
modules, carrying timm's numerics (symmetric padding, exact GELU, its weight
standardization epsilon) as model options. A randomly initialised timm model
stands in for a downloaded checkpoint; its logits and ours must agree."""),
    ('code', """from nfnet_jax.interop import timm as timm_lib
timm_lib.avoid_triton_after_tensorflow()
import torch, timm
name = 'nf_resnet26'
kw = dict(depths=(1, 1, 1, 1)) if TINY else {}
torch.manual_seed(0)
ref = timm.create_model(name, num_classes=10, **kw).eval()
torch.save(ref.state_dict(), os.path.join(WORK, 'nf_resnet26.pth'))
cfg, tparams = timm_lib.load_timm(os.path.join(WORK, 'nf_resnet26.pth'), name, overrides=kw or None)
xs = np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32)
with torch.no_grad():
  theirs = ref(torch.from_numpy(xs.transpose(0, 3, 1, 2).copy())).numpy()
ours = np.asarray(create_model(cfg, 10).apply(tparams, {}, None, xs, False)[0]['logits'])
print('max |ours - timm| / max |timm| =', float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
assert np.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())"""),
    ('md', """## 5. Train the quickstart model and watch AGC

The quickstart NF-ResNet on Fashion-MNIST (Debian's `dataset-fashion-mnist`),
with the quickstart's AGC (lambda 0.04; the classifier and the zero-initialised
skip gains are not clipped, see `configs/fashion_mnist.py`) for 300 steps
(about 1.3 epochs). The training loop is the one `nfnet-train` runs; its
`metrics.jsonl` holds the train loss and, per stage, the fraction of AGC
units that were clipped."""),
    ('code', """import contextlib, io, json
from nfnet_jax.train import loop
spec = 'configs/fashion_mnist.py:local' if TINY else 'configs/fashion_mnist.py'
steps = 6 if TINY else 300
config = load_config(os.path.join(REPO, spec), [
    ('train.total_steps', str(steps)), ('train.log_every', '2' if TINY else '25'),
    ('optimizer.warmup_steps', '2' if TINY else '30'),
    ('train.checkpoint_every', '0'), ('train.compilation_cache_dir', 'None')])
workdir = os.path.join(WORK, 'quickstart')
t0 = time.time()
with contextlib.redirect_stderr(io.StringIO()):   # the progress bar; log lines stay
  summary = loop.train_and_evaluate(config, workdir)
print(f"{steps} steps in {time.time() - t0:.0f} s; test top-1 {summary['final_eval']['top1']:.2%}")"""),
    ('code', """rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
train = [r for r in rows if r.get('split') == 'train']
agc = [r for r in rows if r.get('split') == 'agc']
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
a.plot([r['step'] for r in train], [r['train/loss'] for r in train])
a.set(xlabel='step', ylabel='train loss', title='loss')
keys = [k for k in agc[0] if k.startswith('agc/clipped/')]
b.plot([r['step'] for r in agc], [100 * np.mean([r[k] for k in keys]) for r in agc])
b.set(xlabel='step', ylabel='% of units clipped (mean over layers)', title='AGC, lambda 0.04')
plt.tight_layout()
curves = os.path.join(WORK, 'loss_agc.png')
fig.savefig(curves, dpi=90)
plt.close(fig)
display(Image(curves))
# Per layer: nfnet-agc-report's figure (clipped fraction by depth x step,
# and each layer's ||G|| / ||W|| against lambda).
from nfnet_jax.analysis import agc_report
display(Image(agc_report.plot_agc_report(workdir)))"""),
]


def build() -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3',
                               'language': 'python'}
  for kind, src in CELLS:
    nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == 'md'
                    else nbformat.v4.new_code_cell(src))
  return nb


def execute(nb, cwd: str, timeout: int = 1800) -> nbformat.NotebookNode:
  NotebookClient(nb, timeout=timeout, kernel_name='python3',
                 resources={'metadata': {'path': cwd}}).execute()
  return nb


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', default=os.path.join(HERE, 'tutorial.ipynb'))
  args = p.parse_args(argv)
  t0 = time.time()
  nb = execute(build(), HERE)
  nbformat.write(nb, args.out)
  print(f'wrote {args.out} ({time.time() - t0:.0f} s)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
