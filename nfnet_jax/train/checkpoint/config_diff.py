"""How a config differs from the one a checkpoint was trained with (no I/O)."""
import json
from typing import Any


def tuplify(x):
  """JSON lists back to tuples (configs hold tuples; JSON has no tuple)."""
  if isinstance(x, dict):
    return {k: tuplify(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(tuplify(v) for v in x)
  return x


def _flat_fields(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat_fields(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


# Fields in the order a reader cares about: what builds the state first.
_FIELD_ORDER = ('model.', 'optimizer.', 'data.', 'compute_dtype', 'parallel.',
                'finetune.', 'train.', 'seed')


def _as_dict(c):
  if isinstance(c, str):
    c = json.loads(c)
  elif hasattr(c, 'to_json'):
    c = json.loads(c.to_json())
  return tuplify(c)


def config_differences(saved, config) -> list[tuple[str, Any, Any]]:
  """``[(dotted_field, saved_value, current_value), ...]`` that differ.

  Args:
    saved: the config a checkpoint was saved with (its JSON text, a dict or
      a ConfigDict), or None.
    config: the current config (ConfigDict or dict), or None.

  Model fields come first, then optimizer, data, ...; a field only one
  side has is listed with None on the other.
  """
  if saved is None or config is None:
    return []
  try:
    a, b = _flat_fields(_as_dict(saved)), _flat_fields(_as_dict(config))
  except (TypeError, ValueError):
    return []
  keys = list(a) + [k for k in b if k not in a]

  def rank(k):
    return next((i for i, p in enumerate(_FIELD_ORDER) if k.startswith(p)),
                len(_FIELD_ORDER))
  return [(k, a.get(k), b.get(k)) for k in sorted(keys, key=rank)
          if a.get(k) != b.get(k)]


# What does not change the trained model: a --config may differ there.
RUN_ONLY_FIELDS = ('train.', 'parallel.', 'seed', 'finetune.')


def contradicting_fields(saved, config) -> list[tuple[str, Any, Any]]:
  """Fields of ``config`` that contradict the ``saved`` one on what was trained.

  Differences in :data:`RUN_ONLY_FIELDS` (steps, logging, devices, seed)
  are ignored.
  """
  return [d for d in config_differences(saved, config)
          if not d[0].startswith(RUN_ONLY_FIELDS)]
