"""nfnet-predict: top-5 labels with probabilities for image files or folders.

Classifies images with a trained model, preprocessing them as the model was
evaluated (the record saved with a checkpoint, the official NFNet eval for
F*_haiku.npz, timm's pretrained_cfg for timm files, model.json of an nfnet-
export directory). --from is a training workdir (ckpt:DIR), an official
.npz, timm:NAME=PATH or an export directory. Prints the top labels and
probabilities of each image.

Examples:
  nfnet-predict --from workdirs/quickstart shirt.png boots/
  nfnet-predict --from F0_haiku.npz cat.jpg
  nfnet-predict --from timm:dm_nfnet_f0=dm_nfnet_f0.safetensors cat.jpg --top 3
  nfnet-predict --from exported/quickstart images/ --json_out predictions.json
"""
import json
import sys
from typing import Optional, Sequence

from nfnet_jax.commands import base


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__)
  p.add_argument('--from', dest='source', required=True, help='weights (see above)')
  p.add_argument('images', nargs='+', help='image files or folders of images')
  p.add_argument('--top', type=int, default=5, help='labels per image')
  p.add_argument('--batch', type=int, default=32, help='images per forward pass')
  p.add_argument('--no_ema', action='store_true', help='workdirs: raw params, not EMA')
  p.add_argument('--json_out', default=None, help='also write the predictions as JSON')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  args = p.parse_args(argv)
  if args.top < 1 or args.batch < 1:
    p.error('--top and --batch must be >= 1')
  # JAX, PIL and the models: imported after the flags parse (--help stays fast).
  predict_lib = base.library('nfnet_jax.analysis.predict')
  try:
    paths = predict_lib.list_images(args.images)
    results = predict_lib.predict(args.source, paths, args.top, args.batch, use_ema=not args.no_ema)
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f'nfnet-predict: {e}', file=sys.stderr)
    return base.EXIT_USAGE
  for r in results:
    print(f"{r['path']}: " + ', '.join(f'{label} {prob:.4f}' for label, prob in r['top']))
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump(results, f, indent=1)
  return 0
