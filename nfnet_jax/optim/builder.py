"""Turns ``config.optimizer`` into the NFNet paper's optax chain.

The default chain reproduces the official ``SGD_AGC`` update
(``nfnets/optim.py`` + ``experiment_nfnets.py``), per parameter, at global
step t (0 for the first update):

    g = mean gradient over all devices        (done by the train step)
    g = AGC(g, p)           unless p is the classifier weight
    g = g + wd * p          unless p is a gain, skip gain, bias or BN scale/offset
    m = mu * m + g
    g = g + mu * m          (Nesterov; plain SGD uses g = m)
    p = p - lr(t) * g

with lr(t) a linear warm-up from 0 to ``base_lr * batch / lr_batch_base``
over ``warmup_steps`` followed by a cosine decay to 0 at ``total_steps``.
The Nesterov form above is exactly ``optax.trace(mu, nesterov=True)``
(tested against a numpy transcription of the official update).

Other choices: ``name='sgd', nesterov=False``; ``'adam'`` (coupled L2 added
to the gradient, like the official Adam without ``use_adamw``); ``'adamw'``
(decoupled weight decay with the same mask); ``clipping=None`` (no AGC);
``sam_rho`` (SAM, see `build_optimizer`); ``accum_steps`` (gradient
accumulation with ``optax.MultiSteps``).
"""
import math
import re
from typing import Any, Callable, List, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from nfnet_jax import config as config_lib
from nfnet_jax.config.load import ConfigError
from nfnet_jax.optim import agc as agc_lib
from nfnet_jax.optim import masks
from nfnet_jax.utils import MISSING
from nfnet_jax.utils import get_dotted
from nfnet_jax.utils import is_int
from nfnet_jax.utils import is_number

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('cosine', 'constant')
ADAM_B2 = 0.999
ADAM_EPS = 1e-8


def _defaults():
  return config_lib.base_config().optimizer


def _field(opt_config, name: str, defaults=None):
  """Reads a field from a ConfigDict or dict, falling back to the default."""
  value = get_dotted(opt_config, name, MISSING)
  if value is MISSING:
    value = (_defaults() if defaults is None else defaults)[name]
  return value


def _check_sgd_and_schedule(get, bad, total_steps: Optional[int]) -> None:
  """`validate_optimizer_config`'s checks of the optimizer and its LR schedule."""
  name = get('name')
  if name not in OPTIMIZERS:
    bad('name', name, f'expected one of {OPTIMIZERS}')

  momentum = get('momentum')
  if not is_number(momentum) or not 0.0 <= momentum < 1.0:
    bad('momentum', momentum, 'expected a number in [0, 1) (0.9 in the paper)')

  nesterov = get('nesterov')
  if not isinstance(nesterov, bool):
    bad('nesterov', nesterov, 'expected True or False')

  base_lr = get('base_lr')
  # 0 is allowed: a run that must not learn is a check of the loop and of the
  # sweeps' 'not learning' outcome.
  if not is_number(base_lr) or not base_lr >= 0 or not math.isfinite(base_lr):
    bad('base_lr', base_lr, 'expected a finite number >= 0 (0.1 per 256 '
        'examples in the paper)')

  lr_batch_base = get('lr_batch_base')
  if not is_number(lr_batch_base) or not lr_batch_base > 0:
    bad('lr_batch_base', lr_batch_base, 'expected a number > 0 (256)')

  schedule = get('schedule')
  if schedule not in SCHEDULES:
    bad('schedule', schedule, f'expected one of {SCHEDULES}')

  min_lr = get('min_lr')
  if not is_number(min_lr) or not 0 <= min_lr < math.inf:
    bad('min_lr', min_lr, 'expected a finite number >= 0 (the cosine floor; 0 for NFNets)')

  warmup = get('warmup_steps')
  if not is_number(warmup) or not 0 <= warmup < math.inf:
    bad('warmup_steps', warmup, 'expected a number >= 0 (fractional allowed: '
        'the official 5 epochs at batch 4096 are 1563.92 steps)')
  elif total_steps is not None and warmup > total_steps:
    bad('warmup_steps', warmup, f'must be <= config.train.total_steps '
        f'({total_steps})')


