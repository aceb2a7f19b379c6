"""nfnet-predict: top-5 labels with probabilities for image files or folders."""
import json
import os
import sys
from typing import Optional, Sequence

from nfnet_jax.commands import base

EXAMPLES = (
    'nfnet-predict --from workdirs/quickstart shirt.png boots/',
    'nfnet-predict --from F0_haiku.npz cat.jpg',
    'nfnet-predict --from timm:dm_nfnet_f0=dm_nfnet_f0.safetensors cat.jpg --top 3',
    'nfnet-predict --from exported/quickstart images/ --json_out predictions.json',
)
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser(
      'nfnet-predict',
      'Classifies images with a trained model, preprocessing them as the model '
      'was evaluated (the record saved with a checkpoint, the official NFNet eval '
      'for F*_haiku.npz, timm\'s pretrained_cfg for timm files, model.json of an '
      'nfnet-export directory). --from is a training workdir (ckpt:DIR), an '
      'official .npz, timm:NAME=PATH or an export directory. Prints the top '
      'labels and probabilities of each image.', EXAMPLES)
  p.add_argument('--from', dest='source', required=True, help='weights (see above)')
  p.add_argument('images', nargs='+', help='image files or folders of images')
  p.add_argument('--top', type=int, default=5, help='labels per image')
  p.add_argument('--batch', type=int, default=32, help='images per forward pass')
  p.add_argument('--no_ema', action='store_true', help='workdirs: raw params, not EMA')
  p.add_argument('--json_out', default=None, help='also write the predictions as JSON')
  return p


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
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from nfnet_jax import pretrained  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import convert  # pylint: disable=g-import-not-at-top
  from nfnet_jax.models import create_model  # pylint: disable=g-import-not-at-top
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
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    if im.mode not in ('L', 'RGB', 'RGBA'):
      im = im.convert('RGB')
    return np.asarray(im)


def predict(source: str, paths: Sequence[str], top: int = 5, batch: int = 32,
            use_ema: bool = True) -> list:
  """``[{'path', 'top': [(label, probability), ...], 'class_ids': [...]}]``."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from nfnet_jax.data import inference  # pylint: disable=g-import-not-at-top
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


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  args = p.parse_args(argv)
  if args.top < 1 or args.batch < 1:
    p.error('--top and --batch must be >= 1')
  try:
    paths = list_images(args.images)
    results = predict(args.source, paths, args.top, args.batch, use_ema=not args.no_ema)
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f'nfnet-predict: {e}', file=sys.stderr)
    return base.EXIT_USAGE
  for r in results:
    print(f"{r['path']}: " + ', '.join(f'{label} {prob:.4f}' for label, prob in r['top']))
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump(results, f, indent=1)
  return 0
