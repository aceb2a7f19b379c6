"""The per-device train and eval steps.

One pure function per step, written for a single device that sees its own
slice of the global batch and talks to the others through the named axis
``'batch'``. :mod:`nfnet_jax.train.parallel` wraps it with ``jax.pmap`` or
``jax.shard_map``; both give the same numbers.

Gradient reduction. Inside ``shard_map`` (``check_vma=True``) the parameters
are device-invariant, and differentiating a device-varying loss with respect
to them inserts a ``psum`` (the transpose of the implicit broadcast): the
gradient would already be a *sum* over devices and a ``pmean`` would leave it
N times too large. We avoid the ambiguity by differentiating with respect to
an explicitly device-varying copy of the parameters (``lax.pcast(...,
to='varying')``): the gradient is then the local one in both pmap and
shard_map, and the single explicit ``lax.pmean`` makes it the global-batch
mean. Tests compare against a one-device computation on the whole batch.
"""
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from nfnet_jax.config import schema as config_schema
from nfnet_jax.optim import agc as agc_lib
from nfnet_jax.optim import builder as builder_lib
from nfnet_jax.optim import ema as ema_lib
from nfnet_jax.optim import losses as losses_lib

AXIS = 'batch'

PyTree = Any


class TrainState(NamedTuple):
  """Everything that evolves during training (and is checkpointed).

  Attributes:
    step: int32 scalar, the number of steps taken (skipped ones included), so
      also the position of the data iterator.
    params: float32 master parameters.
    model_state: Haiku state (BatchNorm statistics; empty for NF models).
    opt_state: optax state.
    ema_params: EMA of the parameters (an empty dict when EMA is disabled).
    rng: uint32 raw key data of the base key (``config.seed``); per-step keys
      are folded from it and the step, so a resumed run is exact.
    nonfinite_total: int32, how many steps were skipped as non-finite.
    nonfinite_consecutive: int32, the current run of consecutive skips.
  """
  step: jnp.ndarray
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  ema_params: PyTree
  rng: jnp.ndarray
  nonfinite_total: jnp.ndarray
  nonfinite_consecutive: jnp.ndarray


def get_dtype(name: str):
  """Maps ``config.compute_dtype`` (schema.COMPUTE_DTYPES) to a jnp dtype."""
  if name not in config_schema.COMPUTE_DTYPES:
    raise ValueError(f'config.compute_dtype={name!r} is invalid: one of '
                     f'{config_schema.COMPUTE_DTYPES}.')
  return jnp.dtype(name)


