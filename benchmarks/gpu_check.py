r"""One-command accelerator check: nfnet_jax vs timm on one GPU.

  python benchmarks/gpu_check.py [--torch_compile] [--json_out gpu.jsonl]
  python benchmarks/gpu_check.py --tiny     # CPU smoke run: tiny models, seconds

Made for the typical GPU image (Python 3.12, jax with CUDA, torch + timm
preinstalled, no internet, no TensorFlow): it imports neither TensorFlow nor
tfds and feeds synthetic batches. nfnet_jax's own pure-Python requirements
(dm-haiku, optax, ml-collections) are the only extra wheels it needs.

In one process, for every case below, our step and timm's step are timed
ALTERNATELY (one call of each per round), so whatever else loads the machine
hits both alike:

  * NFNet-F0 train, bf16 compute, batch 128 @ 192 px (conv_impl xla AND
    split, to pick the grouped-conv implementation) and batch 256 @ 192 px;
  * NFNet-F0 eval, batch 256 @ 256 px;
  * NF-ResNet-50 train, batch 256 @ 224 px;
  * NF-RegNet-B0 train, batch 256 @ 224 px, when the model zoo has it.

Ours is the real train step (`nfnet_jax.train.step.make_train_step`: loss
with label smoothing 0.1, backward, cross-device mean, AGC -> weight decay ->
SGD-Nesterov, EMA, non-finite guard) wrapped by the loop's `Parallel`
(shard_map) on one device, exactly as training runs it, with donated state
(`nfnet_jax.analysis.benchmark.compile_train_step`, the same helper
`scripts/benchmark.py` times). timm's side:
channels_last, bf16 `torch.autocast`, SGD-Nesterov + AGC (timm.utils.agc,
classifier excluded) + label smoothing 0.1; `--torch_compile` adds
`torch.compile`.

Reported per case: images/s, ms/step median and spread (min/max), MFU (XLA's
FLOP count of our compiled step over the bf16 matmul peak measured in this
process; timm's MFU uses the same FLOP count, it is the same network),
compile time (ours: lower + compile; timm: the warm-up calls, which include
torch.compile when on), peak device memory (ours: XLA's accounting of the
executable, plus the device allocator's process peak where the backend
reports it; timm: torch.cuda.max_memory_allocated), and the ratio
ours/timm in images/s. Then the conv_impl verdict: which grouped-conv
implementation was faster on this backend, and whether `conv_impl='auto'`
(table `nfnet_jax.nn.grouped_conv.AUTO_IMPL`) already picks it.

The whole run is kept under `--budget_s` (default 480 s = 8 min): a case
that would start after 85% of the budget is skipped and reported as such.
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NUM_CLASSES = 1000
LABEL_SMOOTHING = 0.1
AGC_CLIP = 0.01


@dataclasses.dataclass
class Case:
  key: str
  model: str            # our registry name
  variant: str
  timm_name: str
  mode: str             # 'train' | 'eval'
  batch: int
  res: int
  conv_impls: Tuple[str, ...] = ('auto',)


CASES = [
    Case('f0_train_b128_192', 'NFNet', 'F0', 'dm_nfnet_f0', 'train', 128, 192,
         ('xla', 'split')),
    Case('f0_train_b256_192', 'NFNet', 'F0', 'dm_nfnet_f0', 'train', 256, 192),
    Case('f0_eval_b256_256', 'NFNet', 'F0', 'dm_nfnet_f0', 'eval', 256, 256),
    Case('nfr50_train_b256_224', 'NFResNet', 'ResNet50', 'nf_resnet50', 'train',
         256, 224),
    Case('nfregnet_b0_train_b256_224', 'NFRegNet', 'B0', 'nf_regnet_b0', 'train',
         256, 224),
]

# --tiny: the same cases with tiny networks and shapes, so the whole script
# (both sides, both conv impls) runs on a CPU in seconds.
TINY_SHAPES = {'train': (4, 32), 'eval': (4, 40)}
TINY_OURS = {
    'NFNet': dict(depths=(1, 1, 1, 1), widths=(16, 32, 48, 48),
                  stem_widths=(4, 4, 8, 8), group_width=8),
    'NFResNet': dict(depths=(1, 1, 1, 1), widths=(16, 32, 48, 64), stem_width=8),
    'NFRegNet': dict(depths=(1, 1, 1, 1), widths=(16, 32, 48, 64)),
}
TINY_TIMM = {
    'dm_nfnet_f0': dict(depths=(1, 1, 1, 1), channels=(16, 32, 48, 48), stem_chs=8,
                        group_size=8, num_features=96),
    'nf_resnet50': dict(depths=(1, 1, 1, 1), channels=(16, 32, 48, 64), stem_chs=8),
    'nf_regnet_b0': dict(depths=(1, 1, 1, 1), channels=(16, 32, 48, 64), num_features=128),
}


def log(msg: str) -> None:
  print(f'[gpu_check {time.strftime("%H:%M:%S")}] {msg}', flush=True)


# ------------------------------------------------------------------ ours


def our_config(case: Case, conv_impl: str, tiny: bool):
  """The experiment config of one case (bf16 compute, the recipe optimizer)."""
  from nfnet_jax.analysis import benchmark as bench  # pylint: disable=g-import-not-at-top
  cfg = bench.config_for_model(case.model, case.variant)
  cfg.model.conv_impl = conv_impl
  if tiny:
    for k, v in TINY_OURS.get(case.model, {}).items():
      cfg.model[k] = v
  cfg.compute_dtype = 'bfloat16'
  cfg.optimizer.clipping = AGC_CLIP
  cfg.optimizer.label_smoothing = LABEL_SMOOTHING
  cfg.optimizer.warmup_steps = 10
  cfg.train.total_steps = 1000
  cfg.train.batch_size = case.batch
  return cfg


def model_available(name: str) -> bool:
  from nfnet_jax import models  # pylint: disable=g-import-not-at-top
  try:
    models.get_model_class(name)
    return True
  except (ValueError, ImportError):
    return False


@dataclasses.dataclass
class OurStep:
  run: Callable[[], Any]
  compile_s: float
  flops: Optional[float]
  xla_peak_mib: Optional[float]
  params: int


_INIT_CACHE: Dict[Any, Any] = {}


def our_step(case: Case, conv_impl: str, tiny: bool, batch: int, res: int) -> OurStep:
  """Compiles the loop's own train (or eval) step on one device.

  `nfnet_jax.analysis.benchmark.compile_train_step` / `compile_eval_step`:
  the step of `nfnet_jax/train/step.py` wrapped by the loop's `Parallel`
  (shard_map) on one device, donated state, AOT-compiled.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from nfnet_jax import models  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import benchmark as bench  # pylint: disable=g-import-not-at-top
  cfg = our_config(case, conv_impl, tiny)
  cfg.train.batch_size = batch
  # The conv impls share parameter trees: initialise once per case and shape.
  init_key = (case.key, batch, res)
  if init_key not in _INIT_CACHE:
    _INIT_CACHE.clear()
    # Batch 1: the parameters do not depend on it, and the init compiles faster.
    _, params, model_state = bench.build_model(cfg, NUM_CLASSES, res, 1)
    _INIT_CACHE[init_key] = jax.device_get((params, model_state))
  params, model_state = _INIT_CACHE[init_key]
  net = models.create_model(cfg.model, NUM_CLASSES)
  images, labels = bench._fake_batch(batch, res, NUM_CLASSES)  # pylint: disable=protected-access
  n_params = bench.param_count(params)
  if case.mode == 'eval':
    comp, args = bench.compile_eval_step(cfg, net, params, model_state, images, NUM_CLASSES)
    run = lambda: bench.block(comp(*args))
  else:
    stepper = bench.compile_train_step(cfg, net, params, model_state, images, labels)
    comp, run = stepper.compiled, stepper
  return OurStep(run, comp.compile_s, comp.flops, comp.memory.get('peak_mib'), n_params)


