"""Config validation: every field is checked before anything is traced.

Validation that spans the parts lives here, above them: :func:`validate_config`
runs each part's own validator (data, model, optimizer, timm interop) and the
train/parallel/finetune checks below. Problems are collected and raised as a
single ``ValueError``; each line names the field (``config.train.batch_size``),
the bad value and what is allowed.
"""
import os
from typing import Any, Callable, Optional

import jax

from nfnet_jax import data as data_lib
from nfnet_jax import models as models_lib
from nfnet_jax import optim as optim_lib
from nfnet_jax.config import load as load_lib
from nfnet_jax.config import schema
from nfnet_jax.interop import timm as timm_lib
from nfnet_jax.train.profiler import parse_profile_steps
from nfnet_jax.utils import get_dotted
from nfnet_jax.utils import is_int
from nfnet_jax.utils import is_number

NONFINITE = ('skip', 'raise')

# Fields of these sections are fixed by nfnet_jax.config.base_config(); a
# stray name is almost always a typo in an experiment file.
_CLOSED_SECTIONS = ('train', 'parallel', 'finetune')


class _Errors:
  """Collects problems; each is one line naming field, value and allowed."""

  def __init__(self):
    self.lines: list[str] = []

  def add(self, field: str, value: Any, allowed: str):
    self.lines.append(f'config.{field}={value!r} is invalid: {allowed}.')

  def run(self, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Runs a part's validator, recording its ValueError: (ok, result)."""
    try:
      return True, fn()
    except ValueError as e:
      self.lines.append(str(e))
    return False, None

  def raise_if_any(self):
    if len(self.lines) == 1:
      raise load_lib.ConfigError(self.lines[0])
    if self.lines:
      raise load_lib.ConfigError(f'{len(self.lines)} config errors:\n  - '
                       + '\n  - '.join(self.lines))


_get = get_dotted


def _check_int(err, config, field, minimum, allowed=None):
  v = _get(config, field)
  if not is_int(v) or v < minimum:
    err.add(field, v, allowed or f'an integer >= {minimum}')
  return v


def device_count_for(config) -> int:
  """Devices the run will use (after ``jax.distributed`` initialisation)."""
  n = _get(config, 'parallel.num_devices', 0) or 0
  total = jax.device_count()
  return min(n, total) if is_int(n) and n > 0 else total


def _check_top_level(err, config) -> None:
  """Unknown top-level keys and closed-section fields, seed, compute dtypes."""
  base = schema.base_config()
  for key in config.keys():
    if key not in base:
      err.lines.append(load_lib.unknown_field_message(base, key))
  for section in _CLOSED_SECTIONS:
    node = _get(config, section)
    if node is None:
      err.add(section, None, 'a section of base_config() is missing')
      continue
    for key in node.keys():
      if key not in base[section]:
        err.lines.append(load_lib.unknown_field_message(base, f'{section}.{key}'))
  if not is_int(_get(config, 'seed')):
    err.add('seed', _get(config, 'seed'), 'an integer')
  if _get(config, 'compute_dtype') not in schema.COMPUTE_DTYPES:
    err.add('compute_dtype', _get(config, 'compute_dtype'),
            f'one of {schema.COMPUTE_DTYPES}')
  if _get(config, 'train.eval_compute_dtype', 'float32') not in \
      schema.COMPUTE_DTYPES:
    err.add('train.eval_compute_dtype', _get(config, 'train.eval_compute_dtype'),
            f'one of {schema.COMPUTE_DTYPES}')


def _check_parts(err, config) -> None:
  """Each part's own validator: data first (the model needs its classes), model, optimizer."""
  # ---- data
  num_classes = None
  ok, _ = err.run(lambda: data_lib.validate_data_config(config.data))
  if ok:
    _, info = err.run(lambda: data_lib.dataset_info(config.data))
    num_classes = getattr(info, 'num_classes', None)

  # ---- model
  min_res = None
  ok, _ = err.run(lambda: models_lib.validate_model_config(
      config.model, num_classes=num_classes))
  if ok:
    _, min_res = err.run(lambda: models_lib.model_min_resolution(config.model))
  for field in ('data.image_size', 'data.eval_image_size'):
    res = _get(config, field)
    if not is_int(res) or res < 1:
      err.add(field, res, 'a positive integer (pixels)')
    elif min_res and res < min_res:
      err.add(field, res, f'at least {min_res}, the smallest input '
              f'{_get(config, "model.name")} accepts')

  # ---- optimizer
  # (label_smoothing, ema_decay and sam_rho are checked there too: checking
  # them again here reported one bad field twice.)
  total = _get(config, 'train.total_steps')
  # With the run length: a warm-up longer than the run is caught here,
  # not when the optimizer is built.
  err.run(lambda: optim_lib.validate_optimizer_config(
      config.optimizer,
      total_steps=total if is_int(total) and total >= 1 else None))


def _check_train(err, config) -> None:
  """The ``config.train`` fields."""
  _check_int(err, config, 'train.batch_size', 1)
  _check_int(err, config, 'train.total_steps', 1)
  _check_int(err, config, 'train.eval_batch_size', 1)
  _check_int(err, config, 'train.eval_every', 0,
             'an integer >= 0 (steps; 0 = only at the end)')
  _check_int(err, config, 'train.log_every', 1)
  _check_int(err, config, 'train.checkpoint_every', 0,
             'an integer >= 0 (steps; 0 = only the final checkpoint)')
  _check_int(err, config, 'train.keep_checkpoints', 1)
  if _get(config, 'train.nonfinite') not in NONFINITE:
    err.add('train.nonfinite', _get(config, 'train.nonfinite'),
            f'one of {NONFINITE}')
  _check_int(err, config, 'train.max_consecutive_nonfinite', 1)
  for field, low in (('train.lock_stale_after_s', 1.0),
                     ('train.lost_host_timeout_s', 1.0)):
    v = _get(config, field, low)
    if not is_number(v) or not low <= v < float('inf'):
      err.add(field, v, f'a finite number of seconds >= {low:g}')
  if not isinstance(_get(config, 'train.eval_flip_tta', False), bool):
    err.add('train.eval_flip_tta', _get(config, 'train.eval_flip_tta'),
            'True or False')
  if not isinstance(_get(config, 'train.eval_with_ema'), bool):
    err.add('train.eval_with_ema', _get(config, 'train.eval_with_ema'),
            'True or False')
  if _get(config, 'train.async_checkpoints', 'auto') not in schema.ASYNC_CHECKPOINTS:
    err.add('train.async_checkpoints', _get(config, 'train.async_checkpoints'),
            f'one of {schema.ASYNC_CHECKPOINTS}')
  if not isinstance(_get(config, 'train.agc_telemetry', True), bool):
    err.add('train.agc_telemetry', _get(config, 'train.agc_telemetry'),
            'True or False')
  profile = _get(config, 'train.profile_steps', '')
  try:
    span = parse_profile_steps(profile)
  except ValueError as e:
    err.add('train.profile_steps', profile, str(e))
  else:
    total = _get(config, 'train.total_steps')
    if span is not None and is_int(total) and span[1] >= total:
      err.add('train.profile_steps', profile,
              f'steps below config.train.total_steps={total}')
  cache_dir = _get(config, 'train.compilation_cache_dir')
  if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir):
    err.add('train.compilation_cache_dir', cache_dir,
            'a directory path, or None to disable the compilation cache')