def cast_floating(tree: PyTree, dtype) -> PyTree:
  """Casts the floating-point leaves of ``tree`` to ``dtype``."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
      else x, tree)


def _pmean_floating(tree: PyTree) -> PyTree:
  return jax.tree.map(
      lambda x: jax.lax.pmean(x, AXIS)
      if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def step_rng(base_key_data: jnp.ndarray, step: jnp.ndarray,
             per_device: bool = True) -> jax.Array:
  """The key of one step: folded from the base key, the step and the device.

  Folding the device index in gives every device its own per-example
  randomness (stochastic depth, dropout); folding the step in makes the key a
  pure function of (seed, step), so resuming from a checkpoint reproduces it.
  """
  key = jax.random.wrap_key_data(base_key_data)
  key = jax.random.fold_in(key, step)
  if per_device:
    key = jax.random.fold_in(key, jax.lax.axis_index(AXIS))
  return key


def _agc_stats_fn(optimizer: Mapping[str, Any]) -> Optional[Callable[..., dict]]:
  """`agc.agc_telemetry` of the AGC settings (None with AGC off)."""
  if optimizer.get('clipping') is None:
    return None
  return agc_lib.agc_telemetry(
      optimizer['clipping'], eps=optimizer.get('clip_eps', 1e-3),
      exclude=optimizer.get('clip_exclude', agc_lib.CLASSIFIER_REGEX))


def _guarded_update(state: TrainState, finite, new_params, new_model_state, new_opt_state,
                    new_ema) -> TrainState:
  """The next state: the new values if ``finite``, else the old ones (counters advance)."""
  keep = lambda new, old: jax.tree.map(  # pylint: disable=g-long-lambda
      lambda n, o: jax.lax.select(
          jnp.broadcast_to(finite, jnp.shape(n)), n, o), new, old)
  nonfinite = (~finite).astype(jnp.int32)
  return TrainState(
      step=state.step + 1,
      params=keep(new_params, state.params),
      model_state=keep(new_model_state, state.model_state),
      opt_state=keep(new_opt_state, state.opt_state),
      ema_params=keep(new_ema, state.ema_params),
      rng=state.rng,
      nonfinite_total=state.nonfinite_total + nonfinite,
      nonfinite_consecutive=(state.nonfinite_consecutive + 1) * nonfinite,
  )


def _step_metrics(state: TrainState, new_state: TrainState, labels, logits, loss, grad_norm,
                  new_param_norm, finite) -> dict:
  """The step's metrics (global: top-1 averaged over the ``'batch'`` axis)."""
  if labels.ndim == 2:
    hard = jnp.argmax(labels, axis=-1)
  else:
    hard = labels
  top1 = jnp.mean((jnp.argmax(logits, -1) == hard).astype(jnp.float32))
  return {
      'loss': loss,
      'top1': jax.lax.pmean(top1, AXIS),
      'grad_norm': grad_norm,
      'param_norm': jnp.where(finite, new_param_norm,
                              optax.tree.norm(state.params)),
      'finite': finite.astype(jnp.float32),
      'step': state.step,
      'nonfinite_total': new_state.nonfinite_total,
      'nonfinite_consecutive': new_state.nonfinite_consecutive,
  }


