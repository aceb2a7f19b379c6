"""Gamma-scaled activations and a gamma estimator.

An activation `g` is multiplied by `gamma = 1 / sqrt(Var(g(z)))`, z ~ N(0, 1),
so that a unit-Gaussian input gives a unit-variance output. `ACTIVATIONS`
holds the official table (name -> (fn, gamma)); the constants are the
official ones so pretrained checkpoints behave exactly as trained.

How the official constants were obtained: the NF-ResNet paper's appendix
computes them by Monte Carlo, `x = jax.random.normal(PRNGKey(2), (1024, 256))`,
`gamma = jnp.mean(jnp.var(g(x), axis=1)) ** -0.5`, i.e. the average
within-row (channel-axis) variance of 262,144 samples. They therefore carry
~1e-3 sampling noise (e.g. `celu` and `elu` are the same function for
alpha=1 but differ by 5e-4 in the table, and the ReLU entry 1.71396 is 6.4e-4
above the exact `sqrt(2 / (1 - 1/pi)) = 1.7128586`). `estimate_gamma` computes
the exact value by quadrature.

Channel-axis functions: `glu` splits the last axis in two halves a, b and
returns `a * sigmoid(b)` (it halves the channel count), so its gamma is
`E[sigmoid(z)^2] ** -0.5` for independent a, b; `estimate_gamma(..,
num_inputs=2)` integrates that over the 2-D Gaussian. `log_softmax` over C
channels subtracts one per-example constant (the logsumexp), so the
within-example variance the official protocol measures equals that of the
input: gamma is 1 in the many-channel limit; no scalar-input estimator can
reproduce it (on a scalar input log_softmax is identically 0).
"""
from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np


def _identity(x):
  return x


def _gelu_erf(x):
  return jax.nn.gelu(x, approximate=False)


# name -> (unscaled function, official gamma). gelu is JAX's default
# (tanh-approximate) gelu, as in the official code.
ACTIVATIONS: Dict[str, Tuple[Callable, float]] = {
    'identity': (_identity, 1.0),
    'celu': (jax.nn.celu, 1.270926833152771),
    'elu': (jax.nn.elu, 1.2716004848480225),
    'gelu': (jax.nn.gelu, 1.7015043497085571),
    'glu': (jax.nn.glu, 1.8484294414520264),
    'leaky_relu': (jax.nn.leaky_relu, 1.70590341091156),
    'log_sigmoid': (jax.nn.log_sigmoid, 1.9193484783172607),
    'log_softmax': (jax.nn.log_softmax, 1.0002083778381348),
    'relu': (jax.nn.relu, 1.7139588594436646),
    'relu6': (jax.nn.relu6, 1.7131484746932983),
    'selu': (jax.nn.selu, 1.0008515119552612),
    'sigmoid': (jax.nn.sigmoid, 4.803835391998291),
    'silu': (jax.nn.silu, 1.7881293296813965),
    'soft_sign': (jax.nn.soft_sign, 2.338853120803833),
    'softplus': (jax.nn.softplus, 1.9203323125839233),
    'tanh': (jnp.tanh, 1.5939117670059204),
}

# GELU forms: 'tanh' is JAX's default approximation (official code and
# checkpoints); 'erf' is the exact GELU that PyTorch/timm use. timm keeps the
# official gamma for both, so the gamma does not change with the form.
GELU_FORMS = ('tanh', 'erf')

# Activations that act on the channel axis rather than elementwise.
CHANNEL_AXIS_ACTIVATIONS = ('glu', 'log_softmax')
# Activations that change the number of channels (unusable inside models).
SHAPE_CHANGING_ACTIVATIONS = ('glu',)