def _check_clipping_and_regularization(get, bad, total_steps: Optional[int]) -> None:
  """`validate_optimizer_config`'s checks of AGC, weight decay, accumulation, SAM, EMA."""
  wd = get('weight_decay')
  if wd is not None and (not is_number(wd) or not wd >= 0):
    bad('weight_decay', wd, 'expected a number >= 0 or None (2e-5 in the '
        'paper)')

  for field in ('wd_exclude', 'clip_exclude'):
    value = get(field)
    if value is None:
      continue
    if not isinstance(value, str):
      bad(field, value, "expected a regex string on 'module/param' paths "
          'or None')
      continue
    try:
      re.compile(value)
    except re.error as e:
      bad(field, value, f'not a valid regular expression ({e})')

  clipping = get('clipping')
  if clipping is not None and (not is_number(clipping) or not clipping > 0):
    bad('clipping', clipping, 'expected a number > 0 (AGC lambda, 0.01 at '
        'batch 4096) or None to disable AGC')

  clip_eps = get('clip_eps')
  if not is_number(clip_eps) or not clip_eps > 0:
    # eps = 0 is a valid AGC formula but a silent trap in training: every
    # zero-initialised parameter (biases, skip gains) gets a clip norm of
    # lambda * 0 and never moves.
    bad('clip_eps', clip_eps, 'expected a number > 0 (official 1e-3); with 0, '
        'AGC pins zero-initialised parameters (biases, skip gains) at zero')

  accum = get('accum_steps')
  accum_ok = is_int(accum) and accum >= 1
  if not accum_ok:
    bad('accum_steps', accum, 'expected an integer >= 1')
  elif total_steps is not None and accum > total_steps:
    bad('accum_steps', accum, f'must be <= config.train.total_steps '
        f'({total_steps})')

  sam_rho = get('sam_rho')
  if sam_rho is not None:
    if not is_number(sam_rho) or not sam_rho > 0:
      bad('sam_rho', sam_rho, 'expected a number > 0 or None to disable SAM')
    elif accum_ok and accum > 1:
      bad('sam_rho', sam_rho, f'SAM cannot be combined with '
          f'config.optimizer.accum_steps={accum} > 1 (its second gradient '
          'would only see the last micro-batch); set one of them off')

  ema = get('ema_decay')
  if ema is not None and (not is_number(ema) or not 0.0 <= ema < 1.0):
    bad('ema_decay', ema, 'expected a number in [0, 1) or None to disable '
        'the EMA (0.99999 in the paper)')

  ls = get('label_smoothing')
  if not is_number(ls) or not 0.0 <= ls < 1.0:
    bad('label_smoothing', ls, 'expected a number in [0, 1) (0.1 in the '
        'paper)')


def validate_optimizer_config(opt_config, total_steps: Optional[int] = None
                             ) -> None:
  """Checks ``config.optimizer`` before anything is traced.

  Every bad field gets its own line in the error, naming
  ``config.optimizer.<field>``, the bad value and what is allowed. Missing
  fields take their `nfnet_jax.config.base_config` defaults.

  Args:
    opt_config: ``config.optimizer`` (ConfigDict or dict).
    total_steps: if given (``config.train.total_steps``), also checks
      ``warmup_steps <= total_steps`` and ``accum_steps <= total_steps``.

  Raises:
    ValueError: listing every bad field.
  """
  defaults = _defaults()
  get = lambda name: _field(opt_config, name, defaults)
  errors: List[str] = []

  def bad(field, value, allowed):
    errors.append(f'config.optimizer.{field}={value!r} is invalid: {allowed}.')

  _check_sgd_and_schedule(get, bad, total_steps)
  _check_clipping_and_regularization(get, bad, total_steps)

  if len(errors) == 1:
    raise ConfigError(errors[0])
  if errors:
    raise ConfigError(
        'Invalid optimizer config:\n  ' + '\n  '.join(errors))


