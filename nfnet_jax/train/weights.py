"""The one weight loader: DeepMind `.npz` files, our training checkpoints, timm files.

A weight source is named by a spec string (or a :class:`WeightSpec`):

* `timm:NAME=PATH`: a timm state dict (`.safetensors`, `.pth`, `.bin`,
  `.pt`) of timm model NAME (`nfnet_jax.interop.timm.supported_names()`);
* `official:PATH`: DeepMind's `F*_haiku.npz` format (a dill pickle of the
  Haiku params; no config inside: the NFNet variant is inferred from the
  tensors);
* `ckpt:DIR`: one of our training workdirs, its `checkpoints/` dir or one
  `checkpoints/<step>/` dir (the model config is the one saved with it);
* a bare path: a directory is `ckpt:`, a `.safetensors`/`.pth`/`.bin`/`.pt`
  file `timm:` (which then needs NAME), any other file (and any `.npz` /
  `.pkl` path) `official:`, anything else `ckpt:`.

:func:`load_weights` reads any of them into one :class:`Weights`;
evaluation (`analysis/evaluate.py`), signal propagation plots
(`analysis/spp.py`), conversion (`analysis/convert.py`, which also writes)
and fine-tuning (`train/state.py`) all read weights through it.
"""
import json
import os
from typing import Any, Dict, Mapping, NamedTuple, Optional, Union

from nfnet_jax import errors
from nfnet_jax import pretrained
from nfnet_jax.data import inference
from nfnet_jax.interop import timm as timm_lib
from nfnet_jax.models.nfnet import NFNET_VARIANTS
from nfnet_jax.train import checkpoint as ckpt_lib

KINDS = ('official', 'ckpt', 'timm')
TIMM_SUFFIXES = ('.safetensors', '.pth', '.bin', '.pt')
OFFICIAL_SUFFIXES = ('.npz', '.pkl')


class WeightSpec(NamedTuple):
  """A parsed weight source.

  Attributes:
    kind: 'official', 'ckpt' or 'timm'.
    path: the file or directory.
    timm_name: the timm model name of a timm file (None if not given).
  """
  kind: str
  path: str
  timm_name: Optional[str] = None


class Weights(NamedTuple):
  """Weights read from any source, with what the source says about them.

  Attributes:
    params: `{module: {param: array}}`.
    model_state: the Haiku state (BatchNorm statistics of a checkpoint);
      `{}` for files, which hold params only (NF models have no state).
    model_config: `config.model` as a dict: the one saved with a checkpoint,
      timm's for a timm file, the inferred NFNet variant (or the
      `model_config` passed in) for an official file; None when unknown.
    preprocessing: the eval preprocessing record a checkpoint holds (or its
      saved config implies; `nfnet_jax.data.inference`); None for files
      (see :func:`read_preprocessing` for their defaults).
    kind: 'official', 'ckpt' or 'timm'.
    path: the file or directory read.
    step: the checkpoint step (None for files).
    tree: 'params' or 'ema_params', the checkpoint tree taken ('params'
      for files).
    config: the whole experiment config saved with a checkpoint (a dict),
      else None.
  """
  params: Dict[str, Any]
  model_state: Dict[str, Any]
  model_config: Optional[Dict[str, Any]]
  preprocessing: Optional[Dict[str, Any]]
  kind: str
  path: str
  step: Optional[int] = None
  tree: str = 'params'
  config: Optional[Dict[str, Any]] = None


def parse_spec(spec: Union[str, WeightSpec]) -> WeightSpec:
  """The kind, path and timm name of a spec string (see the module docstring).

  Raises:
    ValueError: a `timm:` spec without NAME or PATH.
  """
  if isinstance(spec, WeightSpec):
    return spec
  if spec.startswith('timm:'):
    name, sep, path = spec[len('timm:'):].partition('=')
    if not sep or not name or not path:
      raise ValueError(f'{spec!r}: write timm:NAME=PATH, e.g. timm:dm_nfnet_f0=w.safetensors')
    return WeightSpec('timm', path, name)
  for kind in ('official', 'ckpt'):
    if spec.startswith(kind + ':'):
      return WeightSpec(kind, spec[len(kind) + 1:])
  if os.path.isdir(spec):
    return WeightSpec('ckpt', spec)
  if spec.endswith(TIMM_SUFFIXES):
    return WeightSpec('timm', spec)
  if spec.endswith(OFFICIAL_SUFFIXES) or os.path.isfile(spec):
    return WeightSpec('official', spec)
  return WeightSpec('ckpt', spec)