def get_activation(name: str, scaled: bool = True,
                   gelu_form: str = 'tanh') -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Returns `x -> gamma * fn(x)` for an official activation name.

  Args:
    name: a key of `ACTIVATIONS`.
    scaled: False returns the plain `fn` (normalized baselines, whose
      normalizers fix the scale, use no gamma).
    gelu_form: 'tanh' (official) or 'erf' (exact, timm); only used by 'gelu'.
  """
  if name not in ACTIVATIONS:
    raise ValueError(f'Unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}')
  if gelu_form not in GELU_FORMS:
    raise ValueError(f'Unknown gelu_form {gelu_form!r}; allowed: {GELU_FORMS}')
  fn, gamma = ACTIVATIONS[name]
  if name == 'gelu' and gelu_form == 'erf':
    fn = _gelu_erf
  if not scaled:
    return fn

  def scaled(x):
    return fn(x) * gamma

  scaled.__name__ = f'scaled_{name}'
  return scaled


def gaussian_nodes(method: str = 'panels', num_points: int = 15360,
                   bound: float = 12.0, order: int = 16) -> Tuple[np.ndarray, np.ndarray]:
  """Nodes z and weights w with sum_i w_i f(z_i) ~= E[f(z)], z ~ N(0, 1).

  Args:
    method: 'panels' (default): composite Gauss-Legendre on [-bound, bound]
      with panels of `order` points, times the normal density; robust to
      kinks (ReLU, relu6), whose error with plain Gauss-Hermite decays only
      like 1/n (we measured 9.6e-4 relative gamma error for ReLU at 200
      Hermite nodes, and numpy's Hermite nodes overflow beyond ~300).
      'hermite': probabilists' Gauss-Hermite with `num_points` nodes (exact
      for polynomials, good for smooth activations).
    num_points: total number of nodes.
    bound: truncation of the real line for 'panels' (mass beyond 12 sigma is
      below 1e-32).
    order: Gauss-Legendre points per panel.
  """
  if method == 'hermite':
    z, w = np.polynomial.hermite_e.hermegauss(num_points)
    return z, w / w.sum()
  if method != 'panels':
    raise ValueError(f"method must be 'panels' or 'hermite', got {method!r}")
  panels = max(2, num_points // order)
  panels += panels % 2  # an even count puts a panel edge at 0, the usual kink
  x, wx = np.polynomial.legendre.leggauss(order)
  edges = np.linspace(-bound, bound, panels + 1)
  a, b = edges[:-1, None], edges[1:, None]
  z = ((b - a) / 2 * x + (a + b) / 2).ravel()
  w = ((b - a) / 2 * wx).ravel() * np.exp(-z ** 2 / 2) / np.sqrt(2 * np.pi)
  return z, w


def estimate_gamma(fn: Callable, num_inputs: int = 1, method: str = 'panels',
                   num_points: int = None) -> float:
  """Computes `1 / sqrt(Var(fn(z)))` for z ~ N(0, I) by quadrature.

  Args:
    fn: the activation. With `num_inputs=1` it is applied elementwise to a
      1-D array of nodes (numpy or JAX functions both work). With
      `num_inputs=k > 1` it receives an array [M, k] of k independent
      Gaussian channels (a tensor-product grid) and may return [M, j]; the
      variance is averaged over the j outputs (e.g. `jax.nn.glu`, k=2, j=1).
    num_inputs: number of independent Gaussian inputs fn reads along its
      last axis (1 for elementwise activations; 2 for glu).
    method: quadrature rule, see `gaussian_nodes`.
    num_points: nodes per input dimension (defaults: 15360 for one input,
      1024 per dimension for two; more inputs are not supported because the
      tensor grid grows as num_points**k).

  Returns:
    gamma as a Python float.
  """
  if num_inputs == 1:
    z, w = gaussian_nodes(method, num_points or 15360)
    y = np.asarray(fn(z), dtype=np.float64)
  elif num_inputs == 2:
    z1, w1 = gaussian_nodes(method, num_points or 1024, order=8)
    za, zb = np.meshgrid(z1, z1, indexing='ij')
    z = np.stack([za.ravel(), zb.ravel()], axis=-1)
    w = np.outer(w1, w1).ravel()
    y = np.asarray(fn(z), dtype=np.float64).reshape(z.shape[0], -1)
    w = w[:, None]
  else:
    raise ValueError(f'num_inputs must be 1 or 2, got {num_inputs}')
  w = w / np.sum(w, axis=0)
  mean = np.sum(w * y, axis=0)
  var = np.mean(np.sum(w * (y - mean) ** 2, axis=0))
  return float(var ** -0.5)


def estimate_gamma_monte_carlo(fn: Callable, num_rows: int = 1024,
                               num_channels: int = 256, seed: int = 0) -> float:
  """The official protocol: `mean(var(fn(x), axis=-1)) ** -0.5`, x ~ N(0, 1).

  Unlike `estimate_gamma`, this works for any channel-axis function (e.g.
  `log_softmax`), at the price of ~1e-3 sampling noise and a small bias
  (`var` over C channels uses ddof=0, i.e. a factor (C-1)/C).
  """
  x = np.random.default_rng(seed).standard_normal((num_rows, num_channels)).astype(np.float32)
  y = np.asarray(fn(x), dtype=np.float64)
  return float(np.mean(np.var(y, axis=-1)) ** -0.5)
