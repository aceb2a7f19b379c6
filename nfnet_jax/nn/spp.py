"""Signal-propagation statistics of NHWC activations (SPP plots)."""
import jax.numpy as jnp


def avg_sq_channel_mean(x: jnp.ndarray) -> jnp.ndarray:
  """mean_c(mean_{NHW}(x)^2): how far channels drift from zero mean."""
  x = x.astype(jnp.float32)
  return jnp.mean(jnp.mean(x, axis=(0, 1, 2)) ** 2)


def avg_channel_var(x: jnp.ndarray) -> jnp.ndarray:
  """mean_c(var_{NHW}(x)): the average per-channel variance."""
  x = x.astype(jnp.float32)
  return jnp.mean(jnp.var(x, axis=(0, 1, 2)))


def signal_stats(x: jnp.ndarray) -> dict:
  """Both statistics of one activation as a dict."""
  return {'avg_sq_mean': avg_sq_channel_mean(x), 'avg_var': avg_channel_var(x)}


SPP_KEYS = ('avg_sq_mean', 'avg_var', 'res_avg_var', 'expected_var', 'is_transition')


def stack_block_stats(per_block: list) -> dict:
  """Stacks a list of per-block stat dicts into arrays of shape [num_blocks]."""
  return {k: jnp.stack([jnp.asarray(d[k], jnp.float32) for d in per_block])
          for k in SPP_KEYS}


def nf_block_schedule(depths, alpha: float, stochdepth_rate: float):
  """The analytic signal bookkeeping of NF-ResNets / NFNets, one dict per block.

  Block i (0-based, of N) sees an input of expected variance `expected_var`
  and divides it by `beta = sqrt(expected_var)`; its stochastic-depth rate is
  `stochdepth_rate * i / N`. The variance grows by alpha^2 per block and is
  reset to 1 (plus that block's alpha^2) after the first block of each stage,
  because transition blocks feed the normalised input to the shortcut too.
  """
  num_blocks = sum(depths)
  expected_std = 1.0
  out = []
  index = 0
  for stage, depth in enumerate(depths):
    for block_index in range(depth):
      out.append(dict(stage=stage, block_index=block_index,
                      beta=1.0 / expected_std, expected_var=expected_std ** 2,
                      stochdepth_rate=stochdepth_rate * index / num_blocks,
                      is_transition=float(block_index == 0)))
      index += 1
      if block_index == 0:
        expected_std = 1.0
      expected_std = (expected_std ** 2 + alpha ** 2) ** 0.5
  return out
