r"""Peer comparison: nfnet_jax vs timm (PyTorch, CPU) train and eval steps.

  pip install -e '.[bench]' -c constraints.txt    # torch and timm, not core deps
  python benchmarks/timm_compare.py [--shapes all] [--rounds 7] [--impls auto,xla]
      [--json_out results.jsonl] [--ema]

For every shape both frameworks get the same work, and their steps are timed
ALTERNATELY (one ours, one timm's, ...) so that load from other processes on
this shared machine hits both alike; medians and the ratio ours/timm in
images/s are printed, with the load average before and after.

Train step (both sides): forward in training mode (dropout and stochastic
depth as in the recipe), label-smoothed (0.1) cross-entropy, backward,
adaptive gradient clipping (lambda 0.01, eps 1e-3; classifier excluded, as
timm's train.py does with `--clip-mode agc`), SGD with Nesterov momentum 0.9
and weight decay 2e-5 (timm: torch.optim.SGD; ours: the recipe's optax chain,
which exempts gains and biases from the decay). `--ema` adds a parameter EMA
to both (timm: ModelEmaV3). Eval step: forward in inference mode.
torch uses 2 threads (the machine has 2 cores), eager mode, NCHW (timm's
default; `--channels_last` to try the other layout).

Shapes: F0 train b8@128 and b4@192, F0 eval b8@256, NF-ResNet-50 train b8@128.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {
    'f0_train_b8_128': ('dm_nfnet_f0', 'NFNet', 'F0', 'train', 8, 128),
    'f0_train_b4_192': ('dm_nfnet_f0', 'NFNet', 'F0', 'train', 4, 192),
    'f0_eval_b8_256': ('dm_nfnet_f0', 'NFNet', 'F0', 'eval', 8, 256),
    'nfr50_train_b8_128': ('nf_resnet50', 'NFResNet', 'ResNet50', 'train', 8, 128),
}
NUM_CLASSES = 1000
LABEL_SMOOTHING = 0.1
AGC_CLIP = 0.01


def import_timm():
  """Imports timm with torch's CPU wheel.

  torchvision's PyPI wheel is built against CUDA torch; with the CPU torch
  wheel its C++ ops library does not load and `import torchvision` fails
  while registering fake kernels for those ops (nms, roi_align, ...). timm
  needs none of them, so the fake-kernel registrations of torchvision ops
  that do not exist are skipped during the import.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch.library  # pylint: disable=g-import-not-at-top
  orig = torch.library.register_fake

  def lenient(op, *args, **kw):
    if not (isinstance(op, str) and op.startswith('torchvision::')):
      return orig(op, *args, **kw)

    def deco(fn):
      try:
        return orig(op, *args, **kw)(fn)
      except RuntimeError:
        return fn
    return deco
  torch.library.register_fake = lenient
  try:
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
  finally:
    torch.library.register_fake = orig
  import timm  # pylint: disable=g-import-not-at-top
  return torch, timm


def uptime() -> str:
  la = os.getloadavg()
  return f'load {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}'


# ------------------------------------------------------------------- timm


