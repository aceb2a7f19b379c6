"""Benchmarks: the train and eval steps, the input pipeline; timing helpers.

Library code behind `scripts/benchmark.py` and `benchmarks/timm_compare.py`.
The steps timed are the training loop's own (`nfnet_jax.train.step`): the
train step wrapped for a one-device `Parallel` (forward, label-smoothed
cross-entropy, backward, the cross-device mean, the optimizer chain of
`nfnet_jax.optim.build_optimizer` -- AGC -> coupled weight decay ->
SGD-Nesterov with the LR schedule --, the parameter EMA and the non-finite
guard, with donated state buffers), and the eval step (logits, loss and
top-1/top-5 sums). `benchmark_pipeline` times the train input pipeline,
optionally on a locally built synthetic imagenet2012.
"""
import copy
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nfnet_jax import models
from nfnet_jax import optim
from nfnet_jax.config import schema as config_schema
from nfnet_jax.data import imagenet
from nfnet_jax.testing import fake_data
from nfnet_jax.train import parallel as parallel_lib
from nfnet_jax.train import state as state_lib
from nfnet_jax.train import step as step_lib

PyTree = Any

MODES = ('train', 'eval', 'data')
DTYPES = config_schema.COMPUTE_DTYPES


# ----------------------------------------------------------------- timing


def block(tree: PyTree) -> PyTree:
  return jax.block_until_ready(tree)


def time_calls(fn: Callable[[], Any], steps: int, warmup: int = 1) -> List[float]:
  """Runs `fn()` warmup + steps times; returns the timed durations in ms."""
  for _ in range(warmup):
    block(fn())
  out = []
  for _ in range(steps):
    t0 = time.perf_counter()
    block(fn())
    out.append((time.perf_counter() - t0) * 1e3)
  return out


def summarize_ms(ms: Sequence[float]) -> Dict[str, float]:
  return {'median_ms': statistics.median(ms), 'min_ms': min(ms), 'max_ms': max(ms),
          'steps': len(ms)}


def rss_mib() -> float:
  """Current resident set size of this process in MiB (Linux /proc)."""
  try:
    with open('/proc/self/statm') as f:
      pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20
  except OSError:
    return float('nan')


def load_average() -> Optional[float]:
  try:
    return os.getloadavg()[0]
  except OSError:
    return None


# ------------------------------------------------------------- matmul peak


def measure_matmul_peak(n: int = 2048, dtype=jnp.float32, reps: int = 10) -> float:
  """Best achieved GFLOP/s of an n x n x n matmul under jit (the 'peak').

  The best of `reps` runs is used, so load from other processes lowers the
  figure as little as possible.
  """
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(k1, (n, n), dtype)
  b = jax.random.normal(k2, (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  ms = time_calls(lambda: f(a, b), reps, warmup=2)
  return 2.0 * n ** 3 / (min(ms) * 1e-3) / 1e9


# ------------------------------------------------------------ XLA analysis


@dataclasses.dataclass
class Compiled:
  """A compiled function plus what XLA says about it."""
  compiled: Any
  compile_s: float      # lower + compile wall time
  flops: Optional[float]
  memory: Dict[str, float]
  # lower + compile CPU time of this process: XLA compiles on several
  # threads, so on a busy machine this is what the compile costs.
  compile_cpu_s: Optional[float] = None

  def __call__(self, *args):
    return self.compiled(*args)


def _cost_flops(compiled) -> Optional[float]:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def _memory(compiled) -> Dict[str, float]:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if m is None:
    return {}
  out = {}
  for name in ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes',
               'alias_size_in_bytes', 'generated_code_size_in_bytes'):
    v = getattr(m, name, None)
    if v is not None:
      out[name.replace('_in_bytes', '_mib')] = v / 2**20
  if out:
    # Arguments + outputs (minus donated aliases) + XLA temporaries: the
    # executable's peak device memory by XLA's own accounting.
    out['peak_mib'] = (out.get('argument_size_mib', 0) + out.get('output_size_mib', 0)
                       - out.get('alias_size_mib', 0) + out.get('temp_size_mib', 0))
  return out


def compile_fn(jitted, *args) -> Compiled:
  """AOT-compiles `jitted` for `args`, timing lowering + compilation."""
  t0, cpu0 = time.perf_counter(), time.process_time()
  compiled = jitted.lower(*args).compile()
  dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
  return Compiled(compiled, dt, _cost_flops(compiled), _memory(compiled), cpu)


# ------------------------------------------------------------ train / eval


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


@dataclasses.dataclass
class Result:
  """One benchmark measurement (one JSON record)."""
  name: str
  mode: str
  model: str
  batch: int
  resolution: int
  dtype: str
  conv_impl: str
  median_ms: float
  min_ms: float
  max_ms: float
  steps: int
  images_per_s: float
  compile_s: Optional[float] = None
  flops_per_step: Optional[float] = None
  gflops_per_s: Optional[float] = None
  pct_of_matmul_peak: Optional[float] = None
  matmul_peak_gflops: Optional[float] = None
  peak_mib: Optional[float] = None
  rss_delta_mib: Optional[float] = None
  load_avg: Optional[float] = None
  extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def line(self) -> str:
    s = (f'{self.name}: {self.model} {self.mode} b{self.batch}@{self.resolution} '
         f'{self.dtype} conv={self.conv_impl} | {self.median_ms:.1f} ms/step '
         f'(min {self.min_ms:.1f}, max {self.max_ms:.1f}, n={self.steps}) '
         f'| {self.images_per_s:.2f} img/s')
    if self.compile_s is not None:
      s += f' | compile {self.compile_s:.1f} s'
    if self.flops_per_step:
      s += f' | {self.flops_per_step / 1e9:.1f} GFLOP/step'
    if self.gflops_per_s:
      s += f' | {self.gflops_per_s:.0f} GFLOP/s'
    if self.pct_of_matmul_peak is not None:
      s += f' ({self.pct_of_matmul_peak:.0f}% of {self.matmul_peak_gflops:.0f} peak)'
    if self.peak_mib is not None:
      s += f' | XLA peak {self.peak_mib:.0f} MiB'
    if self.rss_delta_mib is not None:
      s += f' | RSS +{self.rss_delta_mib:.0f} MiB'
    for k, v in self.extra.items():
      s += f' | {k}={v:.3g}' if isinstance(v, float) else f' | {k}={v}'
    if self.load_avg is not None:
      s += f' | load {self.load_avg:.2f}'
    return s

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))