def device_peak_mib() -> Optional[float]:
  """The device allocator's peak so far (process-wide), where reported."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    return None
  peak = stats.get('peak_bytes_in_use')
  return peak / 2**20 if peak is not None else None


# ------------------------------------------------------------------ timm


def timm_step(torch, timm, case: Case, tiny: bool, batch: int, res: int, device: str,
              compile_model: bool):
  """(zero-arg step, n_params) of timm's model for `case` (timm_compare's step)."""
  from benchmarks import timm_compare  # pylint: disable=g-import-not-at-top
  drop, dpr = timm_compare.model_regularization(case.model, case.variant) \
      if model_available(case.model) else (0.0, 0.0)
  model = None
  if tiny:
    from timm.models import nfnet as timm_nfnet  # pylint: disable=g-import-not-at-top
    cfg = dataclasses.replace(timm_nfnet.model_cfgs[case.timm_name],
                              **TINY_TIMM[case.timm_name])
    torch.manual_seed(0)
    model = timm_nfnet.NormFreeNet(cfg, num_classes=NUM_CLASSES, drop_rate=drop,
                                   drop_path_rate=dpr)
  return timm_compare.timm_step_fn(
      torch, timm, case.timm_name, case.mode, batch, res, ema=True, channels_last=True,
      drop_rate=drop, drop_path_rate=dpr, device=device, amp_dtype=torch.bfloat16,
      compile_model=compile_model, model=model)


def import_torch_timm():
  try:
    from benchmarks import timm_compare  # pylint: disable=g-import-not-at-top
    return timm_compare.import_timm()
  except ImportError as e:
    log(f'timm side skipped: {e}')
    return None, None


# ---------------------------------------------------------------- timing


def measure_peak_tflops(tiny: bool) -> float:
  """bf16 matmul TFLOP/s measured here (the MFU denominator)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import benchmark as bench  # pylint: disable=g-import-not-at-top
  n = 256 if tiny else 8192
  return bench.measure_matmul_peak(n=n, dtype=jnp.bfloat16, reps=5 if tiny else 20) / 1e3