def timm_step_fn(torch, timm, model_name, mode, batch, res, ema, channels_last, drop_rate,
                 drop_path_rate, *, device='cpu', amp_dtype=None, compile_model=False,
                 model=None, num_classes=NUM_CLASSES):
  """Returns a zero-arg callable running one timm step, and the param count.

  Args (beyond the shape): `device` ('cpu' or 'cuda'); `amp_dtype` (e.g.
  torch.bfloat16: the forward under `torch.autocast`, as timm's train.py
  --amp); `compile_model` (`torch.compile` the model); `model` (a ready
  module instead of `timm.create_model(model_name)`, e.g. a tiny NormFreeNet).
  The callable waits for the device before returning.
  """
  import contextlib  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from timm.utils import agc  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  if model is None:
    model = timm.create_model(model_name, num_classes=num_classes, drop_rate=drop_rate,
                              drop_path_rate=drop_path_rate)
  model = model.to(device)
  x = torch.randn(batch, 3, res, res, device=device)
  y = torch.randint(0, num_classes, (batch,), device=device)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  n_params = sum(p.numel() for p in model.parameters())
  fwd = torch.compile(model) if compile_model else model
  autocast = (lambda: torch.autocast(device_type=device.split(':')[0], dtype=amp_dtype)) \
      if amp_dtype is not None else contextlib.nullcontext
  sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
  if mode == 'eval':
    model.eval()

    def step():
      with torch.inference_mode(), autocast():
        out = fwd(x)
      sync()
      return out
    return step, n_params

  model.train()
  head = set(id(p) for p in model.get_classifier().parameters())
  clip_params = [p for p in model.parameters() if id(p) not in head]
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=2e-5)
  model_ema = None
  if ema:
    from timm.utils import ModelEmaV3  # pylint: disable=g-import-not-at-top
    model_ema = ModelEmaV3(model, decay=0.99999)
  counter = [0]

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast():
      loss = F.cross_entropy(fwd(x), y, label_smoothing=LABEL_SMOOTHING)
    loss.backward()
    agc.adaptive_clip_grad(clip_params, clip_factor=AGC_CLIP, eps=1e-3)
    opt.step()
    if model_ema is not None:
      model_ema.update(model, step=counter[0])
    counter[0] += 1
    sync()
    return loss.item()
  return step, n_params


# -------------------------------------------------------------------- ours


def ours_step_fn(model_name, variant, mode, batch, res, ema, conv_impl):
  """Returns (zero-arg callable running one of our steps, params, compile s, FLOPs)."""
  import jax  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import benchmark as bench  # pylint: disable=g-import-not-at-top
  cfg = bench.config_for_model(model_name, variant)
  cfg.model.conv_impl = conv_impl
  cfg.optimizer.clipping = AGC_CLIP
  cfg.optimizer.label_smoothing = LABEL_SMOOTHING
  cfg.compute_dtype = 'float32'
  net, params, model_state = bench.build_model(cfg, NUM_CLASSES, res, batch)
  images, labels = bench._fake_batch(batch, res, NUM_CLASSES)  # pylint: disable=protected-access
  n_params = bench.param_count(params)
  if mode == 'eval':
    comp, args = bench.compile_eval_step(cfg, net, params, model_state, images,
                                         NUM_CLASSES)
    return (lambda: jax.block_until_ready(comp(*args)),
            n_params, comp.compile_s, comp.flops)
  run = bench.compile_train_step(cfg, net, params, model_state, images, labels,
                                 agc=True, ema=ema)
  return run, n_params, run.compiled.compile_s, run.compiled.flops


def model_regularization(model_name, variant):
  """(drop_rate, drop_path_rate) our default config uses, so timm gets the same."""
  from nfnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  if model_name == 'NFNet':
    from nfnet_jax.models import nfnet  # pylint: disable=g-import-not-at-top
    cfg = config_lib.base_config().model
    drop = cfg.drop_rate
    if drop is None:
      drop = nfnet.NFNet.VARIANTS[variant]['drop_rate']
    return drop, cfg.stochdepth_rate
  import inspect  # pylint: disable=g-import-not-at-top
  from nfnet_jax import models  # pylint: disable=g-import-not-at-top
  sig = inspect.signature(models.get_model_class(model_name).__init__).parameters
  get = lambda n: sig[n].default if n in sig and sig[n].default is not None else 0.0
  return get('drop_rate'), get('stochdepth_rate')