def finish_result(result: Result, peak_gflops: Optional[float]) -> Result:
  """Fills images/s, GFLOP/s and % of peak from the timing and the FLOP count."""
  result.images_per_s = result.batch / (result.median_ms * 1e-3)
  if result.flops_per_step:
    result.gflops_per_s = result.flops_per_step / (result.median_ms * 1e-3) / 1e9
    if peak_gflops:
      result.matmul_peak_gflops = peak_gflops
      result.pct_of_matmul_peak = 100.0 * result.gflops_per_s / peak_gflops
  result.load_avg = load_average()
  return result


# ------------------------------------------------------------ whole benchmark


def _log(msg: str) -> None:
  print(f'[bench {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def _model_label(cfg) -> str:
  variant = cfg.model.get('variant', None)
  return f'{cfg.model.name}-{variant}' if variant else cfg.model.name


def config_for_model(model: str, variant: Optional[str] = None):
  """``base_config()`` for a model by registry name (no experiment file).

  Models other than NFNet keep only the fields every model takes; the rest
  are their constructor's defaults.
  """
  cfg = config_schema.base_config()
  cfg.model.name = model
  if model != 'NFNet':
    for k in list(cfg.model.keys()):
      if k not in ('name', 'variant', 'conv_impl'):
        del cfg.model[k]
  if variant:
    cfg.model.variant = variant
  return cfg


def build_model(cfg, num_classes: int, resolution: int, batch: int, seed: int = 0,
                channels: int = 3):
  """Creates the model of `cfg.model` and initialises params for the input shape."""
  net = models.create_model(cfg.model, num_classes)
  images = jnp.zeros((batch, resolution, resolution, channels), jnp.float32)
  params, model_state = jax.jit(lambda k, x: net.init(k, x, is_training=True))(
      jax.random.PRNGKey(seed), images)
  return net, params, model_state


def _fake_batch(batch, resolution, num_classes, seed=0, channels=3):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.standard_normal((batch, resolution, resolution, channels)),
                       jnp.float32)
  labels = jax.nn.one_hot(rng.integers(0, num_classes, batch), num_classes)
  return images, labels


def one_device(cfg) -> parallel_lib.Parallel:
  """The loop's device wrapper (``cfg.parallel.mode``) on one device."""
  return parallel_lib.Parallel(cfg.parallel.mode, jax.devices()[:1])


def _step_config(cfg, agc: bool, ema: bool):
  """The config of the timed step: one update (no SAM, no accumulation)."""
  c = ml_collections.ConfigDict(copy.deepcopy(cfg.to_dict()))
  if not agc:
    c.optimizer.clipping = None
  if ema and c.optimizer.ema_decay is None:
    c.optimizer.ema_decay = 0.99999
  if not ema:
    c.optimizer.ema_decay = None
  c.optimizer.sam_rho = None
  c.optimizer.accum_steps = 1
  return c


class TrainStepper:
  """Runs a compiled train step again and again, threading its state."""

  def __init__(self, compiled, state, batch):
    self.compiled, self.state, self.batch = compiled, state, batch

  def __call__(self):
    self.state, metrics = self.compiled(self.state, self.batch)
    return block((metrics, self.state))


