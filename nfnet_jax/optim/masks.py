"""Parameter path strings and boolean masks selected by regex.

Haiku stores parameters as a two-level mapping ``{module_path: {name: array}}``
(``{'NFNet/~/linear': {'w': ..., 'b': ...}}``). Every optimizer mask in
nfnet_jax (weight-decay exclusion, AGC exclusion) is a regular expression on
the joined path ``'<module>/<param>'``, e.g. ``'NFNet/~/linear/w'``. Non-Haiku
pytrees work too: their keys / attribute names / sequence indices are joined
with ``'/'``.
"""
import re
from typing import Any, Callable, List, Optional, Union

import jax

# What `make_mask` accepts as a selector: a regex string (searched with
# `re.search` in each path), a compiled pattern, a callable
# `(path, leaf) -> bool`, or None (selects nothing).
Selector = Optional[Union[str, 're.Pattern[str]', Callable[[str, Any], bool]]]


def _key_str(key) -> str:
  """One pytree path entry as a string (dict key, attribute or index)."""
  if isinstance(key, jax.tree_util.DictKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.GetAttrKey):
    return key.name
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  if isinstance(key, jax.tree_util.FlattenedIndexKey):
    return str(key.key)
  return str(key)


def path_to_str(path) -> str:
  """Joins a `jax.tree_util` key path into a ``'module/param'`` string."""
  return '/'.join(_key_str(k) for k in path)


def param_paths(params) -> List[str]:
  """Returns the ``'module/param'`` path of every leaf, in tree-flatten order.

  Args:
    params: a pytree of parameters (usually Haiku's two-level mapping).

  Returns:
    A list of path strings, e.g. ``['NFNet/~/linear/b', 'NFNet/~/linear/w']``,
    in the order of ``jax.tree_util.tree_leaves(params)``.
  """
  leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(params)
  return [path_to_str(p) for p, _ in leaves_with_path]


def compile_selector(selector: Selector, what: str = 'selector'
                    ) -> Callable[[str, Any], bool]:
  """Turns a regex / callable / None into a predicate ``(path, leaf) -> bool``.

  Args:
    selector: regex string or compiled pattern (matched with ``re.search``),
      a callable ``(path, leaf) -> bool``, or None (matches nothing).
    what: the argument's name, used in error messages.

  Returns:
    The predicate.

  Raises:
    ValueError: if the regex does not compile or the type is unsupported.
  """
  if selector is None:
    return lambda path, leaf: False
  if isinstance(selector, re.Pattern):
    return lambda path, leaf: selector.search(path) is not None
  if isinstance(selector, str):
    try:
      pattern = re.compile(selector)
    except re.error as e:
      raise ValueError(
          f'{what}={selector!r} is not a valid regular expression ({e}); '
          'expected a Python regex matched against \'module/param\' paths '
          'such as \'NFNet/~/linear/w\'.') from e
    return lambda path, leaf: pattern.search(path) is not None
  if callable(selector):
    return lambda path, leaf: bool(selector(path, leaf))
  raise ValueError(
      f'{what}={selector!r} must be a regex string, a compiled pattern, a '
      'callable (path, leaf) -> bool, or None.')


def make_mask(params, selector: Selector):
  """Boolean pytree: True where the leaf's path is selected.

  Args:
    params: a pytree of parameters.
    selector: see `compile_selector` (regex searched in ``'module/param'``,
      callable ``(path, leaf) -> bool`` or None).

  Returns:
    A pytree with the structure of ``params`` holding Python bools. Note
    that optax masks mean "apply the transformation where True", so for an
    *exclusion* regex pass ``invert_mask(make_mask(...))`` to optax.
  """
  pred = compile_selector(selector)
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: pred(path_to_str(p), leaf), params)


def invert_mask(mask):
  """Logical NOT of a boolean pytree (Python bools)."""
  return jax.tree_util.tree_map(lambda m: not m, mask)
