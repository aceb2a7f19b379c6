"""The one config front door: load a config file, parse and apply overrides.

Every command line that takes ``--config file.py[:arg]`` (train, evaluate,
spp, sweep, benchmark, ...) reads it through :func:`load_config` and applies
``--config.a.b=value`` flags through :func:`apply_overrides`, so all of them
accept the same overrides, including fields whose default is None
(``--config.data.data_dir=/data/tfds``) and setting a field to None
(``--config.optimizer.clipping=None``). A field that does not exist is one
:class:`ConfigError` naming it and the closest valid field; command lines turn
it into one line on stderr and exit status 2 (``errors.exit_on_error``).

``config/`` is the bottom layer and imports nothing of the package, so the
root of the package's typed errors, :class:`NFNetError`, is defined here;
``nfnet_jax.errors`` (one layer up) re-exports it and derives the others.
"""
import ast
import contextlib
import difflib
import importlib.util
import os
import re
import sys
from typing import Any, Iterable, Optional, Sequence

EXIT_BAD_CONFIG = 2   # errors.EXIT_BAD_INPUT (a test checks they agree)
# The spellings of None on a command line. Lowercase 'none' is a string: it
# is a choice of data.train_crop, model.norm and model.attention (where
# None means something else: the variant's default attention).
NONE_WORDS = ('None', 'null')
OVERRIDE_PREFIX = '--config.'


class NFNetError(Exception):
  """An anticipated failure: one line of message, an exit status, a hint.

  The root of the package's typed errors (``nfnet_jax.errors`` documents the
  exit statuses and derives the others from it).

  Attributes:
    exit_code: the command line's exit status for this failure.
    hint: an optional second line (what to do), or None.
  """
  exit_code = 1

  def __init__(self, message: str, hint: Optional[str] = None):
    super().__init__(message)
    self.hint = hint

  def lines(self) -> list[str]:
    """``['error: ...']`` plus ``'hint: ...'`` when there is one."""
    return [f'error: {self}'] + ([f'hint: {self.hint}'] if self.hint else [])


class ConfigError(NFNetError, ValueError):
  """A bad config file, field or override value (one line, names the field)."""
  exit_code = EXIT_BAD_CONFIG


# ---------------------------------------------------------------------------
# Values


def parse_value(text: str) -> Any:
  """Parses one command-line value: None/null, True/False, numbers, tuples.

  A value in matching quotes is the text inside them, whatever it spells
  (``"'none'"`` is the string ``'none'``, ``"'1'"`` the string ``'1'``).

  Args:
    text: the value as typed, e.g. '0.01', 'None', 'relu', '(1,2)', "'none'".

  Returns:
    None, a bool, an int, a float, a tuple or list, else the text itself.
  """
  t = text.strip()
  if _is_quoted(t):
    return t[1:-1]
  if t in NONE_WORDS:
    return None
  if t.lower() in ('true', 'false'):
    return t.lower() == 'true'
  try:
    v = ast.literal_eval(t)
    if isinstance(v, (int, float, tuple, list)):
      return v
  except (ValueError, SyntaxError):
    pass
  return t


def _is_quoted(text: str) -> bool:
  return len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"'


def override_text(value: Any, quote: bool = True) -> str:
  """The text of ``--config.x=<text>`` that :func:`parse_value` reads as ``value``.

  Args:
    value: None, a bool, a number, a string or a tuple / list of them.
    quote: quote a string that would parse as something else (``'none'``,
      ``'1'``, ``'True'``); False gives the plain form for tables and names.
  """
  if value is None:
    return 'None'
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    # Inside a tuple only a quoted string parses back as a string.
    items = ','.join(repr(v) if quote and isinstance(v, str) else override_text(v, quote)
                     for v in value)
    return '(' + items + (',)' if len(value) == 1 else ')')
  if quote and isinstance(value, str) and parse_value(value) != value:
    return repr(value)
  return str(value)


# ---------------------------------------------------------------------------
# Files


def split_spec(spec: str) -> tuple[str, Optional[str]]:
  """``'configs/nfnet.py:F0'`` -> ``('configs/nfnet.py', 'F0')``."""
  path, sep, arg = spec.partition(':')
  return path, (arg if sep else None)


def load_config_module(spec: str):
  """Imports a config file (``path.py`` or ``path.py:arg``) as a module.

  Raises:
    ConfigError: the file does not exist.
  """
  path, _ = split_spec(spec)
  if not os.path.isfile(path):
    raise ConfigError(f'--config file {path!r} does not exist')
  name = 'nfnet_config_' + re.sub(r'\W', '_', os.path.abspath(path))
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  # Configs may import their siblings (e.g. configs/fashion_mnist.py).
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f'--config file {path}:{e.lineno}: {e.msg}') from None
  finally:
    sys.path.pop(0)
  return module