def compile_train_step(cfg, net, params, model_state, images, labels, *,
                       agc: bool = True, ema: bool = True,
                       compute_dtype: Optional[str] = None):
  """AOT-compiles the loop's train step on one device, with its state.

  Args:
    cfg: the full config (optimizer, parallel.mode, compute_dtype, seed).
    net, params, model_state: from :func:`build_model`.
    images, labels: one batch (labels one-hot).
    agc, ema: keep AGC / the parameter EMA in the step (off: the share of
      the step they take can be measured).
    compute_dtype: overrides ``cfg.compute_dtype``.

  Returns:
    A :class:`TrainStepper` (its ``compiled`` is a :class:`Compiled`).
  """
  c = _step_config(cfg, agc, ema)
  par = one_device(c)
  tx, schedule = optim.build_optimizer(c.optimizer, images.shape[0],
                                       max(c.train.total_steps, 10))
  step = par.wrap_train_step(step_lib.make_train_step(
      net.apply, tx, c.optimizer,
      compute_dtype=compute_dtype or c.compute_dtype, schedule=schedule))
  # Own copies: the step donates its state, and two states (AGC+EMA on/off)
  # must not share buffers.
  host = state_lib.host_state_from(jax.device_get(params),
                                   jax.device_get(model_state), tx, c)
  state = par.put_replicated(host)
  batch = par.put_batch({'images': np.asarray(images),
                         'labels': np.asarray(labels)})
  return TrainStepper(compile_fn(step, state, batch), state, batch)


def compile_eval_step(cfg, net, params, model_state, images, num_classes: int):
  """AOT-compiles the loop's eval step on one device: (Compiled, args)."""
  par = one_device(cfg)
  step = par.wrap_eval_step(step_lib.make_eval_step(
      net.apply, compute_dtype=cfg.compute_dtype, num_classes=num_classes))
  n = images.shape[0]
  batch = par.put_batch({'images': np.asarray(images),
                         'labels': np.zeros((n,), np.int32),
                         'mask': np.ones((n,), np.float32)})
  args = (par.put_replicated(jax.device_get(params)),
          par.put_replicated(jax.device_get(model_state)), batch)
  return compile_fn(step, *args), args


def run_benchmark(cfg, *, mode: str = 'train', batch: int = 8, resolution: int = 128,
                  num_classes: int = 1000, steps: int = 10, warmup: int = 2,
                  agc_ema_share: bool = True,
                  measure_peak: bool = True, name: str = 'bench',
                  synthetic: bool = False) -> List[Any]:
  """Runs one benchmark configuration; returns a list of `Result`s (or dicts for data).

  Args:
    cfg: full config (`nfnet_jax.config.base_config()` layout).
    mode: 'train' | 'eval' | 'data'.
    batch, resolution, num_classes: input shape (random data; no input pipeline).
    steps, warmup: timed and untimed steps.
    agc_ema_share: train mode: also time the step without AGC and EMA,
      alternating with the full step, and report the share.
    measure_peak: measure the f32 matmul peak for the % column.
    name: label of the result lines.
    synthetic: data mode: time the pipeline on a locally built synthetic
      imagenet2012 (:func:`prepare_synthetic_imagenet`).
  """
  if mode not in MODES:
    raise ValueError(f'mode={mode!r} is not supported; allowed: {MODES}')
  if cfg.compute_dtype not in DTYPES:
    raise ValueError(f'config.compute_dtype={cfg.compute_dtype!r} is not supported; '
                     f'allowed: {DTYPES}')
  if mode == 'data':
    out = benchmark_pipeline(cfg, steps, synthetic=synthetic)
    return [dict(out, name=name, mode='data', load_avg=load_average())]

  peak = measure_matmul_peak() if measure_peak else None
  rss0 = rss_mib()
  net, params, model_state = build_model(cfg, num_classes, resolution, batch, cfg.seed)
  images, labels = _fake_batch(batch, resolution, num_classes)
  conv_impl = str(cfg.model.get('conv_impl', 'auto'))
  common = dict(name=name, mode=mode, model=_model_label(cfg), batch=batch,
                resolution=resolution, dtype=cfg.compute_dtype, conv_impl=conv_impl)
  extra = {'params_M': param_count(params) / 1e6}

  if mode == 'eval':
    comp, args = compile_eval_step(cfg, net, params, model_state, images,
                                   num_classes)
    ms = time_calls(lambda: comp(*args), steps, warmup)
    r = Result(**common, **summarize_ms(ms), images_per_s=0.0, compile_s=comp.compile_s,
               flops_per_step=comp.flops, peak_mib=comp.memory.get('peak_mib'),
               rss_delta_mib=rss_mib() - rss0, extra=extra)
    return [finish_result(r, peak)]

  run = compile_train_step(cfg, net, params, model_state, images, labels)
  comp = run.compiled
  _log(f'compiled train step in {comp.compile_s:.1f} s')
  results = []
  if not agc_ema_share:
    ms = time_calls(run, steps, warmup)
  else:
    run_off = compile_train_step(cfg, net, params, model_state, images, labels,
                                 agc=False, ema=False)
    comp_off = run_off.compiled
    _log(f'compiled train step without AGC/EMA in {comp_off.compile_s:.1f} s')
    # Alternate single steps so that load from other processes hits both alike.
    ms, ms_off = _alternate(run, run_off, steps, warmup)
    share = 1.0 - statistics.median(ms_off) / statistics.median(ms)
    extra['agc_ema_share_pct'] = 100.0 * share
    extra['no_agc_ema_ms'] = statistics.median(ms_off)
    extra['compile_no_agc_ema_s'] = comp_off.compile_s
  r = Result(**common, **summarize_ms(ms), images_per_s=0.0, compile_s=comp.compile_s,
             flops_per_step=comp.flops, peak_mib=comp.memory.get('peak_mib'),
             rss_delta_mib=rss_mib() - rss0, extra=extra)
  results.append(finish_result(r, peak))
  return results


