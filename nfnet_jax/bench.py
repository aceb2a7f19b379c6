"""Benchmark helpers: timing, matmul peak, XLA cost analysis, memory.

Library code behind `scripts/benchmark.py` and `benchmarks/timm_compare.py`.
The train step timed here is the single-device form of the recipe's step:
forward, label-smoothed cross-entropy, backward, the optimizer chain of
`nfnet_jax.optim.build_optimizer` (AGC -> coupled weight decay ->
SGD-Nesterov with the LR schedule) and the parameter EMA, all inside one
jitted function with donated state buffers.
"""
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
import numpy as np
import optax

PyTree = Any

MODES = ('train', 'eval', 'data')
DTYPES = ('float32', 'bfloat16')


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


def max_rss_mib() -> float:
  """Peak resident set size of this process so far in MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  dt = time.perf_counter() - t0
  return Compiled(compiled, dt, _cost_flops(compiled), _memory(compiled))


# ------------------------------------------------------------ train / eval


class BenchState(dict):
  """params, opt_state, ema, step (a dict so it is a pytree)."""


def make_train_step(apply_fn, tx: optax.GradientTransformation, *,
                    compute_dtype=jnp.float32, label_smoothing: float = 0.1,
                    ema_decay: Optional[float] = 0.99999):
  """Single-device recipe train step `(state, images, labels, rng) -> (state, loss)`.

  Args:
    apply_fn: Haiku `apply(params, state, rng, images, is_training)`.
    tx: optax chain (AGC, weight decay, SGD-Nesterov, schedule).
    compute_dtype: params and images are cast to it for the forward pass.
    label_smoothing: of the cross-entropy.
    ema_decay: EMA decay (official warm-up form), or None for no EMA.
  """
  from nfnet_jax.optim import losses, ema  # pylint: disable=g-import-not-at-top

  def cast(tree):
    return jax.tree.map(lambda x: x.astype(compute_dtype)
                        if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

  def loss_fn(params, model_state, images, labels, rng):
    out, new_ms = apply_fn(cast(params), model_state, rng, images.astype(compute_dtype),
                           is_training=True)
    logits = out['logits'].astype(jnp.float32)
    loss = jnp.mean(losses.softmax_cross_entropy(logits, labels, label_smoothing))
    return loss, new_ms

  def step(state, images, labels, rng):
    (loss, new_ms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], state['model_state'], images, labels, rng)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    new = {'params': params, 'model_state': new_ms, 'opt_state': opt_state,
           'step': state['step'] + 1}
    if ema_decay is not None:
      new['ema'] = ema.update_ema(state['ema'], params, state['step'], ema_decay)
    else:
      new['ema'] = state['ema']
    return new, loss

  return step


def init_train_state(params, model_state, tx, ema_on: bool) -> Dict[str, Any]:
  # Own copies: the step donates its state, and two states (AGC+EMA on/off)
  # must not share buffers.
  params = jax.tree.map(jnp.copy, params)
  model_state = jax.tree.map(jnp.copy, model_state)
  return {'params': params, 'model_state': model_state, 'opt_state': tx.init(params),
          'ema': jax.tree.map(jnp.copy, params) if ema_on else {},
          'step': jnp.zeros((), jnp.int32)}


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


def build_model(cfg, num_classes: int, resolution: int, batch: int, seed: int = 0):
  """Creates the model of `cfg.model` and initialises params for the input shape."""
  from nfnet_jax import models  # pylint: disable=g-import-not-at-top
  net = models.create_model(cfg.model, num_classes)
  images = jnp.zeros((batch, resolution, resolution, 3), jnp.float32)
  params, model_state = jax.jit(lambda k, x: net.init(k, x, is_training=True))(
      jax.random.PRNGKey(seed), images)
  return net, params, model_state


def _fake_batch(batch, resolution, num_classes, seed=0):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.standard_normal((batch, resolution, resolution, 3)), jnp.float32)
  labels = jax.nn.one_hot(rng.integers(0, num_classes, batch), num_classes)
  return images, labels


def _opt_config(cfg, agc: bool):
  opt = cfg.optimizer.to_dict() if hasattr(cfg.optimizer, 'to_dict') else dict(cfg.optimizer)
  if not agc:
    opt['clipping'] = None
  # Benchmarks time one update, not SAM's two passes or accumulation.
  opt['sam_rho'] = None
  opt['accum_steps'] = 1
  return opt


def compile_train_step(cfg, net, params, model_state, images, labels, *,
                       agc: bool = True, ema: bool = True, donate: bool = True,
                       compute_dtype: Optional[str] = None):
  """Builds, AOT-compiles and initialises one recipe train step.

  Returns:
    (Compiled step, initial state).
  """
  from nfnet_jax import optim  # pylint: disable=g-import-not-at-top
  batch = images.shape[0]
  tx, _ = optim.build_optimizer(_opt_config(cfg, agc), batch, max(cfg.train.total_steps, 10))
  dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[
      compute_dtype or cfg.compute_dtype]
  ema_decay = cfg.optimizer.ema_decay if ema else None
  if ema and ema_decay is None:
    ema_decay = 0.99999
  step = make_train_step(net.apply, tx, compute_dtype=dtype,
                         label_smoothing=cfg.optimizer.label_smoothing or 0.0,
                         ema_decay=ema_decay)
  state = init_train_state(params, model_state, tx, ema_on=ema_decay is not None)
  jitted = jax.jit(step, donate_argnums=(0,) if donate else ())
  rng = jax.random.PRNGKey(1)
  return compile_fn(jitted, state, images, labels, rng), state


def run_train_steps(compiled: Compiled, state, images, labels, steps: int, warmup: int):
  """Times `steps` train steps after `warmup` ones, threading the state through."""
  rng = jax.random.PRNGKey(1)
  holder = {'state': state}

  def one():
    holder['state'], loss = compiled(holder['state'], images, labels, rng)
    return loss, holder['state']
  ms = time_calls(one, steps, warmup)
  return ms, holder['state']


def run_benchmark(cfg, *, mode: str = 'train', batch: int = 8, resolution: int = 128,
                  num_classes: int = 1000, steps: int = 10, warmup: int = 2,
                  agc_ema_share: bool = True, donate: bool = True,
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
    donate: donate the train state buffers.
    measure_peak: measure the f32 matmul peak for the % column.
    name: label of the result lines.
    synthetic: data mode: time the pipeline on a locally built synthetic
      imagenet2012 (`nfnet_jax.data.benchmark`).
  """
  if mode not in MODES:
    raise ValueError(f'mode={mode!r} is not supported; allowed: {MODES}')
  if cfg.compute_dtype not in DTYPES:
    raise ValueError(f'config.compute_dtype={cfg.compute_dtype!r} is not supported; '
                     f'allowed: {DTYPES}')
  if mode == 'data':
    from nfnet_jax.data import benchmark as data_bench  # pylint: disable=g-import-not-at-top
    out = data_bench.benchmark_pipeline(cfg, steps, synthetic=synthetic)
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
    dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[cfg.compute_dtype]

    def eval_fn(p, ms, x):
      p = jax.tree.map(lambda a: a.astype(dtype), p)
      out, _ = net.apply(p, ms, None, x.astype(dtype), is_training=False)
      return out['logits']
    comp = compile_fn(jax.jit(eval_fn), params, model_state, images)
    ms = time_calls(lambda: comp(params, model_state, images), steps, warmup)
    r = Result(**common, **summarize_ms(ms), images_per_s=0.0, compile_s=comp.compile_s,
               flops_per_step=comp.flops, peak_mib=comp.memory.get('peak_mib'),
               rss_delta_mib=rss_mib() - rss0, extra=extra)
    return [finish_result(r, peak)]

  comp, state = compile_train_step(cfg, net, params, model_state, images, labels,
                                    donate=donate)
  _log(f'compiled train step in {comp.compile_s:.1f} s')
  results = []
  if not agc_ema_share:
    ms, _ = run_train_steps(comp, state, images, labels, steps, warmup)
  else:
    comp_off, state_off = compile_train_step(cfg, net, params, model_state, images, labels,
                                              agc=False, ema=False, donate=donate)
    _log(f'compiled train step without AGC/EMA in {comp_off.compile_s:.1f} s')
    # Alternate single steps so that load from other processes hits both alike.
    ms, ms_off = _alternate(comp, state, comp_off, state_off, images, labels, steps, warmup)
    share = 1.0 - statistics.median(ms_off) / statistics.median(ms)
    extra['agc_ema_share_pct'] = 100.0 * share
    extra['no_agc_ema_ms'] = statistics.median(ms_off)
    extra['compile_no_agc_ema_s'] = comp_off.compile_s
  r = Result(**common, **summarize_ms(ms), images_per_s=0.0, compile_s=comp.compile_s,
             flops_per_step=comp.flops, peak_mib=comp.memory.get('peak_mib'),
             rss_delta_mib=rss_mib() - rss0, extra=extra)
  results.append(finish_result(r, peak))
  return results


def _alternate(comp_a, state_a, comp_b, state_b, images, labels, steps, warmup):
  """Times two train steps alternately; returns (ms_a, ms_b)."""
  rng = jax.random.PRNGKey(1)
  states = [state_a, state_b]
  comps = [comp_a, comp_b]
  times = [[], []]
  for i in range(warmup + steps):
    for k in (0, 1):
      t0 = time.perf_counter()
      states[k], loss = comps[k](states[k], images, labels, rng)
      block((loss, states[k]))
      if i >= warmup:
        times[k].append((time.perf_counter() - t0) * 1e3)
  return times[0], times[1]
