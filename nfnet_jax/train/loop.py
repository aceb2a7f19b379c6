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
import json
import os
import time
from typing import Any, NamedTuple, Optional

import jax

from nfnet_jax import data as data_lib
from nfnet_jax import errors
from nfnet_jax import models as models_lib
from nfnet_jax import optim as optim_lib
from nfnet_jax.data import inference
from nfnet_jax.train.validate import validate_config
from nfnet_jax.train import checkpoint as ckpt_lib
from nfnet_jax.train import evaluator as evaluator_lib
from nfnet_jax.train import lost_host
from nfnet_jax.train import logs
from nfnet_jax.train import parallel as parallel_lib
from nfnet_jax.train import preemption
from nfnet_jax.train import profiler as profiler_lib
from nfnet_jax.train import state as state_lib
from nfnet_jax.train import step as step_lib
from nfnet_jax.train import workdir_lock

PyTree = Any


# ---------------------------------------------------------------------------
# Set-up


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


def _preprocessing_json(config) -> Optional[str]:
  """The eval preprocessing record (nfnet_jax.data.inference) saved with a checkpoint."""
  try:
    return json.dumps(inference.from_data_config(config.data))
  except Exception:  # pylint: disable=broad-except
    return None   # never let the record stop a checkpoint


def setup_devices(config) -> parallel_lib.Parallel:
  """Validates the config, joins ``jax.distributed`` if asked, picks devices.

  The device checks need the process group, so a multi-host run validates
  twice: everything but the devices first, then the devices.
  """
  distributed = _will_initialize_distributed(config)
  validate_config(config, check_devices=not distributed)
  if parallel_lib.maybe_initialize_distributed(config.parallel.distributed):
    validate_config(config)
  _enable_compilation_cache(config.train.get('compilation_cache_dir'))
  devices = parallel_lib.select_devices(config.parallel.num_devices)
  return parallel_lib.Parallel(config.parallel.mode, devices)


def _describe_run(config, info, par, start_step: int) -> str:
  return (f'[train] {config.model.name} on {config.data.name}: '
          f'{info.num_classes} classes, global batch {config.train.batch_size}'
          f' over {par.num_devices} device(s) ({par.mode}, '
          f'{jax.process_count()} process(es)), steps {start_step}->'
          f'{config.train.total_steps}, compute {config.compute_dtype}')


def _log_first_step(writer, metrics, t0: float) -> None:
  jax.block_until_ready(metrics)
  writer.log(f'[train] first step (compilation included) took '
             f'{time.time() - t0:.1f}s')


def compile_steps(config, model, tx, schedule, par, num_classes: int):
  """The wrapped train and eval steps of :mod:`nfnet_jax.train.step`."""
  train_step = par.wrap_train_step(step_lib.make_train_step(
      model.apply, tx, config.optimizer, compute_dtype=config.compute_dtype,
      schedule=schedule, agc_telemetry=config.train.get('agc_telemetry', True)))
  # The official experiments evaluate in float32 even after bf16 training.
  eval_step = par.wrap_eval_step(step_lib.make_eval_step(
      model.apply,
      compute_dtype=config.train.get('eval_compute_dtype', 'float32'),
      num_classes=num_classes, flip_tta=config.train.get('eval_flip_tta', False)))
  return train_step, eval_step


def use_async_checkpoints(setting: str, backend: Optional[str] = None) -> bool:
  """``config.train.async_checkpoints`` -> whether saves run in the background.

  'auto' is on for accelerators (the step runs on the device, so the host
  cores are free to write) and off on CPU (the write would take the cores
  the step runs on).
  """
  if setting == 'auto':
    return (backend or jax.default_backend()) != 'cpu'
  return setting == 'on'


