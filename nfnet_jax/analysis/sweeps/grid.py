"""Grid syntax: ``--sweep key=v1,v2`` flags, the product grid, run names.

A sweep is a list of override dicts (``{'model.alpha': 0.2,
'optimizer.clipping': None}``), one per run; each run trains in its own
sub-workdir named by :func:`run_name`.
"""
import itertools
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

# The one value parser of every command line (``--config.a.b=v``).
from nfnet_jax.config.load import override_text, parse_value

Overrides = Dict[str, Any]


def format_value(value: Any) -> str:
  """A grid value as run names, tables and CSV cells show it (unquoted)."""
  return override_text(value, quote=False)


def strip_config_prefix(key: str) -> str:
  """``'config.model.alpha'`` -> ``'model.alpha'`` (either spelling is accepted)."""
  return key[len('config.'):] if key.startswith('config.') else key


def parse_sweep_flag(flag: str) -> Tuple[str, List[Any]]:
  """Parses ``'model.alpha=0.1,0.2,0.4'`` into ``('model.alpha', [0.1, 0.2, 0.4])``.

  Args:
    flag: one ``--sweep`` value, ``key=v1,v2,...``; the key is a dotted
      config path.

  Returns:
    (key, values).

  Raises:
    ValueError: for a missing '=', an empty key or no values.
  """
  if '=' not in flag:
    raise ValueError(f'--sweep must look like key=v1,v2,... (e.g. model.alpha=0.1,0.2), got {flag!r}')
  key, _, vals = flag.partition('=')
  key = strip_config_prefix(key.strip())
  if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*', key):
    raise ValueError(f'--sweep key must be a dotted config path like model.alpha, got {key!r}')
  values = [parse_value(v) for v in vals.split(',') if v.strip()]
  if not values:
    raise ValueError(f'--sweep {key} has no values; give key=v1,v2,...')
  return key, values


def expand_grid(axes: Sequence[Tuple[str, Sequence[Any]]],
                base: Optional[Sequence[Overrides]] = None) -> List[Overrides]:
  """The product grid of ``axes`` crossed with the ``base`` override dicts.

  Args:
    axes: (key, values) pairs; the last axis varies fastest.
    base: override dicts to cross with (e.g. from ``get_sweep()``); ``None``
      means one empty dict.

  Returns:
    A list of override dicts, one per run, in a deterministic order.

  Raises:
    ValueError: when a key appears twice, or the grid has duplicate points.
  """
  keys = [k for k, _ in axes]
  if len(set(keys)) != len(keys):
    raise ValueError(f'--sweep keys must be distinct, got {keys}')
  base = list(base) if base is not None else [{}]
  grid = []
  for b in base:
    clash = set(b) & set(keys)
    if clash:
      raise ValueError(f'--sweep keys {sorted(clash)} are already swept by get_sweep()')
    for combo in itertools.product(*[list(v) for _, v in axes]):
      point = dict(b)
      point.update(zip(keys, combo))
      grid.append(point)
  names = [run_name(p) for p in grid]
  if len(set(names)) != len(names):
    dup = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f'the sweep has duplicate grid points: {dup}')
  return grid


def swept_keys(grid: Sequence[Overrides]) -> List[str]:
  """All keys that appear in the grid, in first-seen order."""
  keys = []
  for p in grid:
    for k in p:
      if k not in keys:
        keys.append(k)
  return keys


def run_name(overrides: Overrides) -> str:
  """A filesystem-safe, readable, unique name for one grid point.

  Uses the last component of each key (``model.alpha`` -> ``alpha``), which
  is unique in practice; the full key is kept when two keys share a leaf.
  """
  if not overrides:
    return 'default'
  leaves = [k.split('.')[-1] for k in overrides]
  parts = []
  for k, leaf in zip(overrides, leaves):
    label = leaf if leaves.count(leaf) == 1 else k
    v = format_value(overrides[k])
    parts.append(f'{label}={v}')
  return re.sub(r'[^A-Za-z0-9_.=,+-]', '_', ','.join(parts))


def override_flags(overrides: Overrides) -> List[str]:
  """``--config.k=v`` flags for a grid point (what a run's command line gets)."""
  return [f'--config.{k}={override_text(v)}' for k, v in overrides.items()]