def summarize(name: str, ms: List[float], batch: int, flops: Optional[float],
              peak_tflops: float) -> Dict[str, Any]:
  med = statistics.median(ms)
  rec = {'side': name, 'median_ms': med, 'min_ms': min(ms), 'max_ms': max(ms),
         'n': len(ms), 'images_per_s': batch / (med * 1e-3)}
  if flops:
    rec['tflops_per_s'] = flops / (med * 1e-3) / 1e12
    rec['mfu_pct'] = 100.0 * rec['tflops_per_s'] / peak_tflops
  return rec


def fmt(rec: Dict[str, Any]) -> str:
  s = (f"  {rec['side']:14s} {rec['images_per_s']:9.1f} img/s  median {rec['median_ms']:8.2f} ms "
       f"(min {rec['min_ms']:.2f}, max {rec['max_ms']:.2f}, n={rec['n']})")
  if 'mfu_pct' in rec:
    s += f"  MFU {rec['mfu_pct']:5.1f}%"
  if rec.get('compile_s') is not None:
    s += f"  compile {rec['compile_s']:.1f} s"
  for k in ('xla_peak_mib', 'device_peak_mib', 'cuda_peak_mib'):
    if rec.get(k) is not None:
      s += f"  {k.replace('_mib', '')} {rec[k]:.0f} MiB"
  return s


# ------------------------------------------------------------------ main