def _check_parallel(err, config, check_devices, num_devices, process_count) -> None:
  """``config.parallel`` and, with ``check_devices``, the batch sizes against the devices."""
  batch = _get(config, 'train.batch_size')
  eval_batch = _get(config, 'train.eval_batch_size')
  mode = _get(config, 'parallel.mode')
  if mode not in schema.PARALLEL_MODES:
    err.add('parallel.mode', mode, f'one of {schema.PARALLEL_MODES}')
  if _get(config, 'parallel.distributed') not in schema.DISTRIBUTED:
    err.add('parallel.distributed', _get(config, 'parallel.distributed'),
            f'one of {schema.DISTRIBUTED}')
  ndev_cfg = _check_int(err, config, 'parallel.num_devices', 0,
                        'an integer >= 0 (0 = every device)')
  if check_devices:
    total = jax.device_count()
    if is_int(ndev_cfg) and ndev_cfg > total:
      err.add('parallel.num_devices', ndev_cfg,
              f'at most {total}, the number of devices')
    ndev = num_devices if num_devices is not None else device_count_for(config)
    nproc = process_count if process_count is not None else jax.process_count()
    for field, value in (('train.batch_size', batch),
                         ('train.eval_batch_size', eval_batch)):
      if is_int(value) and value >= 1 and value % ndev:
        err.add(field, value, f'a multiple of the number of devices ({ndev}); '
                f'e.g. {max(ndev, value // ndev * ndev)}')
      elif is_int(value) and value >= 1 and value % nproc:
        err.add(field, value, f'a multiple of the number of processes '
                f'({nproc})')


def _check_finetune(err, config) -> None:
  """``config.finetune``: the checkpoint to start from and its format."""
  ckpt = _get(config, 'finetune.checkpoint')
  if ckpt is not None:
    if not isinstance(ckpt, str) or not ckpt:
      err.add('finetune.checkpoint', ckpt, 'None or a path to an official '
              'F*_haiku.npz file or an nfnet_jax checkpoint directory')
    elif not os.path.exists(ckpt):
      err.add('finetune.checkpoint', ckpt, 'an existing file or directory '
              '(not found)')
  fmt = _get(config, 'finetune.format', 'auto')
  if fmt not in ('auto', 'timm'):
    err.add('finetune.format', fmt, "'auto' (official file or nfnet_jax checkpoint dir) "
            "or 'timm' (a timm .pth/.bin/.safetensors file)")
  elif fmt == 'timm':
    name = _get(config, 'finetune.timm_name')
    if name not in timm_lib.TIMM_ARCHS:
      err.add('finetune.timm_name', name, f'a covered timm model name: '
              f'{timm_lib.supported_names()}')
  if not isinstance(_get(config, 'finetune.reset_classifier'), bool):
    err.add('finetune.reset_classifier',
            _get(config, 'finetune.reset_classifier'), 'True or False')


def validate_config(config, *, check_devices: bool = True,
                    num_devices: Optional[int] = None,
                    process_count: Optional[int] = None) -> None:
  """Checks the whole config; raises one ``ValueError`` listing every problem.

  Nothing is traced or compiled. Sub-validators of the model, optimizer and
  data parts are called too.

  Args:
    config: the experiment ``ConfigDict``.
    check_devices: also check divisibility by the device count (calls
      ``jax.device_count()``, so on multi-host runs only after
      ``jax.distributed.initialize()``).
    num_devices: the device count to check against (default: from JAX and
      ``config.parallel.num_devices``).
    process_count: number of processes (default: ``jax.process_count()``).

  Raises:
    ValueError: naming each bad field, its value and the allowed values.
  """
  err = _Errors()
  _check_top_level(err, config)
  _check_parts(err, config)
  _check_train(err, config)
  _check_parallel(err, config, check_devices, num_devices, process_count)
  _check_finetune(err, config)
  err.raise_if_any()
