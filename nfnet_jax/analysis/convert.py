"""Weights between DeepMind `.npz`, our training checkpoints and timm files.

A weight source or destination is a spec string:

* `timm:NAME=PATH`: a timm state dict (`.safetensors`, `.pth`, `.bin`) of
  timm model NAME (`nfnet_jax.interop.timm.supported_names()`); as a
  destination, `PATH.safetensors` / `PATH.pth` alone infers NAME from the
  model config;
* `official:PATH` or a `.npz` / `.pkl` path: DeepMind's `F*_haiku.npz`
  format (a dill pickle of the Haiku params; no config inside: the NFNet
  variant is inferred from the tensors);
* `ckpt:DIR` or a directory: one of our training workdirs / checkpoint
  dirs (EMA params when present; the model config is read from the
  checkpoint's metadata).

`read_weights` returns the params and, when the source says, the model
config; `write_weights` writes them; `scripts/convert.py` and
`scripts/export.py` are thin command lines over these.
"""
import json
import os
from typing import Any, Dict, Optional, Tuple

from nfnet_jax import pretrained
from nfnet_jax.data import inference
from nfnet_jax.interop import timm as timm_lib
from nfnet_jax.models import nfnet
from nfnet_jax.train import checkpoint as ckpt_lib


def _split(spec: str) -> Tuple[str, Optional[str], str]:
  """(kind, timm name or None, path) of a spec string."""
  if spec.startswith('timm:'):
    name, sep, path = spec[len('timm:'):].partition('=')
    if not sep or not name or not path:
      raise ValueError(f'{spec!r}: write timm:NAME=PATH, e.g. timm:dm_nfnet_f0=w.safetensors')
    return 'timm', name, path
  for kind in ('official', 'ckpt'):
    if spec.startswith(kind + ':'):
      return kind, None, spec[len(kind) + 1:]
  if os.path.isdir(spec):
    return 'ckpt', None, spec
  if spec.endswith(('.npz', '.pkl')):
    return 'official', None, spec
  if spec.endswith(('.safetensors', '.pth', '.bin', '.pt')):
    return 'timm', None, spec
  raise ValueError(f'{spec!r}: not a weight spec; use timm:NAME=PATH, official:PATH (.npz) '
                   'or ckpt:WORKDIR')


def read_weights(spec: str, use_ema: bool = True) -> Tuple[Optional[Dict[str, Any]], dict]:
  """Reads params (and the model config when the source holds it).

  Returns:
    (model_config or None, params `{module: {param: array}}`).

  Raises:
    ValueError / FileNotFoundError: bad spec, unreadable or unfitting file.
  """
  kind, name, path = _split(spec)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{spec!r}: {path} does not exist')
  if kind == 'timm':
    if name is None:
      raise ValueError(f'{spec!r}: reading a timm file needs its model name: timm:NAME={path}')
    return timm_lib.load_timm(path, name)
  if kind == 'official':
    params = pretrained.read_official(path)
    return pretrained.infer_nfnet_config(params), params
  trees, meta = ckpt_lib.load_train_checkpoint(path)
  params = trees['ema_params'] if use_ema and trees.get('ema_params') else trees['params']
  config = None
  if meta.get('config'):
    config = json.loads(meta['config']).get('model')
  return config, params


def write_weights(spec: str, params: dict, model_config: Optional[Dict[str, Any]]) -> str:
  """Writes params to a timm or official destination; returns a description.

  Raises:
    ValueError: a checkpoint-dir destination (use training to make those),
      or params that do not fit the destination's model.
  """
  kind, name, path = _split(spec)
  if kind == 'timm':
    if model_config is None:
      if name is None:
        raise ValueError(f'{spec!r}: the source has no model config; name the timm model: '
                         f'timm:NAME={path}')
      model_config = timm_lib.timm_model_config(name)
    name = timm_lib.save_timm(params, model_config, path, name=name)
    return f'timm {name} state dict {path}'
  if kind == 'official':
    pretrained.save_official(params, path)
    return f'official-format params {path}' + (f' (model config {model_config})'
                                               if model_config else '')
  raise ValueError(f'{spec!r}: cannot write a training checkpoint; write official:PATH.npz '
                   '(fine-tune from it with --config.finetune.checkpoint=PATH.npz)')


def read_preprocessing(spec: str, model_config: Optional[Dict[str, Any]] = None,
                       num_classes: Optional[int] = None) -> Optional[Dict[str, Any]]:
  """The eval preprocessing record of a weight source (nfnet_jax.data.inference).

  A checkpoint's is the one saved with it (or, for checkpoints written before
  records were saved, the one its saved config implies); an official file's
  is the official NFNet eval at the variant's test resolution; a timm file's
  comes from timm's ``pretrained_cfg`` for NAME (the ImageNet default without
  timm). None when nothing says.
  """
  kind, name, path = _split(spec)
  if kind == 'ckpt':
    meta, _ = ckpt_lib.read_meta(path)
    if meta.get('preprocessing'):
      return json.loads(meta['preprocessing'])
    if meta.get('config'):
      import ml_collections  # pylint: disable=g-import-not-at-top
      data = ml_collections.ConfigDict(json.loads(meta['config'])).data
      try:
        return inference.from_data_config(data)
      except Exception:  # pylint: disable=broad-except
        return None
    return None
  size = None
  if model_config and model_config.get('name') == 'NFNet':
    size = nfnet.NFNET_VARIANTS.get(model_config.get('variant'), {}).get('test_imsize')
  if kind == 'timm' and name:
    try:
      timm_lib.avoid_triton_after_tensorflow()
      import timm  # pylint: disable=g-import-not-at-top
      cfg = timm.models.get_pretrained_cfg(name)
      if cfg is not None:
        return inference.from_timm_cfg(cfg.to_dict(), num_classes)
    except ImportError:
      pass
  return inference.imagenet(size or 224, num_classes or 1000)
