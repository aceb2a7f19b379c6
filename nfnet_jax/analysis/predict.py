"""Top labels of image files with a trained model, preprocessed as it was evaluated.

The library side of ``nfnet-predict`` (:mod:`nfnet_jax.commands.predict`):
:func:`predict` loads a weight source (:func:`load_predictor`: an
``nfnet-export`` directory, a training workdir, an official ``.npz`` or a
timm file) with its preprocessing record (:mod:`nfnet_jax.data.inference`)
and classifies the images :func:`list_images` finds.
"""
import json
import os
from typing import Sequence

import jax
import numpy as np
from PIL import Image

from nfnet_jax import pretrained
from nfnet_jax.analysis import convert
from nfnet_jax.data import inference
from nfnet_jax.models import create_model

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')


def list_images(paths: Sequence[str]) -> list:
  """Files as given; folders walked (sorted) for image files."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      for root, dirs, files in os.walk(path):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS)]
    elif os.path.isfile(path):
      out.append(path)
    else:
      raise FileNotFoundError(f'{path}: no such file or folder')
  if not out:
    raise FileNotFoundError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) in {list(paths)}')
  return out


def load_predictor(source: str, use_ema: bool = True):
  """``(logits_fn(batch) -> np.ndarray, preprocessing record)`` of a weight source."""
  meta_path = os.path.join(source, 'model.json')
  if os.path.isdir(source) and os.path.isfile(meta_path):   # an nfnet-export directory
    with open(meta_path) as f:
      meta = json.load(f)
    params = pretrained.read_official(os.path.join(source, 'params_folded.npz'))
    config, num_classes, prep = meta['model'], meta['num_classes'], meta.get('preprocessing')
  else:
    config, params = convert.read_weights(source, use_ema=use_ema)
    num_classes = pretrained.classifier_classes(params)
    if config is None:
      raise ValueError(f'{source}: the source holds no model config')
    prep = convert.read_preprocessing(source, config, num_classes)
  if prep is None:
    raise ValueError(f'{source}: no preprocessing record (re-export it, or train anew)')
  model = create_model(config, num_classes)
  fn = jax.jit(lambda p, x: model.apply(p, {}, None, x, False)[0]['logits'])
  return (lambda x: np.asarray(fn(params, x))), prep


def read_image(path: str):
  with Image.open(path) as im:
    if im.mode not in ('L', 'RGB', 'RGBA'):
      im = im.convert('RGB')
    return np.asarray(im)


def predict(source: str, paths: Sequence[str], top: int = 5, batch: int = 32,
            use_ema: bool = True) -> list:
  """``[{'path', 'top': [(label, probability), ...], 'class_ids': [...]}]``."""
  logits_fn, prep = load_predictor(source, use_ema)
  names = prep.get('class_names')
  out = []
  for i in range(0, len(paths), batch):
    chunk = list(paths[i:i + batch])
    x = inference.preprocess([read_image(p) for p in chunk], prep)
    logits = logits_fn(x)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for path, p in zip(chunk, probs):
      ids = [int(c) for c in np.argsort(-p, kind='stable')[:top]]
      out.append({'path': path, 'class_ids': ids,
                  'top': [(names[c] if names else str(c), float(p[c])) for c in ids]})
  return out
