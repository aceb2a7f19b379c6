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
images per device (global batch 16 to 256), the same ``EPOCHS`` of
Fashion-MNIST for every cell, the peak LR ``BASE_LR`` x batch / 256, 5 seeds.

On a CPU the 8 devices are XLA's fake host devices (the XLA_FLAGS above,
set before JAX starts); on 8 accelerators the same config runs unchanged.
``parallel.num_devices=8`` refuses to run on fewer devices.

Variants: (default) the study; ``pilot``: the budget check (every arm at 32
per device for 0.5-4 epochs, and timed at 2 per device; seed 0);
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
# Passes over the 60,000 training images, the same for every cell (pilot and
# budget: docs/studies/normalizers.md).
EPOCHS = 0.1
BASE_LR = 0.2            # peak LR per 256 images, scaled linearly with the batch
WIDTHS = (16, 32, 64, 128)
STEM_WIDTH = 8
EVAL_SPLIT = 'test[:5000]'


# The pilot (``:pilot``): every arm at 32 per device, one run (with its own
# schedule) per budget in PILOT_EPOCHS -- where does the widest batch's final
# accuracy stop rising? -- and at 2 per device for PILOT_TIMING_EPOCHS (what
# a step costs where the study's time goes); seed 0.
PILOT_EPOCHS = (0.5, 1.0, 2.0, 4.0)
PILOT_TIMING_EPOCHS = 0.05


def _opts(arg):
  return common.study_options(arg, 'normalizers', ('local', 'pilot'))


def get_config(arg=''):
  """The study's base config (NF arm, 32 per device); the sweep sets the rest."""
  local = 'local' in _opts(arg)
  c = common.study_base('nf', DEVICES * PER_DEVICE[-1], EPOCHS, local=local)
  c.parallel.num_devices = DEVICES
  c.optimizer.base_lr = BASE_LR
  c.data.eval_split = common.LOCAL_EVAL_SPLIT if local else EVAL_SPLIT
  c.data.shuffle_buffer = 10_000
  if not local:
    c.model.widths = WIDTHS
    c.model.stem_width = STEM_WIDTH
  return c


def get_sweep(arg=''):
  """seed x images per device x arm (seeds outermost: an unfinished study has whole
  seeds of every cell); ``local``: BN and NF at 2 per device, seed 0."""
  opts = _opts(arg)
  if 'local' in opts:
    return [dict(common.ARMS[a], **common.batch_point(DEVICES * 2, EPOCHS, True), seed=0)
            for a in ('bn', 'nf')]
  if 'pilot' in opts:
    points = [common.batch_point(DEVICES * PER_DEVICE[-1], e) for e in PILOT_EPOCHS]
    points.append(common.batch_point(DEVICES * PER_DEVICE[0], PILOT_TIMING_EPOCHS))
    return [dict(common.ARMS[a], **point, seed=0) for point in points for a in ARMS]
  return [dict(common.ARMS[a], **common.batch_point(DEVICES * n, EPOCHS), seed=s)
          for s in SEEDS for n in PER_DEVICE for a in ARMS]