def time_alternating(fns, rounds, warmup):
  """Calls each fn once per round, in turn; returns {name: [ms]}."""
  for _ in range(warmup):
    for f in fns.values():
      f()
  out = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      t0 = time.perf_counter()
      f()
      out[k].append((time.perf_counter() - t0) * 1e3)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--shapes', default='all', help=f'comma list of {list(SHAPES)} or all')
  p.add_argument('--rounds', type=int, default=7)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--impls', default='auto',
                 help="our grouped conv impls to time (e.g. 'auto,xla' adds the "
                      "feature_group_count path)")
  p.add_argument('--xla_rounds', type=int, default=3,
                 help='rounds for the (slow) xla impl; it is timed after the others')
  p.add_argument('--ema', action='store_true', help='add a parameter EMA on both sides')
  p.add_argument('--channels_last', action='store_true')
  p.add_argument('--threads', type=int, default=2)
  p.add_argument('--json_out', default=None)
  a = p.parse_args()

  torch, timm = import_timm()
  torch.set_num_threads(a.threads)
  shapes = list(SHAPES) if a.shapes == 'all' else a.shapes.split(',')
  impls = a.impls.split(',')
  print(f'torch {torch.__version__} ({torch.get_num_threads()} threads), timm '
        f'{timm.__version__}; {uptime()}', flush=True)
  records = []
  for key in shapes:
    timm_name, model, variant, mode, batch, res = SHAPES[key]
    drop, dpr = model_regularization(model, variant)
    load0 = uptime()
    fns, info = {}, {}
    t_step, t_params = timm_step_fn(torch, timm, timm_name, mode, batch, res, a.ema,
                                    a.channels_last, drop, dpr)
    fns['timm'] = t_step
    info['timm'] = {'params': t_params}
    slow = {}
    for impl in impls:
      step, n_params, compile_s, flops = ours_step_fn(model, variant, mode, batch, res,
                                                      a.ema, impl)
      target = slow if impl == 'xla' and model == 'NFNet' else fns
      target[f'ours_{impl}'] = step
      info[f'ours_{impl}'] = {'params': n_params, 'compile_s': compile_s, 'flops': flops}
    ms = time_alternating(fns, a.rounds, a.warmup)
    if slow:
      # The feature_group_count path is ~5x slower: fewer rounds, alternated
      # with timm again so its ratio is still measured under the same load.
      ms_slow = time_alternating(dict(slow, timm2=fns['timm']), a.xla_rounds, 1)
      for k in slow:
        ms[k] = ms_slow[k]
      ms['timm_during_xla'] = ms_slow['timm2']
    load1 = uptime()
    med = {k: statistics.median(v) for k, v in ms.items()}
    print(f'\n== {key}: {model}-{variant} {mode} batch {batch} @ {res}px '
          f'(drop {drop}, drop_path {dpr}{", ema" if a.ema else ""})  [{load0} -> {load1}]')
    for k, v in ms.items():
      ips = batch / (med[k] * 1e-3)
      extra = ''
      if k in info and 'compile_s' in info[k]:
        extra = f"  compile {info[k]['compile_s']:.1f} s"
      print(f'  {k:18s} median {med[k]:8.1f} ms  (min {min(v):8.1f}, max {max(v):8.1f}, '
            f'n={len(v)})  {ips:7.2f} img/s{extra}')
    for impl in impls:
      k = f'ours_{impl}'
      ref = 'timm_during_xla' if k in slow else 'timm'
      ratio = med[ref] / med[k]
      print(f'  ratio {k}/timm (img/s): {ratio:.3f}')
      records.append({
          'shape': key, 'model': f'{model}-{variant}', 'mode': mode, 'batch': batch,
          'resolution': res, 'impl': impl, 'ours_ms': med[k], 'timm_ms': med[ref],
          'ratio_img_s': ratio, 'ours_ms_all': ms[k], 'timm_ms_all': ms[ref],
          'load_before': load0, 'load_after': load1, 'ema': a.ema,
          'channels_last': a.channels_last, **{f'ours_{n}': v for n, v in info[k].items()},
          'timm_params': info['timm']['params']})
    sys.stdout.flush()
    del fns, slow
  if a.json_out:
    with open(a.json_out, 'a') as f:
      for r in records:
        f.write(json.dumps(r) + '\n')


if __name__ == '__main__':
  main()
