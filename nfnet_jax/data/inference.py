"""The eval preprocessing a model expects, recorded with its weights.

A checkpoint, an official/timm import and an export carry one record (as
timm's ``pretrained_cfg`` does), so a user never guesses how an image becomes
the network's input::

    {'input_size': [H, W, C],        # what the network sees
     'source_channels': 1 | 3,       # channels an input image is decoded to
     'resize': 'squash' | 'aspect',  # nfnet_jax.data.preprocess.eval_image
     'crop_padding': P,              # resize to H + P, centre crop H
     'crop_pct': H / (H + P),        # the same, as timm says it
     'interpolation': 'bicubic',
     'mean': [...], 'std': [...],    # per output channel, 0-255 units
     'num_classes': N, 'dataset': 'fashion_mnist', 'class_names': [...]}

:func:`preprocess` applies a record to decoded images with the eval
pipeline's own TensorFlow ops (``eval_image``, ``to_channels``,
``normalize``), so an image file gives the same input as ``nfnet-evaluate``.
"""
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from nfnet_jax.data import datasets

IMAGENET_MEAN = datasets.IMAGENET_MEAN
IMAGENET_STD = datasets.IMAGENET_STD

# Labels of the data sets whose names are known without reading them.
CLASS_NAMES = {
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                      'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
}


def record(input_size, *, source_channels: int, resize: str = 'squash',
           crop_padding: int = 32, interpolation: str = 'bicubic',
           mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
           num_classes: Optional[int] = None, dataset: Optional[str] = None,
           class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """A checked preprocessing record (see the module docstring)."""
  h, w, c = (int(v) for v in input_size)
  if h != w or h < 1 or c not in (1, 3) or int(source_channels) not in (1, 3):
    raise ValueError(f'preprocessing: input_size {input_size!r} must be [S, S, 1|3] and '
                     f'source_channels 1 or 3, got {source_channels!r}')
  if resize not in datasets.EVAL_RESIZES:
    raise ValueError(f'preprocessing: resize {resize!r} not in {datasets.EVAL_RESIZES}')
  if interpolation not in datasets.RESIZE_METHODS:
    raise ValueError(f'preprocessing: interpolation {interpolation!r} not in '
                     f'{datasets.RESIZE_METHODS}')
  mean, std = [float(v) for v in mean], [float(v) for v in std]
  if len(mean) == 1 and c == 3:
    mean, std = mean * 3, std * 3
  if len(mean) != c or len(std) != c:
    raise ValueError(f'preprocessing: mean/std need {c} values, got {mean} / {std}')
  out = {'input_size': [h, w, c], 'source_channels': int(source_channels),
         'resize': resize, 'crop_padding': int(crop_padding),
         'crop_pct': round(h / (h + int(crop_padding)), 4), 'interpolation': interpolation,
         'mean': mean, 'std': std, 'num_classes': num_classes, 'dataset': dataset}
  names = class_names if class_names is not None else CLASS_NAMES.get(dataset)
  if names is not None and (num_classes is None or len(names) == num_classes):
    out['class_names'] = list(names)
  return out


def from_data_config(data_config, info=None) -> Dict[str, Any]:
  """The record of a training config's eval pipeline (what evaluate feeds)."""
  info = info or datasets.dataset_info(data_config)
  get = lambda k, d=None: datasets._get(data_config, k, d)  # pylint: disable=protected-access
  return record(info.eval_image_shape, source_channels=info.source_channels,
                resize=get('eval_resize', 'squash'),
                crop_padding=int(get('eval_crop_padding', 32)),
                interpolation=get('resize_method', 'bicubic') or 'bicubic',
                mean=info.mean, std=info.std, num_classes=info.num_classes,
                dataset=get('name'))


def imagenet(size: int, num_classes: int = 1000) -> Dict[str, Any]:
  """The official NFNet eval (squash to size + 32, centre crop, bicubic)."""
  return record((size, size, 3), source_channels=3, num_classes=num_classes,
                dataset='imagenet2012' if num_classes == 1000 else None)


def from_timm_cfg(cfg: Mapping[str, Any], num_classes: Optional[int] = None) -> Dict[str, Any]:
  """A timm ``pretrained_cfg`` (0-1 mean/std, CHW sizes, crop_pct) as a record."""
  c, h, _ = cfg.get('test_input_size') or cfg['input_size']
  crop_pct = float(cfg.get('test_crop_pct') or cfg.get('crop_pct') or 0.875)
  padding = max(0, int(round(h / crop_pct)) - h)
  mode = cfg.get('crop_mode', 'center')
  return record((h, h, c), source_channels=c,
                resize='squash' if mode == 'squash' else 'aspect',
                crop_padding=padding, interpolation=cfg.get('interpolation', 'bicubic'),
                mean=[255 * m for m in cfg.get('mean', (0.485, 0.456, 0.406))],
                std=[255 * s for s in cfg.get('std', (0.229, 0.224, 0.225))],
                num_classes=num_classes or cfg.get('num_classes'),
                dataset='imagenet2012' if (num_classes or cfg.get('num_classes')) == 1000 else None)


def preprocess(images: Sequence[np.ndarray], rec: Mapping[str, Any]) -> np.ndarray:
  """Decoded uint8 images ([H, W] or [H, W, C], any size) -> the model's input batch.

  Grey images become RGB (and back) as the record's source channels say; the
  rest is the eval pipeline's per-example preprocessing.
  """
  # Lazy: TensorFlow (preprocess imports it at its top) only when images are
  # preprocessed; checkpoints, exports and the GPU image (no TensorFlow) read
  # and write the record through this module without it.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from nfnet_jax.data import preprocess as pp  # pylint: disable=g-import-not-at-top
  size, _, out_c = rec['input_size']
  src_c = rec['source_channels']
  out = []
  for img in images:
    x = np.asarray(img)
    if x.ndim == 2:
      x = x[..., None]
    if x.shape[-1] == 4:
      x = x[..., :3]
    if x.shape[-1] == 1 and src_c == 3:
      x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 3 and src_c == 1:   # ITU-R 601 luma, as tf.image.rgb_to_grayscale
      x = np.round(x.astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32))
      x = x.clip(0, 255).astype(np.uint8)[..., None]
    t = tf.constant(x.astype(np.uint8))
    if rec['crop_padding'] == 0 and t.shape[0] == size and t.shape[1] == size:
      y = tf.cast(t, tf.float32)   # the pipeline's shortcut for native-size images
    else:
      y = pp.eval_image(t, size=size, jpeg=False, channels=src_c,
                        padding=rec['crop_padding'], mode=rec['resize'],
                        method=rec['interpolation'])
    y = pp.normalize(pp.to_channels(y, out_c), rec['mean'], rec['std'])
    out.append(y.numpy())
  return np.stack(out).astype(np.float32)