def run_case(case: Case, a, torch, timm, peak_tflops: float, device: str) -> List[Dict]:
  batch, res = TINY_SHAPES[case.mode] if a.tiny else (case.batch, case.res)
  fns, info = {}, {}
  flops = None
  for impl in case.conv_impls:
    t0 = time.perf_counter()
    s = our_step(case, impl, a.tiny, batch, res)
    fns[f'ours_{impl}'] = s.run
    flops = flops or s.flops
    info[f'ours_{impl}'] = {'compile_s': s.compile_s, 'xla_peak_mib': s.xla_peak_mib,
                            'params': s.params, 'flops': s.flops}
    log(f'{case.key}: ours conv_impl={impl} compiled in {s.compile_s:.1f} s '
        f'(built in {time.perf_counter() - t0:.1f} s)')
  if torch is not None:
    if device.startswith('cuda'):
      torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step, n_params = timm_step(torch, timm, case, a.tiny, batch, res, device,
                               a.torch_compile)
    for _ in range(a.warmup):
      step()
    info['timm'] = {'compile_s': time.perf_counter() - t0, 'params': n_params}
    fns['timm'] = step
  for k, f in fns.items():
    if k != 'timm':
      for _ in range(a.warmup):
        f()
  # Warm-up happened above (timm's inside its compile timing).
  from benchmarks import timm_compare  # pylint: disable=g-import-not-at-top
  ms = timm_compare.time_alternating(fns, a.rounds, warmup=0)
  recs = []
  for k, v in ms.items():
    rec = summarize(k, v, batch, flops, peak_tflops)
    rec.update(info.get(k, {}))
    if k == 'timm' and device.startswith('cuda'):
      rec['cuda_peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
    recs.append(rec)
  dev_peak = device_peak_mib()
  print(f'\n== {case.key}: {case.model}-{case.variant} {case.mode} batch {batch} @ {res}px, '
        f'bf16  [load {os.getloadavg()[0]:.2f}]')
  for rec in recs:
    if rec['side'].startswith('ours') and dev_peak is not None:
      rec['device_peak_mib'] = dev_peak
    print(fmt(rec))
  if 'timm' in ms:
    for rec in recs:
      if rec['side'].startswith('ours'):
        rec['ratio_vs_timm'] = rec['images_per_s'] / recs[-1]['images_per_s']
        print(f"  ratio {rec['side']}/timm (img/s): {rec['ratio_vs_timm']:.3f}")
  for rec in recs:
    rec.update(case=case.key, model=f'{case.model}-{case.variant}', mode=case.mode,
               batch=batch, resolution=res, tiny=a.tiny)
  sys.stdout.flush()
  if torch is not None and device.startswith('cuda'):
    del fns
    torch.cuda.empty_cache()   # return timm's cached blocks before JAX's next case
  return recs


def conv_impl_verdict(recs: List[Dict], backend: str) -> Optional[Dict[str, Any]]:
  """Which grouped-conv impl won on this backend, and what 'auto' picks."""
  from nfnet_jax.nn import grouped_conv  # pylint: disable=g-import-not-at-top
  times = {r['side'][len('ours_'):]: r['median_ms'] for r in recs
           if r['side'] in ('ours_xla', 'ours_split')}
  if len(times) < 2:
    return None
  faster = min(times, key=times.get)
  auto = grouped_conv.resolve_impl('auto')
  out = {'backend': backend, 'xla_ms': times['xla'], 'split_ms': times['split'],
         'faster': faster, 'auto_picks': auto, 'auto_agrees': auto == faster}
  print(f"\nconv_impl on {backend}: xla {times['xla']:.2f} ms, split {times['split']:.2f} ms "
        f"-> {faster} is faster ({max(times.values()) / min(times.values()):.2f}x); "
        f"conv_impl='auto' picks {auto}"
        + ('' if auto == faster else
           f": set AUTO_IMPL[{backend!r}] = {faster!r} in nfnet_jax/nn/grouped_conv.py"))
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--tiny', action='store_true',
                 help='tiny networks and shapes (a CPU smoke run of the whole script)')
  p.add_argument('--cases', default='all', help=f'comma list of {[c.key for c in CASES]}')
  p.add_argument('--rounds', type=int, default=None, help='timed rounds (default 20; tiny 3)')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--no_timm', action='store_true', help='time our side only')
  p.add_argument('--torch_compile', action='store_true', help='torch.compile timm\'s model')
  p.add_argument('--budget_s', type=float, default=480.0,
                 help='skip cases that would start after 85%% of this wall budget')
  p.add_argument('--json_out', default=None, help='append one JSON record per line')
  a = p.parse_args(argv)
  a.rounds = a.rounds or (3 if a.tiny else 20)
  t_start = time.perf_counter()
  # JAX and torch share the GPU here: without this JAX would reserve 75% of
  # its memory at start-up and leave timm too little.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

  import jax  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  dev = jax.devices()[0]
  if backend == 'cpu' and not a.tiny:
    log('warning: no accelerator (jax backend cpu); the full shapes will be slow. '
        'Use --tiny for a smoke run.')
  torch = timm = None
  if not a.no_timm:
    torch, timm = import_torch_timm()
  device = 'cpu'
  if torch is not None:
    if backend == 'gpu' and torch.cuda.is_available():
      device = 'cuda'
      torch.backends.cudnn.benchmark = True
    elif backend == 'cpu':
      torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    else:
      log(f'timm side skipped: jax runs on {backend} but torch has no such device')
      torch = timm = None
  keys = [c.key for c in CASES] if a.cases == 'all' else a.cases.split(',')
  unknown = set(keys) - {c.key for c in CASES}
  if unknown:
    p.error(f'--cases: unknown {sorted(unknown)}; allowed: {[c.key for c in CASES]}')
  cases = [c for c in CASES if c.key in keys]

  peak = measure_peak_tflops(a.tiny)
  header = {'record': 'env', 'jax': jax.__version__, 'backend': backend,
            'device': getattr(dev, 'device_kind', str(dev)),
            'bf16_matmul_peak_tflops': peak, 'python': sys.version.split()[0],
            'torch': getattr(torch, '__version__', None),
            'timm': getattr(timm, '__version__', None), 'torch_device': device,
            'torch_compile': a.torch_compile, 'tiny': a.tiny,
            'tensorflow_imported': 'tensorflow' in sys.modules}
  print(f"jax {header['jax']} on {backend} ({header['device']}); bf16 matmul peak "
        f"{peak:.2f} TFLOP/s; torch {header['torch']}, timm {header['timm']} on {device}"
        f"{' (torch.compile)' if a.torch_compile else ''}; python {header['python']}")
  records: List[Dict[str, Any]] = [header]
  for case in cases:
    elapsed = time.perf_counter() - t_start
    if elapsed > 0.85 * a.budget_s:
      log(f'{case.key}: skipped (time budget: {elapsed:.0f} s of {a.budget_s:.0f} s used)')
      records.append({'case': case.key, 'skipped': 'time budget'})
      continue
    if not model_available(case.model):
      log(f'{case.key}: skipped (no {case.model} in the nfnet_jax model zoo)')
      records.append({'case': case.key, 'skipped': f'no {case.model} model'})
      continue
    recs = run_case(case, a, torch, timm, peak, device)
    records.extend(recs)
    verdict = conv_impl_verdict(recs, backend)
    if verdict:
      records.append(dict(verdict, record='conv_impl'))
  total = time.perf_counter() - t_start
  print(f'\ntotal wall time {total:.0f} s; TensorFlow imported: '
        f"{'tensorflow' in sys.modules}")
  records.append({'record': 'total', 'wall_s': total,
                  'tensorflow_imported': 'tensorflow' in sys.modules})
  if a.json_out:
    with open(a.json_out, 'a') as f:
      for r in records:
        f.write(json.dumps(r) + '\n')
  return records


if __name__ == '__main__':
  main()
