"""The library side of ``nfnet-export``: read, fold and check weights; write the bundle.

:func:`load_folded` reads a weight source (``timm:``, ``official:``,
``ckpt:``), folds weight standardization and gains into the kernels
(:func:`nfnet_jax.export.fold_ws`) and checks every name and shape against
the folded model; :func:`write_bundle` writes ``params_folded.npz``,
``model.json`` (with the source's eval preprocessing at the exported size)
and the requested formats.
"""
import json
import os
import sys
from typing import Optional, Sequence

import jax

from nfnet_jax import export
from nfnet_jax import pretrained
from nfnet_jax.analysis import convert
from nfnet_jax.data import inference
from nfnet_jax.models import create_model
from nfnet_jax.models import validate_model_config


def load_folded(source: str, image_size: int, channels: int, model_json: Optional[str] = None,
                use_ema: bool = True):
  """``(config, folded params, folded config, num_classes)`` of a weight source.

  Raises:
    ValueError, FileNotFoundError, ImportError, json.JSONDecodeError: bad
      input (the command prints one line).
  """
  config, params = convert.read_weights(source, use_ema=use_ema)
  if model_json:
    config = dict(config or {}, **json.loads(model_json))
  if config is None:
    raise ValueError(f'{source}: the source holds no model config; pass --model JSON')
  num_classes = pretrained.classifier_classes(params)
  if num_classes is None:
    raise ValueError(f'{source}: cannot find the classifier bias <root>/~/linear/b')
  validate_model_config(config, num_classes)
  folded, fconfig = export.fold_ws(params, config)
  # Every name and shape against the folded model before anything compiles.
  model = create_model(fconfig, num_classes)
  spec = jax.ShapeDtypeStruct((1, image_size, image_size, channels), 'float32')
  expected, _ = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, False), spec)
  pretrained.check_params(folded, {m: {n: v.shape for n, v in d.items()}
                                   for m, d in expected.items()}, what=source)
  return config, folded, fconfig, num_classes


def write_bundle(source: str, out: str, formats: Sequence[str], image_size: int, channels: int,
                 config, folded, fconfig, num_classes: int) -> None:
  """Writes ``params_folded.npz``, ``model.json`` and ``formats`` into ``out``."""
  os.makedirs(out, exist_ok=True)
  pretrained.save_official(folded, os.path.join(out, 'params_folded.npz'))
  # How an image becomes the input: the source's eval preprocessing at the
  # exported size (nfnet_jax.data.inference; nfnet-predict reads it).
  try:
    prep = convert.read_preprocessing(source, config, num_classes)
    if prep is not None:
      prep = inference.record(
          (image_size, image_size, channels),
          **{k: prep[k] for k in ('source_channels', 'resize', 'crop_padding', 'interpolation',
                                  'mean', 'std', 'num_classes', 'dataset')},
          class_names=prep.get('class_names'))
  except (ValueError, KeyError, OSError) as e:
    print(f'nfnet-export: note: no preprocessing recorded ({e})', file=sys.stderr)
    prep = None
  with open(os.path.join(out, 'model.json'), 'w') as f:
    json.dump({'model': fconfig, 'num_classes': num_classes,
               'input_shape': [None, image_size, image_size, channels],
               'preprocessing': prep, 'source': source}, f, indent=1)
  if 'stablehlo' in formats:
    path = os.path.join(out, 'model.stablehlo')
    export.export_stablehlo(folded, fconfig, num_classes, image_size, path, channels=channels)
    print(f'[export] wrote {path}')
  if 'savedmodel' in formats:
    path = os.path.join(out, 'saved_model')
    export.export_saved_model(folded, fconfig, num_classes, image_size, path, channels=channels)
    print(f'[export] wrote {path}')