def make_train_step(
    apply_fn: Callable[..., Any],
    tx: optax.GradientTransformation,
    optimizer: Mapping[str, Any],
    *,
    compute_dtype: str = 'float32',
    schedule: Optional[Callable[[Any], Any]] = None,
    agc_telemetry: bool = False,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Builds the per-device train step ``(state, batch) -> (state, metrics)``.

  Args:
    apply_fn: the Haiku ``apply(params, state, rng, images, is_training)``
      returning ``({'logits': ...}, new_state)``.
    tx: the optax transformation (receives cross-device-mean gradients).
    optimizer: the ``config.optimizer`` section (a ConfigDict or dict); the
      step reads ``label_smoothing``, ``ema_decay`` (None: no parameter EMA)
      and ``sam_rho`` (None: no SAM). The rest is in ``tx``.
    compute_dtype: ``config.compute_dtype``, ``'float32'`` or
      ``'bfloat16'``; params and images are cast inside the step, the
      master weights stay float32.
    schedule: step -> learning rate, for logging only (None: not logged).
    agc_telemetry: with AGC on (``optimizer.clipping`` set), also return
      ``metrics['agc']``: per parameter group the clipped fraction and the
      median / max of ``||G_i|| / max(||W_i||, eps)`` of the gradient the
      optimizer receives (`nfnet_jax.optim.agc.agc_telemetry`).

  Returns:
    The per-device step. ``batch`` holds ``images`` [b, H, W, C] float32 and
    ``labels`` [b, K] soft targets (or int labels [b]). It must run under a
    named axis ``'batch'``. A step whose loss, gradients or new params are
    not finite leaves params, model state, opt state and EMA unchanged, but
    still increments ``step`` and the non-finite counters.
  """
  dtype = get_dtype(compute_dtype)
  label_smoothing = optimizer.get('label_smoothing') or 0.0
  ema_decay = optimizer.get('ema_decay')
  sam_rho = optimizer.get('sam_rho')
  agc_stats = _agc_stats_fn(optimizer) if agc_telemetry else None

  def loss_fn(params, model_state, images, labels, rng):
    outputs, new_model_state = apply_fn(
        cast_floating(params, dtype), model_state, rng, images.astype(dtype),
        is_training=True)
    logits = outputs['logits'].astype(jnp.float32)
    loss = jnp.mean(losses_lib.softmax_cross_entropy(
        logits, labels, label_smoothing=label_smoothing))
    return loss, (new_model_state, logits)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def local_grads(params, model_state, images, labels, rng):
    # A device-varying copy: the gradient is the local one (no implicit psum
    # under shard_map), reduced explicitly below in both wrappers.
    params_v = jax.lax.pcast(params, AXIS, to='varying')
    return grad_fn(params_v, model_state, images, labels, rng)

  def step_fn(state: TrainState, batch: dict):
    images, labels = batch['images'], batch['labels']
    rng = step_rng(state.rng, state.step)
    (loss, (new_model_state, logits)), grads = local_grads(
        state.params, state.model_state, images, labels, rng)
    grads = jax.lax.pmean(grads, AXIS)
    if sam_rho is not None:
      # SAM: the gradient at the worst-case neighbour params + rho * g/|g|,
      # with the global-mean gradient g; the update uses the new gradient.
      perturbed = builder_lib.sam_perturbation(grads, state.params, sam_rho)
      (_, (new_model_state, _)), grads = local_grads(
          perturbed, state.model_state, images, labels, rng)
      grads = jax.lax.pmean(grads, AXIS)
    loss = jax.lax.pmean(loss, AXIS)
    new_model_state = _pmean_floating(new_model_state)

    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    if ema_decay is not None:
      new_ema = ema_lib.update_ema(state.ema_params, new_params, state.step,
                                   ema_decay)
    else:
      new_ema = state.ema_params

    # Finiteness from the global norms (one reduction per leaf, which the
    # metrics need anyway): a NaN/inf anywhere makes the norm NaN/inf. (A
    # finite gradient so large that its squared norm overflows float32 also
    # counts as non-finite, which is the right call for such a step.)
    grad_norm = optax.tree.norm(grads)
    new_param_norm = optax.tree.norm(new_params)
    finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
              & jnp.isfinite(new_param_norm))
    new_state = _guarded_update(state, finite, new_params, new_model_state, new_opt_state,
                                new_ema)
    metrics = _step_metrics(state, new_state, labels, logits, loss, grad_norm,
                            new_param_norm, finite)
    if agc_stats is not None:
      metrics['agc'] = agc_stats(grads, state.params)
    if schedule is not None:
      metrics['lr'] = jnp.asarray(schedule(state.step), jnp.float32)
    return new_state, metrics

  return step_fn


def make_eval_step(apply_fn: Callable[..., Any], *, compute_dtype: str,
                   num_classes: int, flip_tta: bool = False) -> Callable[..., dict]:
  """Builds the per-device eval step ``(params, model_state, batch) -> sums``.

  ``batch`` holds ``images`` (NHWC), int ``labels`` and a float ``mask`` (0
  for padding). Returns summed (over the global batch) loss, top-1 and top-5
  correct counts and the number of real examples. With ``flip_tta`` the
  logits are the mean of those of each image and of its left-right mirror
  (``config.train.eval_flip_tta``); the loss is that of the mean logits.
  """
  dtype = get_dtype(compute_dtype)
  k5 = min(5, num_classes)

  def logits_of(params, model_state, images):
    outputs, _ = apply_fn(params, model_state, None, images, is_training=False)
    return outputs['logits'].astype(jnp.float32)

  def eval_fn(params, model_state, batch):
    params = cast_floating(params, dtype)
    images = batch['images'].astype(dtype)
    logits = logits_of(params, model_state, images)
    if flip_tta:
      mirrored = logits_of(params, model_state, jnp.flip(images, axis=2))
      logits = 0.5 * (logits + mirrored)
    labels = batch['labels'].astype(jnp.int32)
    mask = batch['mask'].astype(jnp.float32)
    loss = losses_lib.softmax_cross_entropy(logits, labels)
    sums = {
        'loss': jnp.sum(loss * mask),
        'top1': jnp.sum(losses_lib.topk_correct(logits, labels, 1) * mask),
        'top5': jnp.sum(losses_lib.topk_correct(logits, labels, k5) * mask),
        'count': jnp.sum(mask),
    }
    return jax.lax.psum(sums, AXIS)

  return eval_fn