def load_config(spec: str, overrides: Iterable[tuple[str, Any]] = ()):
  """``get_config(arg)`` of a config file, with overrides applied.

  Args:
    spec: ``path.py`` or ``path.py:arg``.
    overrides: ``(dotted_field, value)`` pairs; string values are parsed
      with :func:`parse_value` (see :func:`apply_overrides`).

  Returns:
    The ``ConfigDict``.

  Raises:
    ConfigError: a missing file, unknown field or a value of the wrong type.
  """
  path, arg = split_spec(spec)
  module = load_config_module(spec)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'--config file {path!r} defines no get_config()')
  try:
    config = module.get_config(arg) if arg is not None else module.get_config()
  except ValueError as e:
    # Config files reject an unknown argument (a variant such as
    # nfnet.py:F9) with a ValueError naming it and the allowed values.
    msg = str(e)
    raise ConfigError(msg if msg.startswith(path) else f'--config {spec}: {msg}'
                      ) from None
  apply_overrides(config, overrides)
  return config


# ---------------------------------------------------------------------------
# Fields


def field_names(config, prefix: str = '') -> list[str]:
  """Every dotted field of ``config`` (sections and leaves)."""
  out = []
  for key in config.keys():
    name = f'{prefix}{key}'
    out.append(name)
    value = config[key]
    if hasattr(value, 'keys') and not isinstance(value, dict):
      out += field_names(value, name + '.')
  return out


def closest_name(name: str, candidates: Iterable[str]) -> Optional[str]:
  """The candidate nearest to ``name`` by spelling (difflib), or None."""
  match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
  return match[0] if match else None


def closest_field(config, dotted: str) -> Optional[str]:
  """The valid field of ``config`` nearest to ``dotted`` by spelling."""
  names = field_names(config)
  # Prefer a field of the same section, then anything.
  parent = dotted.rpartition('.')[0]
  same = [n for n in names if n.rpartition('.')[0] == parent]
  return closest_name(dotted, same) or closest_name(dotted, names)


def unknown_field_message(config, dotted: str) -> str:
  """``config.a.b is not a field; did you mean config.a.c?`` (one line)."""
  near = closest_field(config, dotted)
  hint = (f'did you mean config.{near}?' if near else
          f'valid top-level fields: {sorted(config.keys())}')
  return f'config.{dotted} is not a field of this config; {hint}'


def lookup(config, dotted: str):
  """``config`` at ``dotted``; ConfigError naming the closest field if absent."""
  node = config
  for part in dotted.split('.'):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      raise ConfigError(unknown_field_message(config, dotted)) from None
  return node


def _coerce(current: Any, value: Any, text: Optional[str]) -> Any:
  """The override value in the type of the field it replaces."""
  if value is None or current is None:
    return value
  if isinstance(current, str) and text is not None and not _is_quoted(text.strip()):
    return text.strip()   # a string field takes the text as typed ('50', 'F0')
  if isinstance(current, tuple) and isinstance(value, list):
    return tuple(value)
  if isinstance(current, float) and isinstance(value, int) and not isinstance(
      value, bool):
    return float(value)
  return value


def apply_override(config, dotted: str, value: Any) -> None:
  """Sets one field (a locked config too); a string value is parsed.

  Raises:
    ConfigError: an unknown field, or a value the field's type rejects.
  """
  if dotted.startswith('config.'):
    dotted = dotted[len('config.'):]
  parent, _, name = dotted.rpartition('.')
  try:
    node = lookup(config, parent) if parent else config
  except ConfigError:
    node = None
  if not hasattr(node, 'keys') or name not in node:
    raise ConfigError(unknown_field_message(config, dotted))
  text = value if isinstance(value, str) else None
  parsed = parse_value(value) if text is not None else value
  new = _coerce(node[name], parsed, text)
  current = node[name]
  if isinstance(new, bool) and current is not None and not isinstance(
      current, bool):
    # ConfigDict takes True for a number field (bool is an int to Python).
    raise ConfigError(
        f'config.{dotted}={new!r} (bool) does not fit this field of type '
        f'{type(current).__name__} (now {current!r})')
  unlocked = node.unlocked() if hasattr(node, 'unlocked') else (
      contextlib.nullcontext())
  try:
    with unlocked:
      node[name] = new
  except (TypeError, ValueError) as e:
    raise ConfigError(
        f'config.{dotted}={new!r} ({type(new).__name__}) does not fit this '
        f'field of type {type(node[name]).__name__} (now {node[name]!r})'
    ) from e


def apply_overrides(config, overrides) -> None:
  """Applies ``(dotted_field, value)`` pairs (or a dict) in order."""
  items = overrides.items() if hasattr(overrides, 'items') else overrides
  for dotted, value in items:
    apply_override(config, dotted, value)


# ---------------------------------------------------------------------------
# Command lines


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Takes the ``--config.a.b=v`` flags out of ``argv``.

  Returns:
    ``(remaining_argv, [(dotted_field, text), ...])``; the texts are parsed
    when applied, against the field they replace.

  Raises:
    ConfigError: a ``--config.a.b`` flag without ``=value``.
  """
  rest, overrides = [], []
  for a in argv:
    if a.startswith(OVERRIDE_PREFIX):
      field, sep, value = a[len(OVERRIDE_PREFIX):].partition('=')
      if not sep:
        raise ConfigError(f'{a}: an override needs a value, e.g. '
                          f'{OVERRIDE_PREFIX}{field}=VALUE')
      overrides.append((field, value))
    else:
      rest.append(a)
  return rest, overrides
