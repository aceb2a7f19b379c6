"""Paper-style alpha x AGC-lambda sweep on Fashion-MNIST (CPU, under an hour).

    python scripts/sweep.py --config configs/sweeps/alpha_clipping.py \
        --workdir workdirs/alpha_clipping [--parallel 2]

The quickstart NF-ResNet (configs/fashion_mnist.py) trained briefly at a
large batch and an aggressive learning rate with almost no warm-up: the
regime where the NFNet paper finds unclipped NF-ResNets unstable and AGC
(lambda ~0.01-0.16 depending on batch size) lets them train. The grid is
``get_sweep()``: residual scale alpha x clipping lambda (None = no AGC).

``optimizer.clipping`` is declared with ``field_type=object`` so that the
command-line override ``--config.optimizer.clipping=None`` works (a plain
float field refuses None on the command line).
"""
import importlib.util
import os

from ml_collections import config_dict

ALPHAS = (0.2, 0.5, 1.0)
CLIPPINGS = (0.01, 0.04, 0.16, None)


def _base():
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'fashion_mnist.py')
  spec = importlib.util.spec_from_file_location('fashion_mnist_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('')


def get_config(arg=None):
  """The quickstart model at batch 1024 with a high LR, 2 epochs.

  Args:
    arg: 'tiny' for a few-step smoke test; otherwise ignored.
  """
  c = _base()
  batch = 1024
  c.train.batch_size = batch
  c.optimizer.base_lr = 0.4            # peak LR 1.6 at batch 1024 (4x the quickstart's rule)
  c.optimizer.lr_batch_base = 256
  c.optimizer.warmup_steps = 5         # almost no warm-up: stresses stability
  c.train.total_steps = 2 * 60_000 // batch   # 2 epochs = 117 steps
  c.optimizer.ema_decay = None         # judge the raw params: EMA would hide blow-ups
  c.optimizer.clipping = config_dict.FieldReference(0.04, field_type=object)
  c.optimizer.label_smoothing = 0.0
  c.train.eval_every = 0
  c.train.log_every = 10
  c.train.checkpoint_every = 0
  c.train.keep_checkpoints = 1
  c.train.nonfinite = 'skip'
  c.train.max_consecutive_nonfinite = 10
  if arg == 'tiny':
    c.train.total_steps = 3
    c.train.batch_size = 64
  return c


def get_sweep():
  """alpha x lambda, lambda=None meaning no AGC."""
  return [{'model.alpha': a, 'optimizer.clipping': lam} for a in ALPHAS for lam in CLIPPINGS]
