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
import re
from typing import Callable, Dict, List, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from nfnet_jax.config import schema as config_schema
from nfnet_jax.optim import masks
from nfnet_jax.utils import is_number

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


def _unit_norms(grad, param, eps):
  """``||G_i||`` and ``max(||W_i||, eps)`` per unit (broadcastable shapes)."""
  return unitwise_norm(grad), jnp.maximum(unitwise_norm(param), eps)


def _clip_leaf(grad, param, clipping, eps):
  """Clips one gradient tensor unit-wise against its parameter."""
  if grad is None:
    return None
  g_norm, w_norm = _unit_norms(grad, param, eps)
  max_norm = clipping * w_norm
  scale = max_norm / jnp.maximum(g_norm, _DIV_EPS)
  clipped = grad.astype(jnp.float32) * scale
  out = jnp.where(g_norm > max_norm, clipped, grad.astype(jnp.float32))
  return out.astype(grad.dtype)


def _check_number(name, value, allow_zero):
  if not is_number(value):   # e.g. a 0-d array: its float, else the error
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


# ----------------------------------------------------------------------------
# Telemetry: where, and how hard, AGC acts.


def module_of(path: str) -> str:
  """The parameter group of a ``'module/param'`` path: its Haiku module.

  ``'NFNet/~/nf_block_3/~/conv0/w'`` -> ``'NFNet/~/nf_block_3/~/conv0'``; a
  path without ``'/'`` (a top-level leaf of a non-Haiku tree) is its own
  group.
  """
  return path.rpartition('/')[0] or path


