"""Study: images per device -- BatchNorm (per device / synced), GroupNorm, WS+GroupNorm, NF.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python scripts/sweep.py \
        --config configs/studies/normalizers.py \
        --workdir workdirs/studies/normalizers --launcher inproc
    python scripts/report.py workdirs/studies/normalizers --out docs/studies/normalizers_results

BatchNorm's statistics come from each device's examples (the official
experiments' setting): with few images per device they are noisy, and the
moving averages used at test time no longer match them. Wu & He (2018):
ResNet-50 on ImageNet at 2 images per GPU has 10.6 points lower error with
GroupNorm than with BatchNorm, GroupNorm nearly flat across per-GPU batches
while BatchNorm degrades below ~16. The NF-ResNet paper: NF-ResNets are far
better than BN-ResNets at very small batches. Here: the five normalizations
(``common.ARMS``: BN per device, BN synced over the global batch with
``model.bn_cross_replica``, GroupNorm, WS+GroupNorm, NF-ResNet; the same
tiny pre-activation bottleneck shape) on **8 devices** at 2, 4, 8 and 32
images per device (global batch 16 to 256), the same ``IMAGES_SEEN`` images
drawn from the first ``TRAIN_EXAMPLES`` Fashion-MNIST training images (no
augmentation) for every cell, the peak LR ``BASE_LR`` x batch / 256, 5 seeds.

On a CPU the 8 devices are XLA's fake host devices (the XLA_FLAGS above,
set before JAX starts); on 8 accelerators the same config runs unchanged.
``parallel.num_devices=8`` refuses to run on fewer devices.

Variants: (default) the study; ``pilot``: where the widest batch stops
rising (every arm at 32 per device on 1,000 or 2,000 images for 32,000 to
128,000 images seen; seed 0);
``nf_agc``: the NF arm at 32 per device with AGC (lambda ``NF_AGC_CLIPPING``),
5 seeds: whether the NF-ResNet's slow start at the widest batch (3 of 5
seeds short of fitting their images in the study) is the instability AGC is
built to remove;
``local``: tiny, 3 steps, BN and NF at 2 per device (tests).
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    'nfnet_study_common', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'common.py'))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

DEVICES = 8
PER_DEVICE = (2, 4, 8, 32)
ARMS = ('bn', 'bn_sync', 'gn', 'ws_gn', 'nf')
SEEDS = (0, 1, 2, 3, 4)
# The first TRAIN_EXAMPLES training images without augmentation, IMAGES_SEEN
# images drawn per run (32 epochs) for every cell: the pilot
# (docs/studies/normalizers.md) found the 32-per-device arms level from
# 64,000 to 128,000 images seen.
TRAIN_EXAMPLES = 2_000
TRAIN_SPLIT = f'train[:{TRAIN_EXAMPLES}]'
IMAGES_SEEN = 64_000
EPOCHS = IMAGES_SEEN / TRAIN_EXAMPLES
BASE_LR = 0.2            # peak LR per 256 images, scaled linearly with the batch
WIDTHS = (16, 32, 64, 128)
STEM_WIDTH = 8
EVAL_SPLIT = 'test[:5000]'
# Pad-crop + flip delay the fit: with them, 2,000 images and 64,000 seen
# (250 steps at batch 256) reached only 78-84% train top-1 and test top-1
# still rose 2-6 points from 32,000 seen (the pilot's first attempt).
NO_AUGMENTATION = dict(train_crop='none', random_flip=False)

# The pilot (``:pilot``): every arm at 32 per device (the fewest steps per
# epoch) on the first N training images for budgets of PILOT_SEEN images seen
# (PILOT_SEEN / N epochs, own schedule each), train top-1 on the subset at
# the end, seed 0: where does the widest batch stop rising?
# configs/studies/clipping_batch.py: at batch 256 and peak LR 0.2 the NF-ResNet
# diverged in 5 of 5 seeds without AGC and trained in 5 of 5 with 0.16, its
# best lambda there.
NF_AGC_CLIPPING = 0.16

PILOT_SUBSETS = (1_000, 2_000)
PILOT_SEEN = (32_000, 64_000, 128_000)


def _opts(arg):
  return common.study_options(arg, 'normalizers', ('local', 'pilot', 'nf_agc'))


def subset_point(batch: int, examples: int = TRAIN_EXAMPLES, seen: int = IMAGES_SEEN,
                 local: bool = False) -> dict:
  """Overrides training on the first ``examples`` training images until ``seen``
  images have been drawn (``seen / examples`` epochs), at global ``batch``;
  train top-1 measured on those images at the end."""
  split = f'train[:{examples}]'
  return dict(common.batch_point(batch, seen / examples, local, examples=examples),
              **{'data.train_split': split, 'data.train_eval_split': split,
                 'data.shuffle_buffer': examples})


def get_config(arg=''):
  """The study's base config (NF arm, 32 per device); the sweep sets the rest."""
  local = 'local' in _opts(arg)
  c = common.study_base('nf', DEVICES * PER_DEVICE[-1], EPOCHS, local=local)
  c.parallel.num_devices = DEVICES
  c.optimizer.base_lr = BASE_LR
  c.data.update(NO_AUGMENTATION)
  c.data.eval_split = common.LOCAL_EVAL_SPLIT if local else EVAL_SPLIT
  c.data.train_split = c.data.train_eval_split = TRAIN_SPLIT
  c.data.shuffle_buffer = TRAIN_EXAMPLES
  if not local:
    for key, value in subset_point(DEVICES * PER_DEVICE[-1]).items():
      common._set(c, key, value)  # pylint: disable=protected-access
    c.model.widths = WIDTHS
    c.model.stem_width = STEM_WIDTH
  if 'nf_agc' in _opts(arg):
    c.optimizer.clipping = NF_AGC_CLIPPING
    c.optimizer.clip_exclude = common.AGC_EXCLUDE
  return c


def get_sweep(arg=''):
  """seed x images per device x arm (seeds outermost: an unfinished study has whole
  seeds of every cell); ``local``: BN and NF at 2 per device, seed 0;
  ``nf_agc``: the NF arm with AGC at 32 per device, 5 seeds."""
  opts = _opts(arg)
  if 'local' in opts:
    return [dict(common.ARMS[a], **subset_point(DEVICES * 2, local=True), seed=0)
            for a in ('bn', 'nf')]
  if 'pilot' in opts:
    return [dict(common.ARMS[a], **subset_point(DEVICES * PER_DEVICE[-1], n, seen), seed=0)
            for n in PILOT_SUBSETS for seen in PILOT_SEEN for a in ARMS]
  if 'nf_agc' in opts:
    return [dict(common.ARMS['nf'], **subset_point(DEVICES * PER_DEVICE[-1]), seed=s)
            for s in SEEDS]
  return [dict(common.ARMS[a], **subset_point(DEVICES * n), seed=s)
          for s in SEEDS for n in PER_DEVICE for a in ARMS]
