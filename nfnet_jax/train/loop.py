"""``train_and_evaluate``: the training loop.

Order of business:

1. validate the config (nothing traced yet); initialise ``jax.distributed``
   when asked; check the device-dependent fields;
2. build model, optimizer and the initial train state on the host;
3. resume from the newest readable checkpoint in ``<workdir>/checkpoints``,
   or else (optionally) load a fine-tuning checkpoint;
4. train: the per-device step under pmap or shard_map, the data iterator
   positioned at the restored step, periodic logs, evals and checkpoints;
   SIGTERM -> checkpoint and return; non-finite steps skipped (or raise);
5. final eval, final checkpoint, ``summary.json``.

Exactness of resumption: every random number is a function of
``(config.seed, step)``, the data iterator restarts at the checkpoint's step,
and the partial logging window is stored in the checkpoint's metadata, so a
run interrupted and resumed ends with the same params and metrics as one that
never stopped.
"""
import functools
import os
import re
import signal
import threading
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nfnet_jax.train import checkpoint as ckpt_lib
from nfnet_jax.train import metrics as metrics_lib
from nfnet_jax.train import parallel as parallel_lib
from nfnet_jax.train import step as step_lib
from nfnet_jax.train.validate import validate_config

PyTree = Any

CLASSIFIER_MODULE = re.compile(r'^[^/]+/~/linear$')


# ---------------------------------------------------------------------------
# State construction


def init_train_state(model, tx, config, input_shape) -> step_lib.TrainState:
  """The initial train state as host numpy arrays.

  Args:
    model: the ``hk.TransformedWithState``.
    tx: the optax transformation.
    config: the experiment config (``seed``, ``optimizer.ema_decay``).
    input_shape: (H, W, C) of the train images.
  """
  base = jax.random.PRNGKey(config.seed)
  init_key = jax.random.fold_in(base, 0)
  step_key = jax.random.fold_in(base, 1)
  dummy = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  params, model_state = jax.jit(
      functools.partial(model.init, is_training=True))(init_key, dummy)
  return host_state_from(params, model_state, tx, config, step_key)


def host_state_from(params, model_state, tx, config, step_key=None):
  """A fresh TrainState (step 0) around given params, as numpy."""
  if step_key is None:
    step_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  opt_state = jax.jit(tx.init)(params)
  ema = (jax.tree.map(jnp.array, params)
         if config.optimizer.ema_decay is not None else {})
  state = step_lib.TrainState(
      step=np.zeros((), np.int32), params=params, model_state=model_state,
      opt_state=opt_state, ema_params=ema,
      rng=np.asarray(jax.random.key_data(step_key)) if jax.dtypes.issubdtype(
          step_key.dtype, jax.dtypes.prng_key) else np.asarray(step_key),
      nonfinite_total=np.zeros((), np.int32),
      nonfinite_consecutive=np.zeros((), np.int32))
  return jax.tree.map(np.asarray, jax.device_get(state))


def _flatten_params(params) -> dict:
  return {(m, n): v for m, sub in params.items() for n, v in sub.items()}


def _read_timm_finetune(config, log) -> dict:
  """Params of ``config.finetune.checkpoint``, a timm file of ``finetune.timm_name``.

  config.model must build the timm model's network (sizes may differ, the
  shapes are checked then); numerics options may differ (noted in the log).
  """
  from nfnet_jax.interop import timm as timm_lib  # pylint: disable=g-import-not-at-top
  path, name = config.finetune.checkpoint, config.finetune.timm_name
  diffs = timm_lib.architecture_differences(
      config.model, name, ignore=timm_lib.NUMERICS_ONLY + timm_lib.SIZE_FIELDS)
  if diffs:
    raise ValueError(f'config.finetune.checkpoint={path!r} holds timm {name} weights, but '
                     f'config.model builds another network: {"; ".join(diffs)} (start from '
                     f'nfnet_jax.interop.timm.timm_model_config({name!r}))')
  numerics = timm_lib.architecture_differences(config.model, name, ignore=timm_lib.SIZE_FIELDS)
  if numerics:
    log(f'[finetune] note: numerics differ from timm {name} (fine for training): '
        f'{"; ".join(numerics)}')
  sizes = {k: config.model[k] for k in timm_lib.SIZE_FIELDS
           if k in config.model and config.model[k] is not None}
  try:
    return timm_lib.load_timm(path, name, overrides=sizes)[1]
  except ValueError as e:
    raise ValueError(f'config.finetune.checkpoint={path!r}: {e}') from None