def _alternate(run_a, run_b, steps, warmup):
  """Times two train steppers alternately; returns (ms_a, ms_b)."""
  times = [[], []]
  for i in range(warmup + steps):
    for k, run in enumerate((run_a, run_b)):
      t0 = time.perf_counter()
      run()
      if i >= warmup:
        times[k].append((time.perf_counter() - t0) * 1e3)
  return times[0], times[1]


# ------------------------------------------------------------ input pipeline

SYNTHETIC_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'nfnet_jax',
                             'synthetic_imagenet')


def prepare_synthetic_imagenet(root: str = SYNTHETIC_DIR, num_classes=4,
                               per_class=128, num_val=64) -> str:
  """Prepares (once) a synthetic imagenet2012; returns its tfds data_dir."""
  data_dir = os.path.join(root, 'tfds')
  done = os.path.join(root, f'done_{num_classes}_{per_class}_{num_val}')
  if os.path.exists(done):
    return data_dir
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  names = [l.strip() for l in open(os.fspath(tfds.core.tfds_path(
      'datasets/imagenet2012/labels.txt')))][:num_classes]
  manual = os.path.join(root, 'manual')
  fake_data.write_fake_manual_tars(manual, names, per_class,
                                   list(range(1, num_val + 1)))
  imagenet.prepare_imagenet2012(data_dir, manual, progress=False)
  open(done, 'w').close()
  return data_dir


def cpu_seconds() -> float:
  """User + system CPU seconds of this process so far."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def benchmark_pipeline(config, num_batches: int, *, warmup_batches: int = 3,
                       layout: str = 'host', synthetic: bool = False,
                       synthetic_dir: Optional[str] = None) -> dict:
  """Times `num_batches` train batches after `warmup_batches`.

  Args:
    config: full config (data, seed, train.batch_size).
    num_batches: batches to time.
    warmup_batches: batches fetched before timing (tracing, buffers).
    layout: iterator layout ('host' or 'pmap').
    synthetic: use the synthetic imagenet2012 (config.data.name is set to
      imagenet2012 and data_dir to the synthetic folder).
    synthetic_dir: where to build/reuse the synthetic data.

  Returns:
    dict(images_per_sec, images_per_cpu_sec, cpu_count, seconds, cpu_seconds,
    num_images, batch_size, image_size, dataset, decode_errors).
  """
  if synthetic:
    config = copy.deepcopy(config)
    config.data.name = 'imagenet2012'
    config.data.data_dir = prepare_synthetic_imagenet(
        synthetic_dir or SYNTHETIC_DIR)
  # Lazy: the input pipeline needs TensorFlow; the step benchmarks (and the
  # GPU image, which has no TensorFlow) must import without it.
  from nfnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.train_iterator(config, layout=layout, process_index=0,
                               process_count=1, local_device_count=1)
  try:
    for _ in range(warmup_batches):
      next(it)
    t0, c0 = time.perf_counter(), cpu_seconds()
    n = 0
    for _ in range(num_batches):
      b = next(it)
      n += b['images'].shape[0] if layout == 'host' else (
          b['images'].shape[0] * b['images'].shape[1])
    dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
  finally:
    it.close()
  return dict(images_per_sec=n / dt, images_per_cpu_sec=n / max(dc, 1e-9),
              cpu_count=os.cpu_count(), seconds=dt, cpu_seconds=dc,
              num_images=n, batch_size=int(config.train.batch_size),
              image_size=int(config.data.image_size),
              dataset=config.data.name, decode_errors=it.decode_errors)
