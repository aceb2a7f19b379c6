"""The initial train state: fresh, resumed, or merged from a fine-tune source.

:func:`initial_state` is what the loop calls: it builds the fresh state on
the host, then takes the newest readable checkpoint of the workdir, or else
(``config.finetune.checkpoint``) merges pre-trained parameters into it with a
fresh classifier.
"""
import functools
import os
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nfnet_jax import errors
from nfnet_jax.config import schema
from nfnet_jax.interop import timm as timm_lib
from nfnet_jax.train import step as step_lib
from nfnet_jax.train import weights as weights_lib

PyTree = Any


def _silent(*args, **kwargs):
  del args, kwargs


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


def is_classifier(module: str) -> bool:
  """Whether a Haiku module name is the model's final classifier."""
  return re.fullmatch(schema.CLASSIFIER_MODULE, module) is not None


def _flatten_params(params) -> dict:
  return {(m, n): v for m, sub in params.items() for n, v in sub.items()}


def _check_timm_finetune(config, log) -> dict:
  """The size overrides of a timm fine-tune source (``finetune.format='timm'``).

  config.model must build the timm model's network (sizes may differ, the
  shapes are checked then); numerics options may differ (noted in the log).
  """
  path, name = config.finetune.checkpoint, config.finetune.timm_name
  diffs = timm_lib.architecture_differences(
      config.model, name, ignore=timm_lib.NUMERICS_ONLY + timm_lib.SIZE_FIELDS)
  if diffs:
    raise errors.WeightsError(f'config.finetune.checkpoint={path!r} holds timm {name} weights, but '
                     f'config.model builds another network: {"; ".join(diffs)} (start from '
                     f'nfnet_jax.interop.timm.timm_model_config({name!r}))')
  numerics = timm_lib.architecture_differences(config.model, name, ignore=timm_lib.SIZE_FIELDS)
  if numerics:
    log(f'[finetune] note: numerics differ from timm {name} (fine for training): '
        f'{"; ".join(numerics)}')
  return {k: config.model[k] for k in timm_lib.SIZE_FIELDS
          if k in config.model and config.model[k] is not None}


def _read_finetune(config, log) -> dict:
  """The params of ``config.finetune.checkpoint`` (raw params of a checkpoint).

  A directory is one of our checkpoints; a file is official-format unless
  ``finetune.format='timm'``. Only the file format is checked here; names
  and shapes are checked against the params built from config (any model,
  any input channels, the classifier exempt).
  """
  path = config.finetune.checkpoint
  overrides = None
  if config.finetune.get('format', 'auto') == 'timm':
    spec = weights_lib.WeightSpec('timm', path, config.finetune.timm_name)
    overrides = _check_timm_finetune(config, log)
  else:
    spec = weights_lib.WeightSpec('ckpt' if os.path.isdir(path) else 'official', path)
  try:
    return weights_lib.load_weights(spec, use_ema=False, timm_overrides=overrides).params
  except errors.NFNetError:
    raise
  except ValueError as e:
    raise errors.WeightsError(f'config.finetune.checkpoint={path!r}: {e}') from None


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
  loaded = _flatten_params(_read_finetune(config, log))
  reset = config.finetune.reset_classifier
  out, missing, mismatched, kept_fresh = {}, [], [], []
  for module, sub in params.items():
    out[module] = {}
    for name, value in sub.items():
      if reset and is_classifier(module):
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
    raise errors.WeightsError(
        f'config.finetune.checkpoint={path!r} does not fit config.model: '
        f'{len(missing)} missing (e.g. {missing[:4]}), {len(mismatched)} '
        f'with other shapes (e.g. {mismatched[:4]}). Pick the matching '
        'config.model.variant (and width/depths).')
  log(f'[finetune] loaded {sum(len(s) for s in out.values()) - len(kept_fresh)} '
      f'params from {path}; fresh classifier: {kept_fresh}')
  return out


class Initial(NamedTuple):
  """What the loop starts from."""
  state: step_lib.TrainState    # host numpy arrays
  meta: dict                    # the restored checkpoint's metadata ({} if fresh)
  start_step: int


def initial_state(model, tx, config, input_shape, checkpointer,
                  log=print) -> Initial:
  """Fresh state, else the newest checkpoint, else fresh + fine-tune params.

  The fine-tune source is checked against the model's abstract params
  (``jax.eval_shape``: nothing compiles) before the real init is compiled, so
  a checkpoint of another model fails fast.
  """
  finetune_params = None
  if config.finetune.checkpoint:
    abstract, _ = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(input_shape)),
        is_training=True))
    finetune_params = load_finetune_params(config, abstract, log=_silent)
  host_state = init_train_state(model, tx, config, input_shape)
  restored = checkpointer.restore_latest(host_state)
  if restored is not None:
    host_state, meta, step = restored
    log(f'[train] resuming from {checkpointer.directory}/{step}')
    return Initial(host_state, meta, int(host_state.step))
  if finetune_params is not None:
    # Fill in the fresh classifier (kept abstract above) from the real init.
    params = {m: {n: (host_state.params[m][n]
                      if isinstance(v, jax.ShapeDtypeStruct) else v)
                  for n, v in sub.items()}
              for m, sub in finetune_params.items()}
    log(f'[finetune] loaded params from {config.finetune.checkpoint}')
    host_state = host_state_from(params, host_state.model_state, tx, config)
  return Initial(host_state, {}, int(host_state.step))