def warmup_cosine_schedule(peak_value: float, warmup_steps: float,
                           total_steps: int, kind: str = 'cosine',
                           min_value: float = 0.0) -> Callable[[Any], jnp.ndarray]:
  """Linear warm-up from 0, then cosine decay to ``min_value`` (or constant).

  ``lr(t) = peak * t / warmup`` for ``t <= warmup`` and
  ``lr(t) = min + (peak - min) * (1 + cos(pi * (t - warmup) / (total -
  warmup))) / 2`` after it, as the official ``WarmupCosineDecay(start_val=0,
  min_val=min)`` (``nfnets/optim.py``). The warm-up may end between two steps: the official
  experiments pass ``5 * 1281167 / 4096 = 1563.92``, so step 1563 is still
  on the ramp (``peak * 1563 / 1563.92``) and step 1564 is already on the
  cosine, 0.08 steps past its top.

  After ``total_steps`` the LR is clamped at ``min_value`` (0 by default),
  where the official cosine would rise again (``cos`` of an angle past pi).
  Official runs stop at ``total_steps`` so they never see the difference; a
  run resumed or extended past ``total_steps`` here keeps the floor LR
  instead of restarting a second warm cosine cycle by accident.

  Args:
    peak_value: the LR at the end of warm-up.
    warmup_steps: warm-up length in steps, may be fractional (0: start at
      the peak).
    total_steps: the step at which the cosine reaches 0.
    kind: 'cosine' or 'constant' (stay at the peak after warm-up).
    min_value: the cosine's floor: `min + (peak - min) * (1 + cos) / 2`, as
      the official `min_val` (0.001 in the NF-RegNet experiment).

  Returns:
    A function of the (0-based) step returning a float32 scalar.
  """
  if kind not in SCHEDULES:
    raise ValueError(f'schedule kind must be one of {SCHEDULES}, got {kind!r}')
  peak = float(peak_value)
  min_value = float(min_value)
  warmup = float(warmup_steps)
  decay_len = float(total_steps) - warmup

  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    warm = peak * t / max(warmup, 1.0)
    if kind == 'constant':
      after = jnp.full_like(t, peak)
    elif decay_len <= 0:
      after = jnp.zeros_like(t)
    else:
      frac = jnp.clip((t - warmup) / decay_len, 0.0, 1.0)
      after = min_value + 0.5 * (peak - min_value) * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(t < warmup, warm, after)

  return schedule


def _global_normalize_and_scale(scale: float) -> optax.GradientTransformation:
  """``g -> scale * g / ||g||`` with the global norm (SAM's ascent step).

  Unlike ``optax.contrib.normalize`` the norm is floored, so an all-zero
  gradient gives a zero perturbation instead of NaN.
  """

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    factor = scale / jnp.maximum(norm, 1e-12)
    return jax.tree_util.tree_map(lambda g: g * factor, updates), state

  return optax.GradientTransformation(lambda p: optax.EmptyState(), update_fn)


def sam_perturbation(grads, params, rho: float):
  """SAM's ascent point ``params + rho * g / ||g||`` (global L2 norm of g).

  ``grads`` must be the cross-device mean gradient, so every device perturbs
  identically. The norm is floored at 1e-12: a zero gradient gives the
  unperturbed params, not NaN.
  """
  norm = optax.tree.norm(grads)
  factor = rho / jnp.maximum(norm, 1e-12)
  return jax.tree_util.tree_map(lambda p, g: p + factor * g, params, grads)


def _wd_mask_fn(wd_exclude):
  """optax mask callable: True (decay) for every param NOT matching."""
  return lambda params: masks.invert_mask(masks.make_mask(params, wd_exclude))


SAM_MODES = ('train_step', 'opaque')


def _outer_chain(get, update_schedule) -> optax.GradientTransformation:
  """AGC -> coupled weight decay -> SGD/Adam/AdamW at ``update_schedule``."""
  parts = []
  clipping = get('clipping')
  if clipping is not None:
    parts.append(agc_lib.adaptive_grad_clip(
        clipping, eps=get('clip_eps'), exclude=get('clip_exclude')))

  name = get('name')
  wd = get('weight_decay') or 0.0
  wd_mask = _wd_mask_fn(get('wd_exclude'))
  if wd and name in ('sgd', 'adam'):
    # Coupled L2: added to the gradient after AGC, before momentum (the
    # official SGD_AGC order), so the decay term is never clipped.
    parts.append(optax.add_decayed_weights(wd, mask=wd_mask))

  momentum = get('momentum')
  if name == 'sgd':
    parts.append(optax.sgd(update_schedule, momentum=momentum or None,
                           nesterov=bool(get('nesterov'))))
  elif name == 'adam':
    parts.append(optax.adam(update_schedule, b1=momentum, b2=ADAM_B2,
                            eps=ADAM_EPS))
  else:  # adamw: decoupled decay p -= lr * wd * p, same mask.
    parts.append(optax.adamw(update_schedule, b1=momentum, b2=ADAM_B2,
                             eps=ADAM_EPS, weight_decay=wd, mask=wd_mask))
  return optax.chain(*parts)


