"""The statistics of the study reports: mean +- std and Welch's t-test (no SciPy)."""
import math
from typing import Any, Dict, Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> Dict[str, Any]:
  """{'mean', 'std', 'n'}: sample std (ddof=1); std is None for n < 2, mean None for n = 0."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
  n = int(v.size)
  return {'mean': float(v.mean()) if n else None,
          'std': float(v.std(ddof=1)) if n >= 2 else None,
          'n': n}


def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta function (modified Lentz)."""
  tiny, eps = 1e-300, 1e-15
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 500):
    m2 = 2 * m
    for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
               -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
      d = 1.0 + aa * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + aa / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < eps:
      break
  return h


def betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b)."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                   + a * math.log(x) + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return front * _betacf(a, b, x) / a
  return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
  """P(|T| >= |t|) for Student's t with ``df`` (real) degrees of freedom."""
  if not math.isfinite(t):
    return 0.0
  return betainc(df / 2.0, 0.5, df / (df + t * t))


def welch(a: Sequence[float], b: Sequence[float]) -> Dict[str, Any]:
  """Welch's unequal-variance t-test of mean(a) - mean(b).

  Returns:
    ``diff`` (mean(a) - mean(b)), ``se`` (sqrt(var_a/n_a + var_b/n_b), sample
    variances), ``t``, ``df`` (Welch-Satterthwaite), ``p`` (two-sided) and
    ``n_a`` / ``n_b``; the statistics are None with fewer than 2 runs on a side.
  """
  a = np.asarray([x for x in a if x is not None and math.isfinite(x)], np.float64)
  b = np.asarray([x for x in b if x is not None and math.isfinite(x)], np.float64)
  out = {'n_a': int(a.size), 'n_b': int(b.size), 'diff': None, 'se': None, 't': None,
         'df': None, 'p': None}
  if a.size and b.size:
    out['diff'] = float(a.mean() - b.mean())
  if a.size < 2 or b.size < 2:
    return out
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  se = math.sqrt(va + vb)
  out['se'] = se
  if se == 0.0:
    return out
  out['t'] = out['diff'] / se
  out['df'] = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
  out['p'] = t_two_sided_p(out['t'], out['df'])
  return out
