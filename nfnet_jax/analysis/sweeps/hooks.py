"""What a config module may tell a sweep: ``get_sweep()``, ``REPEATS``, ``SUBMITIT``.

* ``get_sweep()`` (or ``get_sweep(arg)``, which receives the config's
  ``:arg``): a list of override dicts, crossed with the ``--sweep`` axes;
* ``REPEATS = N``: every grid point with seeds 0..N-1 (``--repeats N``);
* ``SUBMITIT = {...}``: submitit AutoExecutor parameters, the defaults the
  ``--partition``/``--nodes``/... flags override.
"""
import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.analysis.sweeps.grid import strip_config_prefix
from nfnet_jax.config.load import load_config_module


def _takes_arg(fn) -> bool:
  try:
    return bool(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    return False


def sweep_from_config(config_path: str) -> Optional[List[Overrides]]:
  """Returns the config module's ``get_sweep()`` list, or None if it has none."""
  module = load_config_module(config_path)
  fn = getattr(module, 'get_sweep', None)
  if fn is None:
    return None
  # A get_sweep(arg) gets the config's ':arg' too (e.g. a study's 'local' grid).
  arg = config_path.split(':', 1)[1] if ':' in config_path else None
  sweep = list(fn(arg) if arg is not None and _takes_arg(fn) else fn())
  for i, p in enumerate(sweep):
    if not isinstance(p, dict):
      raise ValueError(f'get_sweep() in {config_path} must return a list of dicts; item {i} is {p!r}')
  return [{strip_config_prefix(k): v for k, v in p.items()} for p in sweep]


def repeat_axis(repeats: Optional[int], config_path: Optional[str] = None,
                axes: Sequence[Tuple[str, Sequence[Any]]] = (),
                base: Optional[Sequence[Overrides]] = None) -> List[Tuple[str, List[int]]]:
  """The ``('seed', [0..N-1])`` axis for ``--repeats N`` or a config's ``REPEATS = N``.

  Args:
    repeats: the CLI value (None: take the config module's ``REPEATS``, if any).
    config_path: the ``--config`` value, to read ``REPEATS`` from.
    axes: the ``--sweep`` axes, to refuse a second seed axis.
    base: the ``get_sweep()`` points, likewise.

  Returns:
    ``[]`` (no repeats) or ``[('seed', [0, ..., N-1])]``.

  Raises:
    ValueError: for N < 1, or when seeds are already swept.
  """
  if repeats is None and config_path:
    repeats = getattr(load_config_module(config_path), 'REPEATS', None)
  if repeats is None:
    return []
  if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f'--repeats must be an integer >= 1, got {repeats!r}')
  if any(k == 'seed' for k, _ in axes) or any('seed' in p for p in (base or [])):
    raise ValueError('seeds are swept twice: give either --repeats N or seed values '
                     '(--sweep seed=... / get_sweep()), not both')
  return [('seed', list(range(repeats)))]


def submitit_defaults(config_path: Optional[str]) -> Dict[str, Any]:
  """The config module's ``SUBMITIT`` dict (AutoExecutor parameters), or {}."""
  if not config_path:
    return {}
  defaults = getattr(load_config_module(config_path), 'SUBMITIT', None) or {}
  if not isinstance(defaults, dict) or not all(isinstance(k, str) for k in defaults):
    raise ValueError(f'SUBMITIT in {config_path} must be a dict of AutoExecutor parameters, '
                     f'got {defaults!r}')
  return dict(defaults)
