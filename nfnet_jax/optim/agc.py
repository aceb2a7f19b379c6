"""Adaptive Gradient Clipping (AGC) as an optax transformation.

NFNets paper (Brock et al. 2021, arXiv 2102.06171, Sec. 4.1): for every unit
i of a weight (a row / output filter), with ``||.||`` the Frobenius norm over
the unit's fan-in,

    if ||G_i|| / max(||W_i||, eps) > lambda:
      G_i <- lambda * max(||W_i||, eps) / ||G_i|| * G_i

The official ImageNet recipe uses lambda = 0.01 at batch 4096, eps = 1e-3,
clips every parameter (gains, biases and skip gains included) except the final
classifier weight, and clips the cross-device mean gradient before weight
decay and momentum (``SGD_AGC`` in the official ``nfnets/optim.py``).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from nfnet_jax.config import schema as config_schema
from nfnet_jax.optim import masks

# The final classifier weight of any nfnet_jax / official model
# ('NFNet/~/linear/w'); the squeeze-excite linears do not match and ARE
# clipped, as in the official code (which excludes modules containing
# 'linear' but not 'squeeze_excite', and only their non-gain/bias params,
# i.e. 'w'; the classifier bias 'b' is clipped there too).
CLASSIFIER_REGEX = config_schema.CLASSIFIER_WEIGHT

# Guard for the division by ||G_i||. It can only engage when the clip does not
# trigger anyway (||G_i|| = 0 <= lambda*eps), so it only keeps 0/0 out of the
# discarded branch of `jnp.where` (a NaN there would still poison gradients
# of the clip if anyone differentiated through it).
_DIV_EPS = 1e-6


class AdaptiveGradClipState(NamedTuple):
  """AGC is stateless; an empty NamedTuple keeps the optax conventions."""


def unitwise_reduce_axes(shape):
  """Axes summed over to get one norm per unit, for a parameter ``shape``.

  Conventions (the same as the official code and optax where they overlap):
    * scalars and vectors, and any tensor with at most one non-unit dimension
      (``jnp.squeeze(x).ndim <= 1``, e.g. a [1, 1, 1, O] kernel): the whole
      tensor is one unit (``None``: reduce everything);
    * 2-D linear weights [in, out]: per output unit, reduce axis 0;
    * 3-D kernels (1-D conv, WIO): reduce (0, 1), i.e. all but the output axis.
      optax (and the official code) instead reduce only axis 0 for 3-D, for
      multi-head linear weights [in, heads, head_dim]; nfnet_jax has no such
      weights and treats 3-D tensors as conv kernels;
    * 4-D HWIO conv kernels: per output filter, reduce (0, 1, 2);
    * 5-D DHWIO kernels: reduce (0, 1, 2, 3).
    Higher ranks also reduce all but the last axis.

  Args:
    shape: the parameter's shape.

  Returns:
    None (reduce everything) or a tuple of axes.
  """
  if sum(1 for d in shape if d != 1) <= 1:
    return None
  return tuple(range(len(shape) - 1))


def unitwise_norm(x: jnp.ndarray) -> jnp.ndarray:
  """Frobenius norm of every unit of ``x``, broadcastable against ``x``."""
  axes = unitwise_reduce_axes(x.shape)
  x = x.astype(jnp.float32)
  sq = jnp.sum(x * x, axis=axes, keepdims=True)
  # Double `where`: the value is exactly sqrt(sq), but d sqrt/d sq at 0 is
  # never evaluated, so differentiating through AGC at a zero unit stays
  # finite (sqrt'(0) = inf would turn into NaN).
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _clip_leaf(grad, param, clipping, eps):
  """Clips one gradient tensor unit-wise against its parameter."""
  if grad is None:
    return None
  g_norm = unitwise_norm(grad)
  max_norm = clipping * jnp.maximum(unitwise_norm(param), eps)
  scale = max_norm / jnp.maximum(g_norm, _DIV_EPS)
  clipped = grad.astype(jnp.float32) * scale
  out = jnp.where(g_norm > max_norm, clipped, grad.astype(jnp.float32))
  return out.astype(grad.dtype)


def _check_number(name, value, allow_zero):
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    try:
      value = float(value)
    except (TypeError, ValueError):
      raise ValueError(f'{name} must be a number, got {value!r}.') from None
  if value < 0 or (value == 0 and not allow_zero):
    bound = '>= 0' if allow_zero else '> 0'
    raise ValueError(f'{name} must be {bound}, got {value!r}.')
  return float(value)


def adaptive_grad_clip(clipping: float, eps: float = 1e-3,
                       exclude: masks.Selector = CLASSIFIER_REGEX
                       ) -> optax.GradientTransformation:
  """Unit-wise Adaptive Gradient Clipping (NFNets, arXiv 2102.06171).

  Each unit's gradient is rescaled to norm ``clipping * max(||W_i||, eps)``
  when it is larger than that. Unit-wise norms follow
  `unitwise_reduce_axes` (per output unit of [in, out] linear weights and of
  HWIO conv kernels, whole tensor for scalars and vectors). Gradients of
  excluded parameters pass through unchanged; by default that is only the
  final classifier weight, as in the paper.

  Numerically identical to ``optax.adaptive_grad_clip`` (and the official
  ``SGD_AGC``) wherever the unit conventions coincide (every rank except 3-D).

  Args:
    clipping: lambda, the largest allowed ratio ``||G_i|| / max(||W_i||,
      eps)``; the paper uses 0.01 at batch 4096 (must be > 0).
    eps: floor on the parameter norm, so zero-initialised parameters (biases,
      skip gains) can still move; 1e-3 in the paper (must be >= 0).
    exclude: which parameters are NOT clipped: a regex searched in the
      ``'module/param'`` path (default: the classifier weight,
      ``CLASSIFIER_REGEX``), a callable ``(path, param) -> bool`` returning
      True to exclude, or None to clip everything.

  Returns:
    An ``optax.GradientTransformation``; its ``update`` requires ``params``.

  Raises:
    ValueError: on ``clipping <= 0``, ``eps < 0`` or an invalid regex.
  """
  clipping = _check_number('adaptive_grad_clip: clipping', clipping,
                           allow_zero=False)
  eps = _check_number('adaptive_grad_clip: eps', eps, allow_zero=True)
  is_excluded = masks.compile_selector(exclude, 'adaptive_grad_clip: exclude')

  def init_fn(params):
    del params
    return AdaptiveGradClipState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          'adaptive_grad_clip needs the current parameters: call '
          'tx.update(grads, state, params) (AGC compares each gradient unit '
          'with the norm of its weight unit).')

    def clip(path, grad, param):
      # Paths are static, so excluded leaves cost nothing at run time.
      if is_excluded(masks.path_to_str(path), param):
        return grad
      return _clip_leaf(grad, param, clipping, eps)

    updates = jax.tree_util.tree_map_with_path(clip, updates, params)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)
