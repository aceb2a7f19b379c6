"""Forward-pass pieces every normalizer-free model shares (NFNet, NF-ResNet, NF-RegNet).

Only functions called inside a module's `__call__`: the Haiku modules they
apply are built (and named) by the caller, so parameter names stay the
caller's.
"""
from typing import Callable, Optional, Sequence

import haiku as hk
import jax.numpy as jnp

from nfnet_jax import nn as nfnn


def nf_blocks_and_head(out: jnp.ndarray, blocks: Sequence[Callable], schedule: Sequence[dict],
                       features: Callable, fc: Callable, drop_rate: float,
                       is_training: bool, return_metrics: bool) -> dict:
  """Runs the blocks, then the classifier head; collects SPP statistics.

  Args:
    out: the stem's output, NHWC.
    blocks: NF blocks, each `block(x, is_training=...) -> (out, branch)`.
    schedule: `nfnn.nf_block_schedule` entries, one per block.
    features: applied to the last block's output before the mean pool (an
      activation, or final conv then activation).
    fc: the classifier.
    drop_rate: dropout on the pooled features while training.
    is_training: training mode (dropout, stochastic depth).
    return_metrics: also return per-block signal-propagation statistics.

  Returns:
    {'logits': [N, num_classes] float32} plus 'spp' with return_metrics.
  """
  stats = []
  for info, block in zip(schedule, blocks):
    out, branch = block(out, is_training=is_training)
    if return_metrics:
      stats.append(dict(nfnn.signal_stats(out),
                        res_avg_var=nfnn.avg_channel_var(branch),
                        expected_var=info['expected_var'],
                        is_transition=info['is_transition']))
  pool = jnp.mean(features(out), axis=(1, 2))
  if is_training and drop_rate > 0.0:
    pool = hk.dropout(hk.next_rng_key(), drop_rate, pool)
  outputs = {'logits': fc(pool).astype(jnp.float32)}
  if return_metrics:
    outputs['spp'] = nfnn.stack_block_stats(stats)
  return outputs


def nf_residual(branch: jnp.ndarray, shortcut: jnp.ndarray, alpha: float,
                stoch_depth: Optional[Callable], skipinit_gain: Optional[Callable],
                is_training: bool):
  """Closes an NF block: `alpha * skip_gain * stochdepth(branch) + shortcut`.

  Call it inside the block's `__call__`: the scalar `skip_gain` parameter is
  then the block's own (`<block>/skip_gain`, as officially).

  Args:
    branch: the residual branch output.
    shortcut: the shortcut output.
    alpha: residual branch scale.
    stoch_depth: a `StochDepth` module, or None.
    skipinit_gain: initializer of the block's scalar `skip_gain`; None: no
      scalar (timm's conv2_gain mode, where conv2's gain plays its part).
    is_training: training mode (stochastic depth).

  Returns:
    (block output, the branch before stochastic depth and gain) -- the
    latter for the SPP statistics.
  """
  out = branch
  if stoch_depth is not None:
    out = stoch_depth(out, is_training)
  if skipinit_gain is not None:
    out = out * hk.get_parameter('skip_gain', (), out.dtype, init=skipinit_gain)
  return out * alpha + shortcut, branch