def load_weights(spec: Union[str, WeightSpec], *, use_ema: bool = True,
                 model_config: Optional[Mapping[str, Any]] = None,
                 expected_params: Optional[Mapping[str, Any]] = None,
                 timm_overrides: Optional[Mapping[str, Any]] = None) -> Weights:
  """Reads params (and what the source says about them) from any weight source.

  Args:
    spec: a spec string (`timm:NAME=PATH`, `official:PATH`, `ckpt:DIR` or a
      bare path, see the module docstring) or a :class:`WeightSpec`.
    use_ema: take a checkpoint's EMA params when it saved them.
    model_config: the model of an official file, which holds none (None:
      the NFNet variant is inferred from the tensors, None if it is no
      NFNet); ignored for the other kinds.
    expected_params: a params tree (arrays or ShapeDtypeStructs) an official
      or timm file must match name for name and shape for shape (one
      ValueError listing the differences); None checks nothing. Checkpoints
      are not checked (they hold the config that built them).
    timm_overrides: changes to the timm model's config for a file made with
      timm overrides such as `depths=` (`interop.timm.load_timm`).

  Returns:
    A :class:`Weights`.

  Raises:
    errors.NotFoundError: the path does not exist (or holds no finished
      checkpoint).
    ValueError: a bad spec, an unreadable or unfitting file (one line).
    ImportError: torch / safetensors missing for a timm file.
  """
  parsed = parse_spec(spec)
  label = spec if isinstance(spec, str) else parsed.path
  if not os.path.exists(parsed.path):
    raise errors.NotFoundError(f'{label!r}: {parsed.path} does not exist' if label != parsed.path
                               else f'{label!r} does not exist')
  if parsed.kind == 'timm':
    if parsed.timm_name is None:
      raise ValueError(f'{label!r}: reading a timm file needs its model name: '
                       f'timm:NAME={parsed.path}')
    config, params = timm_lib.load_timm(parsed.path, parsed.timm_name,
                                        overrides=timm_overrides)
    if expected_params is not None:
      pretrained.check_params(params, _shapes(expected_params), what=f'{label} params')
    return Weights(params, {}, config, None, 'timm', parsed.path)
  if parsed.kind == 'official':
    if expected_params is not None:
      params = pretrained.load_official(parsed.path, expected_params=expected_params)
    else:
      params = pretrained.read_official(parsed.path)
    if model_config is None:
      model_config = pretrained.infer_nfnet_config(params)
    return Weights(params, {}, dict(model_config) if model_config else None, None,
                   'official', parsed.path)
  return _load_checkpoint(parsed.path, use_ema)


def _shapes(tree: Mapping[str, Mapping[str, Any]]) -> dict:
  return {m: {n: tuple(v.shape) for n, v in d.items()} for m, d in tree.items()}


def _load_checkpoint(path: str, use_ema: bool) -> Weights:
  """A training checkpoint's params (EMA when asked and saved), state and config."""
  trees, meta = ckpt_lib.load_train_checkpoint(path)
  tree = 'ema_params' if use_ema and trees.get('ema_params') else 'params'
  config = meta.get('config')
  config = json.loads(config) if isinstance(config, str) else (config or None)
  model_config = config.get('model') if config else None
  return Weights(trees[tree], trees.get('model_state', {}), model_config,
                 checkpoint_preprocessing(meta, config), 'ckpt', path,
                 step=meta['step'], tree=tree, config=config)


def checkpoint_preprocessing(meta: Mapping[str, Any],
                             config: Optional[Mapping[str, Any]] = None
                             ) -> Optional[Dict[str, Any]]:
  """The preprocessing record of a checkpoint from its metadata.

  The one saved with it, or for checkpoints written before records were
  saved, the one its saved config implies; None when neither says.
  """
  if meta.get('preprocessing'):
    return json.loads(meta['preprocessing'])
  if config is None and meta.get('config'):
    config = json.loads(meta['config'])
  if not config or 'data' not in config:
    return None
  import ml_collections  # pylint: disable=g-import-not-at-top
  try:
    return inference.from_data_config(ml_collections.ConfigDict(config['data']))
  except Exception:  # pylint: disable=broad-except
    return None


def read_preprocessing(spec: Union[str, WeightSpec],
                       model_config: Optional[Mapping[str, Any]] = None,
                       num_classes: Optional[int] = None) -> Optional[Dict[str, Any]]:
  """The eval preprocessing record of a weight source (nfnet_jax.data.inference).

  A checkpoint's is :func:`checkpoint_preprocessing` (read from its metadata
  alone, no arrays); an official file's is the official NFNet eval at the
  variant's test resolution; a timm file's comes from timm's
  ``pretrained_cfg`` for NAME (the ImageNet default without timm).

  Args:
    spec: the weight source.
    model_config: its model (an NFNet variant gives the test resolution).
    num_classes: its classes.
  """
  parsed = parse_spec(spec)
  if parsed.kind == 'ckpt':
    meta, _ = ckpt_lib.read_meta(parsed.path)
    return checkpoint_preprocessing(meta)
  size = None
  if model_config and model_config.get('name') == 'NFNet':
    size = NFNET_VARIANTS.get(model_config.get('variant'), {}).get('test_imsize')
  if parsed.kind == 'timm' and parsed.timm_name:
    try:
      timm_lib.avoid_triton_after_tensorflow()
      import timm  # pylint: disable=g-import-not-at-top  # optional, heavy (torch)
      cfg = timm.models.get_pretrained_cfg(parsed.timm_name)
      if cfg is not None:
        return inference.from_timm_cfg(cfg.to_dict(), num_classes)
    except ImportError:
      pass
  return inference.imagenet(size or 224, num_classes or 1000)
