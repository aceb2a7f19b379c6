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

Shapes: F0 train b8@128 and b4@192, F0 eval b8@256, NF-ResNet-50 train b8@128
(timm's registered models), and the small CPU networks users actually train
here, taken from our configs (:data:`CONFIG_SHAPES`):

  quickstart_train  `configs/fashion_mnist.py` (the quickstart): batch 256 at
                    48 px, one input channel, its optimizer (no AGC, EMA 0.999,
                    weight decay 5e-5, label smoothing 0.1);
  study_train       the studies' NF-ResNet (`configs/studies/clipping_batch.py`,
                    widths 64-512, AGC off as in its base config): batch 64
                    at 32 px, one channel, no EMA.

For those, timm's side is the same network built with timm's NormFreeNet
machinery (:func:`timm_twin`): same depths, widths, stem, scaled WS
(ScaledStdConv2d), SkipInit (a zero-initialised scalar per block), ReLU,
bottleneck ratio and strided-1x1 shortcuts; the parameter counts are
asserted equal. Its optimizer follows the config (SGD-Nesterov 0.9 at the
config's peak LR, weight decay on the weights only, as timm's
`param_groups_weight_decay`; AGC and ModelEmaV3 where the config has them).
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
# Shapes from our configs: (config spec, overrides, batch, resolution).
CONFIG_SHAPES = {
    'quickstart_train': ('configs/fashion_mnist.py', {}, 256, 48),
    'study_train': ('configs/studies/clipping_batch.py', {}, 64, 32),
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
                 model=None, num_classes=NUM_CLASSES, in_chans=3, lr=0.1,
                 weight_decay=2e-5, clipping=AGC_CLIP, label_smoothing=LABEL_SMOOTHING,
                 ema_decay=0.99999, decay_weights_only=False):
  """Returns a zero-arg callable running one timm step, and the param count.

  Args (beyond the shape): `device` ('cpu' or 'cuda'); `amp_dtype` (e.g.
  torch.bfloat16: the forward under `torch.autocast`, as timm's train.py
  --amp); `compile_model` (`torch.compile` the model); `model` (a ready
  module instead of `timm.create_model(model_name)`, e.g. a tiny NormFreeNet).
  The train step's settings: `in_chans` (input channels), `lr`,
  `weight_decay` (`decay_weights_only`: not on biases, gains and scalars, as
  timm's `param_groups_weight_decay`), `clipping` (AGC lambda; None: no AGC),
  `label_smoothing`, `ema_decay` (with `ema`).
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
  x = torch.randn(batch, in_chans, res, res, device=device)
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
  if decay_weights_only:
    decay = [p for p in model.parameters() if p.ndim > 1 and p.shape[1:].numel() > 1]
    ids = set(id(p) for p in decay)
    groups = [{'params': decay, 'weight_decay': weight_decay},
              {'params': [p for p in model.parameters() if id(p) not in ids],
               'weight_decay': 0.0}]
  else:
    groups = [{'params': list(model.parameters()), 'weight_decay': weight_decay}]
  opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
  model_ema = None
  if ema:
    from timm.utils import ModelEmaV3  # pylint: disable=g-import-not-at-top
    model_ema = ModelEmaV3(model, decay=ema_decay)
  counter = [0]

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast():
      loss = F.cross_entropy(fwd(x), y, label_smoothing=label_smoothing)
    loss.backward()
    if clipping is not None:
      agc.adaptive_clip_grad(clip_params, clip_factor=clipping, eps=1e-3)
    opt.step()
    if model_ema is not None:
      model_ema.update(model, step=counter[0])
    counter[0] += 1
    sync()
    return loss.item()
  return step, n_params


def nf_resnet_fields(model_cfg) -> dict:
  """Depths, widths, stem width, bottleneck ratio ... of our NFResNet config, defaults filled."""
  import inspect  # pylint: disable=g-import-not-at-top
  from nfnet_jax.models import nf_resnet  # pylint: disable=g-import-not-at-top
  sig = inspect.signature(nf_resnet.NFResNet.__init__).parameters
  kw = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
  kw.update({k: v for k, v in model_cfg.items() if v is not None and k != 'name'})
  depths = tuple(kw['depths'] or nf_resnet.NF_RESNET_VARIANTS[kw['variant']]['depth'])
  width = kw['width']
  widths = tuple(kw['widths'] or [int(w * width) for w in nf_resnet._BASE_WIDTHS])  # pylint: disable=protected-access
  stem_width = kw['stem_width'] if kw['stem_width'] is not None else int(16 * width)
  return dict(kw, depths=depths, widths=widths, stem_width=stem_width)


def timm_twin(torch, timm, model_cfg, num_classes, in_chans):
  """Our NFResNet config built with timm's NormFreeNet machinery (same network).

  timm's pieces: `NormFreeNet(NfCfg(...))` with ScaledStdConv2d (gamma folded
  into the conv, timm's fast default), `skipinit=True` (a zero scalar per
  block, the last conv's gain starting at 1, as ours), the '7x7_pool' stem
  ('imagenet') or a stride-1 3x3 conv ('small'), our stage strides (1, 2, 2, 2).
  Where our config keeps the official strided 1x1 projection shortcut
  (`shortcut='conv'`), timm's average-pool + 1x1 conv downsample is replaced
  by the strided 1x1 conv (same parameters, the same computation as ours).
  tests/test_timm_compare.py checks that with our weights it computes our
  logits.

  Raises:
    ValueError: a field this twin does not reproduce (SE/ECA, stochastic
      depth, another activation than timm knows).
  """
  from timm.models import nfnet as timm_nfnet  # pylint: disable=g-import-not-at-top
  f = nf_resnet_fields(model_cfg)
  if f['se_ratio'] or (f['stochdepth_rate'] or 0) > 0 or (f['drop_rate'] or 0) > 0:
    raise ValueError('timm_twin: SE, stochastic depth and dropout are not reproduced; '
                     f"got se_ratio={f['se_ratio']}, stochdepth_rate={f['stochdepth_rate']}, "
                     f"drop_rate={f['drop_rate']}")
  cfg = timm_nfnet.NfCfg(
      depths=f['depths'], channels=f['widths'], alpha=f['alpha'],
      stem_type='7x7_pool' if f['stem'] == 'imagenet' else '3x3',
      stem_chs=f['stem_width'], bottle_ratio=f['bottleneck_ratio'], ch_div=1,
      skipinit=True, act_layer=f['activation'])
  model = timm_nfnet.NormFreeNet(cfg, num_classes=num_classes, in_chans=in_chans)
  from nfnet_jax.models import nf_resnet  # pylint: disable=g-import-not-at-top
  if f['stem'] == 'small':
    model.stem.conv.stride = (1, 1)
  # Our strides per stage (timm strides its first stage unless the stem is /4).
  for stage, stride in zip(model.stages, nf_resnet.STRIDES):
    block = stage[0]
    block.conv2.stride = (stride, stride)
    ds = block.downsample
    if ds is not None and (f['shortcut'] == 'conv' or stride == 1):
      ds.pool = torch.nn.Identity()
      ds.conv.stride = (stride, stride) if f['shortcut'] == 'conv' else (1, 1)
  return model


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


def ours_config_step_fn(cfg, batch, res, in_chans, num_classes):
  """Our train step for a config (its model and optimizer): (callable, params, compile s, FLOPs)."""
  from nfnet_jax.analysis import benchmark as bench  # pylint: disable=g-import-not-at-top
  net, params, model_state = bench.build_model(cfg, num_classes, res, batch, channels=in_chans)
  images, labels = bench._fake_batch(batch, res, num_classes, channels=in_chans)  # pylint: disable=protected-access
  run = bench.compile_train_step(cfg, net, params, model_state, images, labels,
                                 agc=cfg.optimizer.clipping is not None,
                                 ema=cfg.optimizer.ema_decay is not None)
  return run, bench.param_count(params), run.compiled.compile_s, run.compiled.flops


def config_shape(key):
  """(config, batch, resolution, input channels, classes) of a :data:`CONFIG_SHAPES` key."""
  from nfnet_jax.config import load as load_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.data import datasets  # pylint: disable=g-import-not-at-top
  spec, overrides, batch, res = CONFIG_SHAPES[key]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cfg = load_lib.load_config(os.path.join(root, spec), overrides.items())
  cfg.train.batch_size = batch
  cfg.compute_dtype = 'float32'
  info = datasets.dataset_info(cfg.data)
  return cfg, batch, res, info.image_shape[-1], info.num_classes


def peak_lr(cfg, batch):
  """The config's peak learning rate at `batch` (linear scaling rule)."""
  o = cfg.optimizer
  return o.base_lr * batch / o.lr_batch_base if o.get('lr_batch_base') else o.base_lr


