"""Study: BatchNorm -> GroupNorm -> WS+GroupNorm -> normalizer-free, small vs large batch.

    python scripts/sweep.py --config configs/studies/normalizers.py \
        --workdir workdirs/studies/normalizers --parallel 1
    python scripts/report.py workdirs/studies/normalizers

The lineage the NF papers build on: BatchNorm degrades at small per-device
batches (its statistics get noisy; Wu & He 2018 show ImageNet error rising
steeply below 16 images per device), GroupNorm does not depend on the batch,
Weight Standardization + GroupNorm (Qiao et al. 2019; BiT) closes most of
GroupNorm's gap to BatchNorm at normal batches, and NF-ResNets drop
normalization altogether. Here in miniature: the four families of
``common.py`` (same widths) on Fashion-MNIST at batch 8 and batch 512 for the
same number of epochs (``EPOCHS``), peak LR 0.1 * batch / 256, 3 seeds each.

Variants: (default) the study; ``local``: a tiny model for 3 steps.
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    'nfnet_study_common', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'common.py'))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

EPOCHS = 0.5
BATCHES = (8, 512)
ARMS = ('bn', 'gn', 'ws_gn', 'nf')
SEEDS = (0, 1, 2)


def _opts(arg):
  return common.study_options(arg, 'normalizers')


def get_config(arg=''):
  """The study's base config (NF arm, batch 512); the sweep sets the rest."""
  local = 'local' in _opts(arg)
  return common.study_base('nf', BATCHES[-1], EPOCHS, local=local)


def get_sweep(arg=''):
  """arm x batch x seed; ``local``: BN and NF at batch 8, seed 0."""
  if 'local' in _opts(arg):
    return [dict(common.ARMS[a], **common.batch_point(8, EPOCHS, True), seed=0)
            for a in ('bn', 'nf')]
  return [dict(common.ARMS[a], **common.batch_point(b, EPOCHS), seed=s)
          for a in ARMS for b in BATCHES for s in SEEDS]
