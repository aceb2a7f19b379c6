"""nfnet-prepare-data: prepares a data set (ImageNet from its tars, or a check).

imagenet2012: checks for ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
in --manual_dir (default DATA_DIR/downloads/manual), lists any that are
missing and where they belong, then runs the tfds preparation with progress
bars (partial tars holding a few classes work). fashion_mnist: checks the
idx files (no preparation needed). Other names: tfds download_and_prepare
(network). Exit status 1 when files are missing.

Examples:
  nfnet-prepare-data --dataset imagenet2012 --data_dir /data/tfds --manual_dir /data/tars
  nfnet-prepare-data --dataset fashion_mnist
"""
import sys
from typing import Optional, Sequence

from nfnet_jax.commands import base
from nfnet_jax.data import fashion_mnist
from nfnet_jax.data import imagenet


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__)
  p.add_argument('--dataset', default='imagenet2012')
  p.add_argument('--data_dir', default=None,
                 help='tfds data_dir (imagenet2012/other) or idx folder (fashion_mnist)')
  p.add_argument('--manual_dir', default=None,
                 help='folder with the manual download (default <data_dir>/downloads/manual)')
  p.add_argument('--no_progress', action='store_true')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  args = p.parse_args(argv)
  if args.dataset == 'fashion_mnist':
    d = args.data_dir or fashion_mnist.DEFAULT_DIR
    missing = fashion_mnist.missing_files(d)
    if missing:
      print(f'Fashion-MNIST idx files missing in {d}: {missing}\n'
            'Install the Debian package dataset-fashion-mnist (files go to '
            f'{fashion_mnist.DEFAULT_DIR}) or copy the four idx(.gz) files '
            'there.', file=sys.stderr)
      return 1
    for split in ('train', 'test'):
      print(f'{split}: {fashion_mnist.num_examples(d, split)} examples in {d}')
    return 0
  if not args.data_dir:
    p.error('--data_dir is required for tfds data sets')
  if args.dataset == 'imagenet2012':
    manual = args.manual_dir or imagenet.default_manual_dir(args.data_dir)
    missing = imagenet.missing_manual_files(manual)
    if missing:
      print(imagenet.missing_files_message(manual, missing), file=sys.stderr)
      return 1
    builder = imagenet.prepare_imagenet2012(args.data_dir, manual,
                                            progress=not args.no_progress)
  else:
    builder = imagenet.prepare_tfds(args.dataset, args.data_dir, args.manual_dir,
                                    progress=not args.no_progress)
  for name, split in builder.info.splits.items():
    print(f'{args.dataset} {name}: {split.num_examples} examples')
  print(f'prepared in {builder.data_dir}')
  return 0