def save_checkpoint(checkpointer, par, state, step, log: logs.StepLog,
                    wall_time_s: float, config) -> bool:
  """Writes checkpoint ``step`` with the metadata a resume needs."""
  meta = dict(log.meta(), cumulative_wall_time_s=wall_time_s,
              config=_config_json(config),
              preprocessing=_preprocessing_json(config))
  ok = checkpointer.save(step, par.get_replicated(state), meta)
  if ok:
    how = ' (writing in the background)' if checkpointer.async_save else ''
    log.writer.log(f'[checkpoint] saved step {step} to '
                   f'{checkpointer.directory}/{step}{how}')
  return ok


# ---------------------------------------------------------------------------
# Summary


def _strip(d: dict) -> dict:
  return {k.split('/', 1)[-1]: v for k, v in d.items()}


def make_summary(*, status, step, config, final_eval, evaluator, log,
                 times: dict, skipped_total: int, train_decode_errors: int,
                 par, workdir, checkpointer, writer) -> dict:
  """The run's ``summary.json``."""
  decode = {'train': train_decode_errors, 'eval': evaluator.decode_errors}
  train_time = times['train']
  return {
      'status': status,
      'step': step,
      'total_steps': int(config.train.total_steps),
      'final_eval': _strip(final_eval),
      'best_eval': _strip(evaluator.best),
      'final_train_eval': _strip(evaluator.train_eval) if evaluator.train_eval else None,
      'final_train': _strip(log.last_train),
      'final_train_loss': log.last_train.get('train/loss'),
      'wall_time_s': times['wall'],
      'cumulative_wall_time_s': times['prior'] + times['wall'],
      'train_time_s': train_time,
      'images_per_s': (times['images'] / train_time if train_time > 0
                       else None),
      'skipped_steps': skipped_total,
      'skipped_step_numbers': log.skipped_steps[-100:],
      'decode_errors': decode['train'] + decode['eval'],
      'decode_errors_by_split': decode,
      'num_devices': par.num_devices,
      'parallel_mode': par.mode,
      'process_count': jax.process_count(),
      'workdir': workdir,
      'checkpoint_dir': checkpointer.directory,
      'tensorboard_dir': writer.tb_dir,
  }


def write_summary(summary: dict, evaluator, writer) -> None:
  """``<workdir>/summary.json`` and the closing lines (process 0)."""
  logs.write_json_atomic(
      os.path.join(summary['workdir'], 'summary.json'), summary)
  final, best = summary['final_eval'], summary['best_eval']
  print(f'[done] final top-1 {100 * final["top1"]:.2f}% (best '
        f'{100 * best["top1"]:.2f}% at step {evaluator.best["step"]}), wall '
        f'time {summary["wall_time_s"]:.0f}s\n'
        f'[done] TensorBoard logs: tensorboard --logdir {writer.tb_dir}\n'
        f'[done] checkpoints: {summary["checkpoint_dir"]}\n'
        f'[done] summary: {os.path.join(summary["workdir"], "summary.json")}',
        flush=True)


# ---------------------------------------------------------------------------
# The loop


