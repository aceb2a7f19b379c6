"""Study: NF-ResNet at growing batch sizes, AGC off vs on.

    python scripts/sweep.py --config configs/studies/clipping_batch.py \
        --workdir workdirs/studies/clipping_batch --parallel 1
    python scripts/report.py workdirs/studies/clipping_batch

The NFNet paper (Brock et al. 2021, figure 2) trains NF-ResNet-50 at batch
sizes 256 to 4096 with the LR scaled linearly (0.1 * batch / 256 there) and
finds that without clipping training becomes unstable at large batches,
while Adaptive Gradient Clipping keeps it stable (smaller lambda needed the
larger the batch). Here in miniature: the NF-ResNet of ``common.py`` on
Fashion-MNIST at the quickstart's more aggressive LR rule (peak 0.2 per 256,
so the instability shows up at these small batches), for ``EPOCHS`` epochs at
each batch size, AGC off vs lambda 0.01 and 0.16, 5 seeds each. As in the
paper AGC skips the classifier; it also skips the zero-initialised skip
gains, which AGC's ``max(|W|, eps)`` would otherwise pin near zero (see
``configs/fashion_mnist.py``).

Variants: (default) the study; ``local``: a tiny model for 3 steps.
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    'nfnet_study_common', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'common.py'))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

EPOCHS = 0.5
BASE_LR = 0.2
BATCHES = (256, 1024)
CLIPPINGS = (None, 0.01, 0.16)
SEEDS = (0, 1, 2, 3, 4)


def _opts(arg):
  return common.study_options(arg, 'clipping_batch')


def get_config(arg=''):
  """The NF arm at the study's LR rule, AGC off; the sweep sets the rest."""
  c = common.study_base('nf', BATCHES[0], EPOCHS, local='local' in _opts(arg))
  c.optimizer.base_lr = BASE_LR
  c.optimizer.clip_exclude = common.AGC_EXCLUDE
  return c


def get_sweep(arg=''):
  """batch x clipping x seed; ``local``: batch 32 with AGC off and 0.01, seed 0."""
  if 'local' in _opts(arg):
    return [dict(common.batch_point(32, EPOCHS, True), **{'optimizer.clipping': lam}, seed=0)
            for lam in (None, 0.01)]
  return [dict(common.batch_point(b, EPOCHS), **{'optimizer.clipping': lam}, seed=s)
          for b in BATCHES for lam in CLIPPINGS for s in SEEDS]