def config_fns(torch, timm, key, ema_flag):
  """{'timm': step, 'ours_auto': step}, info, and a label, for a config shape."""
  cfg, batch, res, chans, classes = config_shape(key)
  twin = timm_twin(torch, timm, cfg.model, classes, chans)
  o = cfg.optimizer
  ema = o.ema_decay is not None
  t_step, t_params = timm_step_fn(
      torch, timm, None, 'train', batch, res, ema, False, 0.0, 0.0, model=twin,
      num_classes=classes, in_chans=chans, lr=peak_lr(cfg, batch),
      weight_decay=o.weight_decay, clipping=o.clipping,
      label_smoothing=o.label_smoothing or 0.0, ema_decay=o.ema_decay,
      decay_weights_only=True)
  step, n_params, compile_s, flops = ours_config_step_fn(cfg, batch, res, chans, classes)
  if n_params != t_params:
    raise AssertionError(f'{key}: parameter counts differ, ours {n_params} vs timm {t_params}')
  del ema_flag  # the config decides
  label = (f'{CONFIG_SHAPES[key][0]} NFResNet train batch {batch} @ {res}px x{chans} '
           f'({n_params:,} params; AGC {o.clipping}, EMA {o.ema_decay})')
  return ({'timm': t_step, 'ours_auto': step},
          {'timm': {'params': t_params},
           'ours_auto': {'params': n_params, 'compile_s': compile_s, 'flops': flops}},
          label, batch, res)


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