def load_finetune_params(config, params: dict, log=print) -> dict:
  """Merges ``config.finetune.checkpoint`` into freshly initialised params.

  Every parameter except (with ``finetune.reset_classifier``) the final
  classifier must be present in the checkpoint with the same shape; the
  classifier keeps its fresh initialisation, so the number of classes may
  differ from the checkpoint's.

  Raises:
    ValueError: naming ``config.finetune.checkpoint`` and the missing or
      mis-shaped parameters.
  """
  path = config.finetune.checkpoint
  if config.finetune.get('format', 'auto') == 'timm':
    loaded = _read_timm_finetune(config, log)
  elif os.path.isdir(path):
    from nfnet_jax.analysis import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
    trees, _ = eval_lib.load_train_checkpoint(path)
    loaded = trees['params']
  else:
    from nfnet_jax import pretrained  # pylint: disable=g-import-not-at-top
    # Only the file format is checked here; names and shapes are checked
    # below against the params built from config (any model, any input
    # channels, the classifier exempt). load_official(path) instead infers
    # an RGB NFNet from the file and rejected everything else.
    try:
      loaded = pretrained.read_official(path)
    except ValueError as e:
      raise ValueError(f'config.finetune.checkpoint={path!r}: {e}') from None
  loaded = _flatten_params(loaded)
  reset = config.finetune.reset_classifier
  out, missing, mismatched, kept_fresh = {}, [], [], []
  for module, sub in params.items():
    out[module] = {}
    for name, value in sub.items():
      if reset and CLASSIFIER_MODULE.match(module):
        out[module][name] = value
        kept_fresh.append(f'{module}/{name}')
        continue
      src = loaded.get((module, name))
      if src is None:
        missing.append(f'{module}/{name}')
      elif tuple(src.shape) != tuple(value.shape):
        mismatched.append(f'{module}/{name}: checkpoint {tuple(src.shape)} '
                          f'vs model {tuple(value.shape)}')
      else:
        out[module][name] = np.asarray(src, value.dtype)
  if missing or mismatched:
    raise ValueError(
        f'config.finetune.checkpoint={path!r} does not fit config.model: '
        f'{len(missing)} missing (e.g. {missing[:4]}), {len(mismatched)} '
        f'with other shapes (e.g. {mismatched[:4]}). Pick the matching '
        'config.model.variant (and width/depths).')
  log(f'[finetune] loaded {sum(len(s) for s in out.values()) - len(kept_fresh)} '
      f'params from {path}; fresh classifier: {kept_fresh}')
  return out


# ---------------------------------------------------------------------------
# Pre-emption


class _StopFlag:
  """Set by SIGTERM (installed only from the main thread)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def install(self):
    if threading.current_thread() is not threading.main_thread():
      return
    def handler(signum, frame):  # pylint: disable=unused-argument
      self.requested = True
    self._previous = signal.signal(signal.SIGTERM, handler)

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def agreed(self) -> bool:
    """Whether to stop; on many hosts, stop when any host was signalled."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.asarray(self.requested))
    return bool(np.any(flags))


# ---------------------------------------------------------------------------
# The loop


