"""Exponential moving average (EMA) of parameters, official warm-up form.

The NFNet recipe evaluates an EMA of the weights with decay 0.99999. The
official code (``tf1_ema`` in ``nfnets/utils.py``, called from
``experiment.py``'s train step) uses a TF1-style warm-up on the decay:

    d_t = min(decay, (1 + t) / (10 + t))
    ema <- d_t * ema + (1 - d_t) * params_new

where ``t`` is jaxline's ``global_step`` passed to the train step that just
produced ``params_new``: 0 for the first optimizer update, 1 for the second,
and so on (jaxline increments the counter after the step). The EMA starts
from the initial parameters, so after the first update
``ema = 0.1 * params_0 + 0.9 * params_1``.
"""
import jax
import jax.numpy as jnp


def ema_decay(step, decay):
  """The warm-up EMA decay ``min(decay, (1 + step) / (10 + step))``.

  Args:
    step: 0-based index of the optimizer update that produced the parameters
      being averaged in (the official code's ``global_step``); int or array.
    decay: the asymptotic decay, e.g. 0.99999.

  Returns:
    A float32 scalar (or array, if ``step`` is one).
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.asarray(decay, jnp.float32),
                     (1.0 + step) / (10.0 + step))


def update_ema(ema_params, params, step, decay):
  """One EMA update: ``ema * d + params * (1 - d)`` with ``d = ema_decay``.

  Args:
    ema_params: the running average (a pytree like ``params``); initialise it
      with the initial parameters, as the official code does.
    params: the parameters after update number ``step``.
    step: 0-based index of that update (see `ema_decay`).
    decay: the asymptotic decay.

  Returns:
    The new EMA pytree, each leaf in its previous dtype.
  """
  d = ema_decay(step, decay)

  def avg(e, p):
    # Average in float32 so a bf16 EMA (if anyone keeps one) does not round
    # the tiny (1 - d) contribution away before the cast back.
    out = e.astype(jnp.float32) * d + p.astype(jnp.float32) * (1.0 - d)
    return out.astype(e.dtype)

  return jax.tree_util.tree_map(avg, ema_params, params)
