"""Load and save DeepMind's official NFNet checkpoints (`F*_haiku.npz`).

Despite the extension those files are `dill` pickles of the two-level Haiku
params mapping `{module path: {param name: array}}` (HWIO conv kernels, no
state). `load_official` accepts them (and plain pickles of the same mapping),
and checks every name and shape against a freshly initialised model computed
with `jax.eval_shape`, so nothing of the full model is compiled.
"""
import functools
import pickle
import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nfnet_jax import utils
from nfnet_jax.models import create_model
from nfnet_jax.models.nfnet import NFNET_VARIANTS

try:
  import dill
except ImportError:  # dill reads plain pickles too; fall back when missing
  dill = None

# Parameter shapes do not depend on the input resolution; use the smallest.
_SHAPE_PROBE_RES = 32
_MAX_LISTED = 12


def _load_pickle(path: str):
  opener = dill if dill is not None else pickle
  try:
    with open(path, 'rb') as f:
      return opener.load(f)
  except FileNotFoundError:
    raise
  except Exception as e:  # truncated/corrupt pickles raise many error types
    raise ValueError(f'{path} is not a readable official checkpoint (expected a dill/pickle '
                     f'of {{module: {{param: array}}}}): {type(e).__name__}: '
                     f'{" ".join(str(e).split())}') from e


def _to_params(raw: Any, path: str) -> dict:
  """Checks the two-level structure and converts leaves to arrays."""
  if not isinstance(raw, Mapping) or not raw:
    raise ValueError(f'{path}: expected a non-empty mapping {{module: {{param: array}}}}, '
                     f'got {type(raw).__name__}')
  params = {}
  for module, inner in raw.items():
    if not isinstance(module, str) or not isinstance(inner, Mapping):
      raise ValueError(f'{path}: entry {module!r} is not a module name mapping to '
                       f'{{param: array}} (got {type(inner).__name__})')
    params[module] = {}
    for name, value in inner.items():
      try:
        arr = np.asarray(value)
      except Exception as e:
        raise ValueError(f'{path}: {module}/{name} is not an array: {e}') from e
      if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f'{path}: {module}/{name} has non-numeric dtype {arr.dtype}')
      params[module][name] = arr
  return params


def read_official(path: str) -> dict:
  """Reads an official-format checkpoint without checking it against a model.

  Only the file format is checked (a dill/pickle of ``{module: {param:
  array}}`` with numeric arrays); callers that know their model (fine-tuning,
  which exempts the classifier) compare names and shapes themselves.
  `load_official` is this plus the check against a model.

  Args:
    path: checkpoint file.

  Returns:
    ``{module: {param: np.ndarray}}``.

  Raises:
    FileNotFoundError: no such file.
    ValueError: unreadable file or wrong structure.
  """
  return _to_params(_load_pickle(path), path)


def expected_param_shapes(model_config, num_classes: int) -> dict:
  """{module: {param: shape}} of a freshly initialised model, via eval_shape."""
  model = create_model(model_config, num_classes)
  images = jax.ShapeDtypeStruct((1, _SHAPE_PROBE_RES, _SHAPE_PROBE_RES, 3), jnp.float32)
  init = functools.partial(model.init, is_training=False)
  params, _ = jax.eval_shape(init, jax.random.PRNGKey(0), images)
  return {m: {n: tuple(v.shape) for n, v in inner.items()} for m, inner in params.items()}


def infer_nfnet_config(params: Mapping[str, Mapping[str, Any]]) -> Optional[dict]:
  """Guesses the NFNet variant of an official params mapping, or None."""
  if 'NFNet/~/stem_conv3' not in params:
    return None
  # Blocks by their conv0 (the light family has no per-block skip_gain).
  blocks = [m[:-len('/~/conv0')] for m in params
            if re.fullmatch(r'NFNet/~/nf_block(_\d+)?/~/conv0', m)]
  stem_out = np.shape(params['NFNet/~/stem_conv3'].get('w'))[-1]
  has_skip_gain = any('skip_gain' in params.get(b, {}) for b in blocks)
  attention = ('eca' if any(m.endswith('/~/eca') for m in params) else
               'se' if any('/~/squeeze_excite' in m for m in params) else 'none')
  final_w = np.shape(params.get('NFNet/~/final_conv', {}).get('w'))
  for name, v in NFNET_VARIANTS.items():
    if (sum(v['depth']) == len(blocks) and v['width'][0] // 2 == stem_out
        and (v['skipinit_mode'] == 'skip_gain') == has_skip_gain
        and v['attention'] == attention
        and (len(final_w) != 4 or int(v['final_conv_mult'] * v['width'][-1]) == final_w[-1])):
      return {'name': 'NFNet', 'variant': name}
  return None