def _clipped_leaves(params, is_excluded):
  """(group, path, param) of every clipped (not excluded) leaf, flatten order."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    p = masks.path_to_str(path)
    if not is_excluded(p, leaf):
      out.append((module_of(p), p, leaf))
  return out


def agc_unit_counts(params, exclude: masks.Selector = CLASSIFIER_REGEX
                    ) -> Dict[str, int]:
  """The number of AGC units in every clipped parameter group.

  A unit is what one norm is taken over (`unitwise_reduce_axes`): an output
  filter of a kernel, or a whole gain / bias vector. The counts weight the
  per-group clipped fractions when they are pooled (per stage, per run).

  Args:
    params: the parameters (arrays or ``jax.ShapeDtypeStruct``).
    exclude: the same selector as `adaptive_grad_clip`'s.

  Returns:
    ``{group: units}`` for every group with at least one clipped parameter.
  """
  is_excluded = masks.compile_selector(exclude, 'agc_unit_counts: exclude')
  counts: Dict[str, int] = {}
  for group, _, leaf in _clipped_leaves(params, is_excluded):
    shape = tuple(leaf.shape)
    axes = unitwise_reduce_axes(shape)
    n = 1 if axes is None else int(shape[-1]) if shape else 1
    counts[group] = counts.get(group, 0) + n
  return counts


def agc_telemetry(clipping: float, eps: float = 1e-3,
                  exclude: masks.Selector = CLASSIFIER_REGEX
                  ) -> Callable[..., Dict[str, Dict[str, jnp.ndarray]]]:
  """Per-group statistics of what `adaptive_grad_clip` does to a gradient.

  For every unit i (see `unitwise_reduce_axes`) of every clipped parameter,
  the ratio ``r_i = ||G_i|| / max(||W_i||, eps)``; unit i is clipped when
  ``r_i > clipping`` (evaluated exactly as the clip does,
  ``||G_i|| > clipping * max(||W_i||, eps)``). Units are pooled per
  parameter group (the Haiku module: a conv's kernel, gain and bias form one
  group) and summarised by:

    * ``clipped_fraction``: clipped units / units of the group;
    * ``ratio_median``, ``ratio_max``: median and max of ``r_i``.

  Give it the gradient AGC receives (the cross-device mean); it is a pure
  function, cheap next to a train step (one norm per unit, which the clip
  computes too, plus a sort per group for the median).

  Args:
    clipping: lambda, as for `adaptive_grad_clip` (> 0).
    eps: the parameter-norm floor, as for `adaptive_grad_clip` (>= 0).
    exclude: the parameters AGC leaves alone (no statistics for them).

  Returns:
    ``stats(grads, params) -> {group: {'clipped_fraction': f32,
    'ratio_median': f32, 'ratio_max': f32}}``.

  Raises:
    ValueError: for the same bad arguments as `adaptive_grad_clip`.
  """
  clipping = _check_number('agc_telemetry: clipping', clipping,
                           allow_zero=False)
  eps = _check_number('agc_telemetry: eps', eps, allow_zero=True)
  is_excluded = masks.compile_selector(exclude, 'agc_telemetry: exclude')

  def stats(grads, params):
    ratios: Dict[str, List[jnp.ndarray]] = {}
    clipped: Dict[str, List[jnp.ndarray]] = {}
    flat_grads = dict((masks.path_to_str(p), g) for p, g in
                      jax.tree_util.tree_flatten_with_path(grads)[0])
    for group, path, param in _clipped_leaves(params, is_excluded):
      g_norm, w_norm = _unit_norms(flat_grads[path], param, eps)
      g_norm = jnp.broadcast_to(g_norm, w_norm.shape).reshape(-1)
      w_norm = w_norm.reshape(-1)
      ratios.setdefault(group, []).append(g_norm / w_norm)
      clipped.setdefault(group, []).append(g_norm > clipping * w_norm)
    out = {}
    for group, rs in ratios.items():
      r = jnp.concatenate(rs)
      c = jnp.concatenate(clipped[group])
      out[group] = {'clipped_fraction': jnp.mean(c.astype(jnp.float32)),
                    'ratio_median': jnp.median(r),
                    'ratio_max': jnp.max(r)}
    return out

  return stats


def _block_index(component: str) -> int:
  """Haiku numbers repeated modules ``name, name_1, name_2, ...``."""
  m = re.search(r'_(\d+)$', component)
  return int(m.group(1)) if m else 0


def depth_key(group: str):
  """Sort key putting parameter groups in network order (input to output).

  Haiku module names of nfnet_jax models (and of the official checkpoints):
  stem modules (``stem*``, ``initial*``), then residual blocks numbered by
  Haiku (``nf_block``, ``nf_block_1``, ...; ``res_block*``,
  ``nf_res_block*``), then everything else (final conv, classifier). Sorting
  the names as strings would put ``nf_block_10`` before ``nf_block_2`` and
  the classifier before the blocks.
  """
  parts = group.split('/~/')
  top = parts[1] if len(parts) > 1 else parts[0]
  rest = '/'.join(parts[2:])
  if top.startswith(('stem', 'initial')):
    return (0, 0, top, rest)
  if 'block' in top:
    return (1, _block_index(top), top, rest)
  return (2, 0, top, rest)


def stage_labels(groups: Sequence[str]) -> Dict[str, str]:
  """Console labels of parameter groups: ``'stem'``, ``'stage0'``..., ``'head'``.

  Haiku names do not carry the stage, so it is read from the structure: a
  block with a shortcut convolution (``conv_shortcut``: the width or stride
  changes) opens a new stage, except the first block, which opens stage 0
  either way.

  Args:
    groups: parameter-group names (`module_of`).

  Returns:
    ``{group: label}``.
  """
  blocks = {}
  for g in groups:
    parts = g.split('/~/')
    if len(parts) > 1 and 'block' in parts[1]:
      has_short = any(p.startswith('conv_shortcut') for p in parts[2:])
      blocks[parts[1]] = blocks.get(parts[1], False) or has_short
  stage_of, stage = {}, -1
  for i, b in enumerate(sorted(blocks, key=lambda b: (_block_index(b), b))):
    if i == 0 or blocks[b]:
      stage += 1
    stage_of[b] = stage
  labels = {}
  for g in groups:
    kind, _, top, _ = depth_key(g)
    if kind == 0:
      labels[g] = 'stem'
    elif kind == 1:
      labels[g] = f'stage{stage_of[top]}'
    else:
      labels[g] = 'head'
  return labels
