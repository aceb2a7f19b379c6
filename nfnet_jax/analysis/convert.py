"""Weights between DeepMind `.npz`, our training checkpoints and timm files.

A weight source or destination is a spec string (`nfnet_jax.train.weights`):
`timm:NAME=PATH` (as a destination, `PATH.safetensors` / `PATH.pth` alone
infers NAME from the model config), `official:PATH` or a `.npz` / `.pkl`
path, `ckpt:DIR` or a directory (a source only).

`read_weights` returns the params and, when the source says, the model
config (through the one loader, `nfnet_jax.train.weights.load_weights`);
`write_weights` writes them; `scripts/convert.py` and `scripts/export.py`
are thin command lines over these.
"""
from typing import Any, Dict, Optional, Tuple

from nfnet_jax import pretrained
from nfnet_jax.interop import timm as timm_lib
from nfnet_jax.train import weights as weights_lib

# The eval preprocessing record of a weight source (a checkpoint's saved one,
# the official NFNet eval, timm's pretrained_cfg).
read_preprocessing = weights_lib.read_preprocessing


def read_weights(spec: str, use_ema: bool = True) -> Tuple[Optional[Dict[str, Any]], dict]:
  """Reads params (and the model config when the source holds it).

  Returns:
    (model_config or None, params `{module: {param: array}}`).

  Raises:
    ValueError / FileNotFoundError: bad spec, unreadable or unfitting file.
  """
  w = weights_lib.load_weights(spec, use_ema=use_ema)
  return w.model_config, w.params


def write_weights(spec: str, params: dict, model_config: Optional[Dict[str, Any]]) -> str:
  """Writes params to a timm or official destination; returns a description.

  Raises:
    ValueError: a checkpoint-dir destination (use training to make those),
      or params that do not fit the destination's model.
  """
  kind, path, name = weights_lib.parse_spec(spec)
  if kind == 'official' and not (spec.startswith('official:')
                                 or path.endswith(weights_lib.OFFICIAL_SUFFIXES)):
    # An existing file of another kind is read as official, never overwritten.
    raise ValueError(f'{spec!r}: not a weight destination; use timm:NAME=PATH, '
                     'official:PATH (.npz) or PATH.npz')
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