def classifier_classes(params: Mapping) -> Optional[int]:
  """Classes of the root classifier `<root>/~/linear/b`, or None if absent."""
  biases = [d['b'] for m, d in params.items()
            if m.endswith('/~/linear') and m.count('/~/') == 1 and 'b' in d]
  return int(np.shape(biases[0])[0]) if len(biases) == 1 else None


def _shapes_report(found: Mapping, expected: Mapping) -> list:
  flat_found = {f'{m}/{n}': tuple(np.shape(v)) for m, d in found.items() for n, v in d.items()}
  flat_exp = {f'{m}/{n}': tuple(s) for m, d in expected.items() for n, s in d.items()}
  return flat_shapes_report(flat_found, flat_exp)


def flat_shapes_report(flat_found: Mapping[str, tuple], flat_exp: Mapping[str, tuple]) -> list:
  """Missing / unexpected / mis-shaped names of two flat {name: shape} maps.

  Returns:
    One string per kind of difference (empty when the two agree), each
    listing at most a dozen names.
  """
  missing = sorted(set(flat_exp) - set(flat_found))
  unexpected = sorted(set(flat_found) - set(flat_exp))
  misshaped = sorted(f'{k}: file {flat_found[k]} vs model {flat_exp[k]}'
                     for k in set(flat_exp) & set(flat_found) if flat_exp[k] != flat_found[k])
  problems = []
  for label, items in (('missing', missing), ('unexpected', unexpected),
                       ('mis-shaped', misshaped)):
    if items:
      shown = items[:_MAX_LISTED]
      more = f' ... and {len(items) - len(shown)} more' if len(items) > len(shown) else ''
      problems.append(f'{len(items)} {label}: {shown}{more}')
  return problems


def check_params(params: Mapping, expected_shapes: Mapping, what: str = 'params') -> None:
  """Raises one ValueError listing missing, unexpected and mis-shaped entries."""
  problems = _shapes_report(params, expected_shapes)
  if problems:
    raise ValueError(f'{what} do not match the model: ' + '; '.join(problems))


def load_official(path: str, model_config=None, num_classes: Optional[int] = None,
                  expected_params: Optional[Mapping] = None) -> dict:
  """Reads an official `F*_haiku.npz` (dill/pickle) into a params mapping.

  Args:
    path: checkpoint file.
    model_config: `config.model` (or dict) of the model the params are for;
      None infers the NFNet variant from the file.
    num_classes: classifier size of that model; None takes it from the file's
      classifier bias (`<root>/~/linear/b`).
    expected_params: instead of a config, a params tree (or a tree of
      ShapeDtypeStructs) whose names and shapes the file must match.

  Returns:
    `{module: {param: jnp.ndarray}}` that the model's `apply` accepts.

  Raises:
    ValueError: unreadable/corrupt file, or names/shapes differing from the
      model (one message listing all differences).
  """
  params = read_official(path)
  if expected_params is not None:
    expected = {m: {n: tuple(np.shape(v)) for n, v in d.items()}
                for m, d in expected_params.items()}
    desc = 'the given params'
  else:
    if model_config is None:
      model_config = infer_nfnet_config(params)
      if model_config is None:
        raise ValueError(f'{path}: cannot infer the model from the file; pass model_config '
                         '(e.g. {"name": "NFNet", "variant": "F0"})')
    if num_classes is None:
      num_classes = classifier_classes(params)
      if num_classes is None:
        raise ValueError(f'{path}: cannot find the classifier bias `<root>/~/linear/b`; '
                         'pass num_classes')
    expected = expected_param_shapes(model_config, num_classes)
    cfg = model_config.to_dict() if hasattr(model_config, 'to_dict') else dict(model_config)
    desc = f'{cfg} with {num_classes} classes'
  problems = _shapes_report(params, expected)
  if problems:
    raise ValueError(f'{path} does not match the model ({desc}): ' + '; '.join(problems))
  return jax.tree.map(jnp.asarray, params)


def save_official(params: Mapping, path: str) -> None:
  """Writes params in the official format: a dill pickle of nested dicts of numpy arrays."""
  plain = {str(m): {str(n): np.asarray(jax.device_get(v)) for n, v in d.items()}
           for m, d in params.items()}
  # Atomic: a crash never leaves a half-written file.
  utils.atomic_write(path, lambda f: (dill if dill is not None else pickle).dump(plain, f))