def _enable_compilation_cache(path: Optional[str]) -> None:
  """Points JAX's persistent compilation cache at `path` (None: leave as is).

  A directory set by the caller (``jax.config`` / ``JAX_COMPILATION_CACHE_DIR``)
  wins, so tests and multi-run drivers can share their own cache.
  """
  if not path or jax.config.jax_compilation_cache_dir:
    return
  path = os.path.expanduser(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:  # read-only home etc.: run without the cache
    print(f'[train] compilation cache disabled: cannot create {path}: {e}', flush=True)
    return
  jax.config.update('jax_compilation_cache_dir', path)


def _will_initialize_distributed(config) -> bool:
  mode = config.parallel.distributed
  return mode == 'on' or (
      mode == 'auto' and parallel_lib._env_asks_for_distributed())  # pylint: disable=protected-access


def _config_json(config) -> Optional[str]:
  try:
    return config.to_json()
  except Exception:  # pylint: disable=broad-except
    return None


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains and evaluates ``config``; resumes from ``workdir`` if possible.

  Args:
    config: the experiment ``ConfigDict`` (see ``nfnet_jax.config``).
    workdir: directory for checkpoints, TensorBoard logs, ``metrics.jsonl``
      and ``summary.json``.

  Returns:
    The summary dict (also written to ``<workdir>/summary.json`` when the run
    completes; a run stopped by SIGTERM returns ``status='preempted'`` after
    checkpointing and writes no summary).

  Raises:
    ValueError: a bad config (before anything is compiled).
    FloatingPointError: a non-finite step with ``train.nonfinite='raise'``.
    RuntimeError: too many consecutive non-finite steps.
  """
  t_start = time.time()
  from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax import optim as optim_lib  # pylint: disable=g-import-not-at-top

  # 1. Validation (the device checks need jax.distributed first).
  distributed = _will_initialize_distributed(config)
  validate_config(config, check_devices=not distributed)
  if parallel_lib.maybe_initialize_distributed(config.parallel.distributed):
    validate_config(config)
  _enable_compilation_cache(config.train.get('compilation_cache_dir'))
  devices = parallel_lib.select_devices(config.parallel.num_devices)
  par = parallel_lib.Parallel(config.parallel.mode, devices)
  is_main = jax.process_index() == 0
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)

  # 2. Model, optimizer, initial state.
  info = data_lib.dataset_info(config.data)
  model = models_lib.create_model(config.model, info.num_classes)
  tcfg = config.train
  tx, schedule = optim_lib.build_optimizer(config.optimizer, tcfg.batch_size,
                                           tcfg.total_steps)
  finetune_params = None
  if config.finetune.checkpoint:
    # Names and shapes are checked against the model's abstract params
    # (jax.eval_shape: nothing compiles) before the real init is compiled.
    abstract, _ = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(info.image_shape)), is_training=True))
    finetune_params = load_finetune_params(config, abstract, log=lambda *a, **k: None)
  host_state = init_train_state(model, tx, config, info.image_shape)

  # 3. Resume, or fine-tune.
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                       keep=tcfg.keep_checkpoints)
  writer_log = print if is_main else (lambda *a, **k: None)
  checkpointer.log = writer_log
  restored = checkpointer.restore_latest(host_state)
  meta: dict = {}
  if restored is not None:
    host_state, meta, start_step = restored
    writer_log(f'[train] resuming from {checkpointer.directory}/{start_step}')
  else:
    start_step = 0
    if finetune_params is not None:
      # Fill in the fresh classifier (kept abstract above) from the real init.
      params = {m: {n: (host_state.params[m][n] if isinstance(v, jax.ShapeDtypeStruct) else v)
                    for n, v in sub.items()} for m, sub in finetune_params.items()}
      writer_log(f'[finetune] loaded params from {config.finetune.checkpoint}')
      host_state = host_state_from(params, host_state.model_state, tx, config)
  start_step = int(host_state.step)

  writer = metrics_lib.MetricWriter(
      workdir, total_steps=tcfg.total_steps, start_step=start_step,
      images_per_step=tcfg.batch_size, enabled=is_main)
  log = writer.log
  log(f'[train] {config.model.name} on {config.data.name}: '
      f'{info.num_classes} classes, global batch {tcfg.batch_size} over '
      f'{par.num_devices} device(s) ({par.mode}, {jax.process_count()} '
      f'process(es)), steps {start_step}->{tcfg.total_steps}, '
      f'compute {config.compute_dtype}')

  # Best / last eval so far (resume: from the log we kept).
  best_eval, last_eval = None, None
  for row in writer.rows() if is_main else []:
    if row.get('split') == 'eval':
      last_eval = row
      if best_eval is None or row.get('eval/top1', -1) > best_eval['eval/top1']:
        best_eval = row

  # 4. Compiled steps.
  train_step = par.wrap_train_step(step_lib.make_train_step(
      model.apply, tx, schedule, compute_dtype=config.compute_dtype,
      label_smoothing=config.optimizer.label_smoothing,
      ema_decay=config.optimizer.ema_decay, ema_update=optim_lib.update_ema,
      sam_rho=config.optimizer.sam_rho))
  eval_step = par.wrap_eval_step(step_lib.make_eval_step(
      model.apply, compute_dtype=config.compute_dtype,
      num_classes=info.num_classes))
  use_ema = tcfg.eval_with_ema and config.optimizer.ema_decay is not None
  # The data's geometry follows our devices (config.parallel.num_devices may
  # use fewer than JAX sees).
  topology = dict(process_index=jax.process_index(),
                  process_count=jax.process_count(),
                  local_device_count=par.num_local)
  decode_errors = {'train': 0, 'eval': 0}

  state = par.put_replicated(host_state)
  del host_state

  def evaluate(state, step):
    t0 = time.time()
    params = state.ema_params if use_ema else state.params
    it = data_lib.eval_iterator(config, layout='host',
                                image_size=config.data.eval_image_size,
                                **topology)
    totals, size = None, None
    for batch in it:
      if size is None:
        n = len(batch['labels'])
        size = -(-n // par.num_local) * par.num_local
      out = eval_step(params, state.model_state,
                      par.put_batch(parallel_lib.pad_batch(batch, size)))
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    decode_errors['eval'] = int(getattr(it, 'decode_errors', 0) or 0)
    sums = par.get_metrics(totals)
    count = max(float(sums['count']), 1.0)
    result = {'eval/top1': float(sums['top1']) / count,
              'eval/top5': float(sums['top5']) / count,
              'eval/loss': float(sums['loss']) / count,
              'eval/count': int(sums['count']),
              'eval/image_size': int(config.data.eval_image_size),
              'eval/ema': bool(use_ema)}
    writer.write(step, 'eval', result)
    log(f'[eval] step {step}: top-1 {100 * result["eval/top1"]:.2f}% '
        f'top-5 {100 * result["eval/top5"]:.2f}% loss '
        f'{result["eval/loss"]:.4f} ({int(sums["count"])} images, '
        f'{time.time() - t0:.1f}s)')
    return dict(result, step=step)

  # Host-side bookkeeping restored from the checkpoint's metadata.
  window: list = list(meta.get('log_window', []))
  skipped_steps: list = list(meta.get('skipped_steps', []))
  prior_wall = float(meta.get('cumulative_wall_time_s', 0.0))
  last_train: dict = dict(meta.get('last_train', {}))

  def process(m: dict):
    """Host metrics of one finished step: non-finite policy, log window."""
    s = int(m['step'])
    if float(m['finite']) == 0.0:
      skipped_steps.append(s)
      del skipped_steps[:-1000]
      if tcfg.nonfinite == 'raise':
        raise FloatingPointError(
            f'step {s}: non-finite loss or gradients (loss={m["loss"]}); '
            "config.train.nonfinite='raise'. The update was not applied.")
      log(f'[train] step {s}: non-finite loss/gradients (loss={m["loss"]}); '
          f'update skipped ({int(m["nonfinite_consecutive"])} in a row, '
          f'{int(m["nonfinite_total"])} in total).')
      if int(m['nonfinite_consecutive']) >= tcfg.max_consecutive_nonfinite:
        raise RuntimeError(
            f'{int(m["nonfinite_consecutive"])} consecutive non-finite steps '
            f'(up to step {s}; config.train.max_consecutive_nonfinite='
            f'{tcfg.max_consecutive_nonfinite}): training diverged. Try a '
            'lower config.optimizer.base_lr, a longer '
            'config.optimizer.warmup_steps or tighter AGC '
            '(smaller config.optimizer.clipping).')
      return
    window.append({k: float(m[k]) for k in
                   ('loss', 'top1', 'grad_norm', 'param_norm') if k in m}
                  | {'lr': float(m.get('lr', 0.0))})

  def flush_log(step):
    nonlocal last_train
    steps_s, images_s = writer.rate(step)
    scalars = {}
    if window:
      mean = metrics_lib.mean_of(window)
      scalars = {f'train/{k}': v for k, v in mean.items()}
      scalars['train/lr'] = window[-1]['lr']
    scalars['train/steps_per_s'] = steps_s
    scalars['train/images_per_s'] = images_s
    scalars['train/skipped_total'] = len(skipped_steps)
    window.clear()
    writer.write(step, 'train', scalars)
    last_train = {k: v for k, v in scalars.items() if not k.endswith('_s')}
    eta = (tcfg.total_steps - step) / max(steps_s, 1e-9)
    if 'train/loss' in scalars:
      log(f'[train] step {step}/{tcfg.total_steps}: loss '
          f'{scalars["train/loss"]:.4f} top-1 {100 * scalars["train/top1"]:.1f}% '
          f'lr {scalars["train/lr"]:.4g} | {steps_s:.2f} steps/s '
          f'{images_s:.0f} images/s | ETA {metrics_lib.format_eta(eta)}')

  def save(state, step) -> bool:
    host = par.get_replicated(state)
    info_meta = {
        'log_window': list(window), 'skipped_steps': list(skipped_steps),
        'cumulative_wall_time_s': prior_wall + time.time() - t_start,
        'last_train': last_train, 'config': _config_json(config)}
    ok = checkpointer.save(step, host, info_meta)
    if ok:
      log(f'[checkpoint] saved step {step} to {checkpointer.directory}/{step}')
    return ok

  stop = _StopFlag()
  stop.install()
  status = 'completed'
  step = start_step
  train_images, train_time = 0, 0.0
  sync_every = 1 if jax.process_count() == 1 else max(1, min(tcfg.log_every, 10))
  try:
    if step < tcfg.total_steps:
      train_iter = data_lib.train_iterator(config, start_step=step,
                                           layout='host', **topology)
      batches = parallel_lib.prefetch_to_device(iter(train_iter),
                                                par.put_batch)
      pending = None
      first_step = True
      writer.reset_rate(step)
      t_seg = time.time()
      while step < tcfg.total_steps:
        if step % sync_every == 0 and stop.agreed():
          status = 'preempted'
          break
        try:
          batch = next(batches)
        except StopIteration:
          raise RuntimeError(f'the train iterator ended at step {step} of '
                             f'{tcfg.total_steps}') from None
        state, metrics = train_step(state, batch)
        if first_step:
          jax.block_until_ready(metrics)
          log(f'[train] first step (compilation included) took '
              f'{time.time() - t_seg:.1f}s')
          first_step = False
        if pending is not None:
          process(par.get_metrics(pending))
        pending = metrics
        step += 1
        train_images += tcfg.batch_size
        writer.advance(step)
        boundary_log = step % tcfg.log_every == 0 or step == tcfg.total_steps
        boundary_eval = tcfg.eval_every and step % tcfg.eval_every == 0
        boundary_ckpt = (tcfg.checkpoint_every
                         and step % tcfg.checkpoint_every == 0)
        if boundary_log or boundary_eval or boundary_ckpt:
          process(par.get_metrics(pending))
          pending = None
        if boundary_log:
          flush_log(step)
        if (boundary_eval or boundary_ckpt) and step < tcfg.total_steps:
          train_time += time.time() - t_seg
          if boundary_eval:
            last_eval = evaluate(state, step)
            if best_eval is None or last_eval['eval/top1'] > best_eval['eval/top1']:
              best_eval = last_eval
          if boundary_ckpt:
            save(state, step)
          writer.reset_rate(step)
          t_seg = time.time()
      if pending is not None:
        process(par.get_metrics(pending))
      train_time += time.time() - t_seg
      decode_errors['train'] = int(getattr(train_iter, 'decode_errors', 0)
                                   or 0)

    if status == 'preempted':
      log(f'[train] SIGTERM received: checkpointing step {step} and exiting.')
      if step not in checkpointer.steps():
        save(state, step)
      return {'status': 'preempted', 'step': step, 'workdir': workdir}

    # 5. Final eval, checkpoint and summary.
    final_eval = evaluate(state, step)
    if best_eval is None or final_eval['eval/top1'] >= best_eval['eval/top1']:
      best_eval = final_eval
    if step not in checkpointer.steps():
      save(state, step)
  finally:
    stop.uninstall()
    writer.close()

  wall = time.time() - t_start
  host_final = par.get_metrics({'total': state.nonfinite_total})
  summary = {
      'status': status,
      'step': step,
      'total_steps': int(tcfg.total_steps),
      'final_eval': {k.split('/', 1)[-1]: v for k, v in final_eval.items()},
      'best_eval': {k.split('/', 1)[-1]: v for k, v in best_eval.items()},
      'final_train': {k.split('/', 1)[-1]: v for k, v in last_train.items()},
      'final_train_loss': last_train.get('train/loss'),
      'wall_time_s': wall,
      'cumulative_wall_time_s': prior_wall + wall,
      'train_time_s': train_time,
      'images_per_s': train_images / train_time if train_time > 0 else None,
      'skipped_steps': int(host_final['total']),
      'skipped_step_numbers': skipped_steps[-100:],
      'decode_errors': decode_errors['train'] + decode_errors['eval'],
      'decode_errors_by_split': dict(decode_errors),
      'num_devices': par.num_devices,
      'parallel_mode': par.mode,
      'process_count': jax.process_count(),
      'workdir': workdir,
      'checkpoint_dir': checkpointer.directory,
      'tensorboard_dir': writer.tb_dir,
  }
  checkpointer.close()
  if is_main:
    metrics_lib.write_json_atomic(os.path.join(workdir, 'summary.json'),
                                  summary)
    print(f'[done] final top-1 {100 * final_eval["eval/top1"]:.2f}% '
          f'(best {100 * best_eval["eval/top1"]:.2f}% at step '
          f'{best_eval["step"]}), wall time {wall:.0f}s\n'
          f'[done] TensorBoard logs: tensorboard --logdir {writer.tb_dir}\n'
          f'[done] checkpoints: {checkpointer.directory}\n'
          f'[done] summary: {os.path.join(workdir, "summary.json")}',
          flush=True)
  return summary