def build_optimizer(opt_config, batch_size: int, total_steps: int, *,
                    sam_mode: str = 'train_step'
                   ) -> Tuple[optax.GradientTransformation,
                              Callable[[Any], jnp.ndarray]]:
  """Builds the optimizer chain and LR schedule from ``config.optimizer``.

  The gradients passed to ``tx.update(grads, state, params)`` must already be
  averaged over devices (AGC must see the global mean gradient).

  * Peak LR = ``base_lr * batch_size * accum_steps / lr_batch_base`` (the
    effective batch of one optimizer update).
  * Gradient accumulation (``accum_steps = k > 1``): ``optax.MultiSteps``;
    ``batch_size`` and ``total_steps`` (and ``warmup_steps``) count train
    steps, i.e. micro-batches; the parameters change every k-th call (the
    other calls return zero updates) and the whole chain, AGC included, sees
    the mean gradient of the k micro-batches.
  * SAM (``sam_rho`` set) needs a second gradient, at the ascent point
    ``params + rho * g / ||g||`` (global norm of the mean gradient g); the
    outer chain (AGC, wd, momentum, LR) then acts on that second gradient,
    with AGC measured against the unperturbed params. Each train step costs
    two forward/backward passes and is one real update. Two ways:

    - ``sam_mode='train_step'`` (default; what ``nfnet_jax/train/step.py``
      does): ``tx`` is the plain outer chain and the train step computes
      ``g2 = pmean(grad(loss)(sam_perturbation(g, params, rho)))`` itself,
      then calls ``tx.update(g2, opt_state, params)``. This keeps the model
      state / rng handling in the step.
    - ``sam_mode='opaque'``: ``tx`` is ``optax.contrib.sam(..., opaque_mode=
      True)`` and the step passes a gradient function::

          def grad_fn(p, _):   # gradient at the perturbed params p
            return lax.pmean(jax.grad(loss)(p, batch), 'batch')
          updates, opt_state = tx.update(g, opt_state, params,
                                         grad_fn=grad_fn)

      (it raises if ``grad_fn`` is missing). Passing ``grad_fn`` to a chain
      without SAM is harmless (it is ignored).

  Args:
    opt_config: ``config.optimizer`` (ConfigDict or dict).
    batch_size: global batch size of one train step.
    total_steps: number of train steps (``config.train.total_steps``).
    sam_mode: 'train_step' or 'opaque', see above (ignored without SAM).

  Returns:
    ``(tx, schedule_fn)``: the transformation and a function from the
    0-based train step to the LR of the update that step contributes to
    (for logging; ``schedule_fn(0) == 0``, as in the official code where the
    first update uses lr(0)).

  Raises:
    ValueError: on any invalid field (see `validate_optimizer_config`) or a
      non-positive ``batch_size`` / ``total_steps``.
  """
  if not is_int(batch_size) or batch_size < 1:
    raise ValueError(f'build_optimizer: batch_size={batch_size!r} is invalid: '
                     'expected an integer >= 1 (config.train.batch_size).')
  if not is_int(total_steps) or total_steps < 1:
    raise ValueError(f'build_optimizer: total_steps={total_steps!r} is '
                     'invalid: expected an integer >= 1 '
                     '(config.train.total_steps).')
  if sam_mode not in SAM_MODES:
    raise ValueError(f'build_optimizer: sam_mode={sam_mode!r} is invalid: '
                     f'expected one of {SAM_MODES}.')
  validate_optimizer_config(opt_config, total_steps=total_steps)
  get = lambda name: _field(opt_config, name)

  k = int(get('accum_steps'))
  peak = get('base_lr') * batch_size * k / get('lr_batch_base')
  train_step_schedule = warmup_cosine_schedule(
      peak, get('warmup_steps'), total_steps, get('schedule'), get('min_lr'))
  # Inside MultiSteps the inner chain's step counter counts updates, and
  # update u is taken at train step u * k.
  update_schedule = (train_step_schedule if k == 1 else
                     (lambda u: train_step_schedule(u * k)))

  def schedule_fn(step):
    step = jnp.asarray(step)
    return train_step_schedule((step // k) * k)

  tx = _outer_chain(get, update_schedule)

  sam_rho = get('sam_rho')
  if sam_rho is not None and sam_mode == 'opaque':
    # adv updates are negated by sam and added to params: -(-rho*g/|g|).
    tx = optax.contrib.sam(tx, _global_normalize_and_scale(-sam_rho),
                           sync_period=2, opaque_mode=True)
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
  return tx, schedule_fn