def time_alternating(fns, rounds, warmup, cpu_out=None):
  """Calls each fn once per round, in turn; returns {name: [wall ms]}.

  `cpu_out` (a dict), if given, receives {name: [ms of this process's CPU
  time]} per call: the work a step costs, which other processes' load on
  this shared machine inflates far less than its wall time.
  """
  for _ in range(warmup):
    for f in fns.values():
      f()
  out = {k: [] for k in fns}
  cpu = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      t0, c0 = time.perf_counter(), time.process_time()
      f()
      out[k].append((time.perf_counter() - t0) * 1e3)
      cpu[k].append((time.process_time() - c0) * 1e3)
  if cpu_out is not None:
    cpu_out.update(cpu)
  return out


def report(key, model, mode, batch, res, impls, fns, slow, ms, info, load0, load1, a,
           cpu=None):
  """Prints each side's median ms and img/s and the ratios; returns the JSON records.

  With `cpu` ({name: [CPU ms]}), also each side's median CPU time per step
  and the ratio of images per CPU-second.
  """
  del fns
  cpu = cpu or {}
  med = {k: statistics.median(v) for k, v in ms.items()}
  cmed = {k: statistics.median(v) for k, v in cpu.items()}
  for k, v in ms.items():
    ips = batch / (med[k] * 1e-3)
    extra = ''
    if k in info and 'compile_s' in info[k]:
      extra = f"  compile {info[k]['compile_s']:.1f} s"
    if k in cmed:
      extra = f'  CPU {cmed[k]:8.1f} ms/step' + extra
    print(f'  {k:18s} median {med[k]:8.1f} ms  (min {min(v):8.1f}, max {max(v):8.1f}, '
          f'n={len(v)})  {ips:7.2f} img/s{extra}')
  records = []
  for impl in impls:
    k = f'ours_{impl}'
    ref = 'timm_during_xla' if k in slow else 'timm'
    ratio = med[ref] / med[k]
    print(f'  ratio {k}/timm (img/s): {ratio:.3f}')
    cpu_ratio = cmed[ref] / cmed[k] if k in cmed and ref in cmed else None
    if cpu_ratio is not None:
      print(f'  ratio {k}/timm (img per CPU-s): {cpu_ratio:.3f}')
    records.append({
        'shape': key, 'model': model, 'mode': mode, 'batch': batch,
        'resolution': res, 'impl': impl, 'ours_ms': med[k], 'timm_ms': med[ref],
        'ratio_img_s': ratio, 'ours_ms_all': ms[k], 'timm_ms_all': ms[ref],
        'ratio_img_per_cpu_s': cpu_ratio, 'ours_cpu_ms_all': cpu.get(k),
        'timm_cpu_ms_all': cpu.get(ref),
        'load_before': load0, 'load_after': load1, 'ema': a.ema,
        'channels_last': a.channels_last, **{f'ours_{n}': v for n, v in info[k].items()},
        'timm_params': info['timm']['params']})
  sys.stdout.flush()
  return records


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--shapes', default='all',
                 help=f'comma list of {list(SHAPES) + list(CONFIG_SHAPES)} or all')
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
  shapes = list(SHAPES) + list(CONFIG_SHAPES) if a.shapes == 'all' else a.shapes.split(',')
  unknown = [k for k in shapes if k not in SHAPES and k not in CONFIG_SHAPES]
  if unknown:
    p.error(f'--shapes: unknown {unknown}; allowed: {list(SHAPES) + list(CONFIG_SHAPES)} or all')
  impls = a.impls.split(',')
  print(f'torch {torch.__version__} ({torch.get_num_threads()} threads), timm '
        f'{timm.__version__}; {uptime()}', flush=True)
  records = []
  for key in shapes:
    if key in CONFIG_SHAPES:
      load0 = uptime()
      fns, info, label, batch, res = config_fns(torch, timm, key, a.ema)
      cpu = {}
      ms = time_alternating(fns, a.rounds, a.warmup, cpu)
      load1 = uptime()
      print(f'\n== {key}: {label}  [{load0} -> {load1}]')
      records += report(key, label, 'train', batch, res, ['auto'], fns, {}, ms, info,
                        load0, load1, a, cpu)
      continue
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
    label = (f'{model}-{variant} {mode} batch {batch} @ {res}px '
             f'(drop {drop}, drop_path {dpr}{", ema" if a.ema else ""})')
    print(f'\n== {key}: {label}  [{load0} -> {load1}]')
    records += report(key, f'{model}-{variant}', mode, batch, res, impls, fns, slow, ms,
                      info, load0, load1, a)
    sys.stdout.flush()
    del fns, slow
  if a.json_out:
    with open(a.json_out, 'a') as f:
      for r in records:
        f.write(json.dumps(r) + '\n')


if __name__ == '__main__':
  main()