def _close(iterator) -> None:
  """Closes a train iterator (a DataIterator; None or a stand-in without close: nothing)."""
  close = getattr(iterator, 'close', None)
  if close is not None:
    close()


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains and evaluates ``config`` in ``workdir`` (resumed if possible).

  ``workdir`` receives checkpoints, TensorBoard logs, ``metrics.jsonl`` and
  ``summary.json``. Returns the summary dict; a run stopped by SIGTERM
  checkpoints and returns ``status='preempted'`` without a summary.

  The workdir is locked for the run (``train/workdir_lock.py``); on a
  multi-process job every process watches the others
  (``train/lost_host.py``).

  Raises:
    errors.BadInputError: (a ValueError) a bad config (before anything is
      compiled), data, workdir or checkpoint; WorkdirLockedError: the
      workdir is held by another live run.
    logs.NonfiniteStepError: a non-finite step with
      ``train.nonfinite='raise'`` (a FloatingPointError).
    logs.TrainingDiverged: too many consecutive non-finite steps.
    Both are errors.DivergedError (exit status 3).
  """
  t_start = time.time()

  # ---- 1. Config, devices, model, optimizer.
  par = setup_devices(config)
  tcfg, is_main = config.train, jax.process_index() == 0
  info = data_lib.dataset_info(config.data)
  model = models_lib.create_model(config.model, info.num_classes)
  tx, schedule = optim_lib.build_optimizer(config.optimizer, tcfg.batch_size,
                                           tcfg.total_steps)
  # One writer per workdir; a lost peer process is named (not waited for).
  workdir = prepare_workdir(workdir)
  log = print if is_main else state_lib._silent  # pylint: disable=protected-access
  lock = workdir_lock.acquire_for_job(
      workdir, tcfg.get('lock_stale_after_s', workdir_lock.DEFAULT_STALE_AFTER_S),
      log=log)
  watch = lost_host.start(
      workdir, tcfg.get('lost_host_timeout_s', lost_host.DEFAULT_TIMEOUT_S),
      os.path.join(workdir, 'checkpoints'),
      on_lost=lock.release if lock is not None else None)
  try:
    return _train(config, workdir, par, info, model, tx, schedule, t_start)
  except Exception:
    if watch is not None:
      watch.explain_failure()   # a collective failed because a peer died?
    raise
  finally:
    if watch is not None:
      watch.close()
    if lock is not None:
      lock.release()


def prepare_workdir(workdir: str) -> str:
  """Creates ``workdir`` (absolute path returned).

  Raises:
    errors.WorkdirError: it cannot be created or written (below a regular
      file, no permission, ...).
  """
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.WorkdirError(
        f'--workdir {workdir} cannot be created: {e.strerror or e}'
        + (' (a path component is a regular file)'
           if isinstance(e, (NotADirectoryError, FileExistsError)) else '')
    ) from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise errors.WorkdirError(f'--workdir {workdir} is not writable')
  return workdir


class _Run(NamedTuple):
  """What :func:`_train` works with once the state and the steps are ready."""
  checkpointer: Any
  writer: Any
  evaluate: Any
  log: Any
  profiler: Any
  train_step: Any
  save: Any
  prior_wall: float
  start_step: int
  state: Any


def _set_up_run(config, workdir, par, info, model, tx, schedule, t_start) -> _Run:
  """Sections 2-3 of :func:`_train`: the state, the steps, the logs."""
  tcfg, is_main = config.train, jax.process_index() == 0

  # ---- 2. State: resume, else fine-tune, else fresh.
  checkpointer = ckpt_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints'), keep=tcfg.keep_checkpoints,
      log=print if is_main else state_lib._silent,  # pylint: disable=protected-access
      async_save=use_async_checkpoints(tcfg.get('async_checkpoints', 'auto')),
      config=config)
  init = state_lib.initial_state(model, tx, config, info.image_shape,
                                 checkpointer, log=checkpointer.log)
  step = init.start_step
  writer = logs.MetricWriter(
      workdir, total_steps=tcfg.total_steps, start_step=step,
      images_per_step=tcfg.batch_size, enabled=is_main)
  writer.log(_describe_run(config, info, par, step))

  # ---- 3. Steps, evaluator, step log.
  train_step, eval_step = compile_steps(config, model, tx, schedule, par,
                                        info.num_classes)
  evaluate = evaluator_lib.Evaluator(config, par, eval_step, writer,
                                     par.topology(),
                                     writer.rows() if is_main else ())
  log = logs.StepLog(tcfg, writer, init.meta, fetch=par.get_metrics,
                        agc_log=logs.AGCLog.for_config(config, init.state.params))
  profiler = profiler_lib.StepProfiler(
      profiler_lib.parse_profile_steps(tcfg.get('profile_steps', '')),
      os.path.join(workdir, 'profile'), log=writer.log)
  prior_wall = float(init.meta.get('cumulative_wall_time_s', 0.0))
  save = lambda state, step: save_checkpoint(  # pylint: disable=g-long-lambda
      checkpointer, par, state, step, log,
      prior_wall + time.time() - t_start, config)
  return _Run(checkpointer=checkpointer, writer=writer, evaluate=evaluate, log=log,
              profiler=profiler, train_step=train_step, save=save, prior_wall=prior_wall,
              start_step=step, state=par.put_replicated(init.state))


def _train(config, workdir, par, info, model, tx, schedule, t_start) -> dict:
  """The body of :func:`train_and_evaluate`, the workdir held."""
  tcfg, is_main = config.train, jax.process_index() == 0

  run = _set_up_run(config, workdir, par, info, model, tx, schedule, t_start)
  checkpointer, writer, evaluate, log, profiler = (
      run.checkpointer, run.writer, run.evaluate, run.log, run.profiler)
  train_step, save, prior_wall, step, state = (
      run.train_step, run.save, run.prior_wall, run.start_step, run.state)
  del run

  # ---- 4. Train: log, evaluate and checkpoint at their boundaries.
  status, start, train_time, train_decode_errors = 'completed', step, 0.0, 0
  sync_every = 1 if jax.process_count() == 1 else max(1, min(tcfg.log_every, 10))
  train_iter = None
  with preemption.StopFlag() as stop:
    try:
      if step < tcfg.total_steps:
        train_iter = data_lib.train_iterator(config, start_step=step,
                                             layout='host', **par.topology())
        batches = parallel_lib.prefetch_to_device(iter(train_iter),
                                                  par.put_batch)
        writer.reset_rate(step)
        t_seg = time.time()
        while step < tcfg.total_steps:
          if step % sync_every == 0 and stop.agreed():
            status = 'preempted'
            break
          batch = next(batches, None)
          if batch is None:
            raise RuntimeError(f'the train iterator ended at step {step} of '
                               f'{tcfg.total_steps}')
          profiler.before(step)
          state, metrics = train_step(state, batch)
          profiler.after(step, metrics)
          if step == start:
            _log_first_step(writer, metrics, t_seg)
          log.push(metrics)
          step += 1
          writer.advance(step)
          at_log = step % tcfg.log_every == 0 or step == tcfg.total_steps
          at_eval = tcfg.eval_every and step % tcfg.eval_every == 0
          at_ckpt = tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0
          if at_log or at_eval or at_ckpt:
            log.settle()
          if at_log:
            log.flush(step)
          if (at_eval or at_ckpt) and step < tcfg.total_steps:
            train_time += time.time() - t_seg
            if at_eval:
              evaluate(state, step)
            if at_ckpt:
              save(state, step)
            writer.reset_rate(step)
            t_seg = time.time()
        log.settle()
        train_time += time.time() - t_seg
        train_decode_errors = int(getattr(train_iter, 'decode_errors', 0) or 0)
        # Now, not whenever the garbage collector gets to it: the tf.data
        # iterator's destructor waits for its worker threads, which at
        # interpreter exit held runs up for 22-62 s after their last line.
        _close(train_iter)

      if status == 'preempted':
        writer.log(f'[train] SIGTERM received: checkpointing step {step} and '
                   'exiting.')
        if step not in checkpointer.steps():
          save(state, step)
        checkpointer.close()   # waits for a background save to complete
        return {'status': 'preempted', 'step': step, 'workdir': workdir}

      # ---- 5. Final eval and checkpoint.
      final_eval = evaluate(state, step, final=True)
      if step not in checkpointer.steps():
        save(state, step)
      checkpointer.wait()      # the final checkpoint is complete before the summary
    finally:
      _close(train_iter)   # idempotent; here for the error and SIGTERM paths
      profiler.stop()
      writer.close()

  # ---- 6. Summary.
  times = {'wall': time.time() - t_start, 'prior': prior_wall,
           'train': train_time, 'images': (step - start) * tcfg.batch_size}
  summary = make_summary(
      status=status, step=step, config=config, final_eval=final_eval,
      evaluator=evaluate, log=log, times=times,
      skipped_total=int(par.get_metrics({'t': state.nonfinite_total})['t']),
      train_decode_errors=train_decode_errors, par=par, workdir=workdir,
      checkpointer=checkpointer, writer=writer)
  checkpointer.close()
  if is_main:
    write_summary(summary, evaluate, writer)
  return summary
