"""Type checks of config values and the one dotted-field getter.

``True`` is an ``int`` to Python and numpy scalars are not ``int``/``float``:
these checks say what a config field means by "an integer" and "a number"
(numpy integers and floats count, bools do not).
"""
import numbers
from typing import Any

# The default of `get_dotted` that tells "absent" from a stored None.
MISSING = object()


def is_int(v: Any) -> bool:
  """An integer (Python or numpy) that is not a bool."""
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_pos_int(v: Any) -> bool:
  """An integer >= 1 that is not a bool."""
  return is_int(v) and v >= 1


def is_number(v: Any) -> bool:
  """A real number (Python or numpy, NaN and inf included) that is not a bool."""
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def get_dotted(node: Any, dotted: str, default: Any = None) -> Any:
  """``node['a']['b']`` for ``'a.b'``, ``default`` where a part is missing.

  ``node`` may be a ``ConfigDict``, a dict or any object with attributes
  (each part is read as an item where the node has ``keys``, else as an
  attribute).
  """
  for part in dotted.split('.'):
    if hasattr(node, 'keys'):
      try:
        node = node[part]
      except (KeyError, TypeError, AttributeError):
        return default
    else:
      node = getattr(node, part, MISSING)
      if node is MISSING:
        return default
  return node
