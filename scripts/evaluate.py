#!/usr/bin/env python
"""Evaluates a checkpoint: top-1, top-5 and loss at one or several resolutions.

  python scripts/evaluate.py --config configs/fashion_mnist.py \
      --checkpoint workdirs/quickstart [--resolutions 28,32] [--out results.json]
  python scripts/evaluate.py --config configs/nfnet.py:F0 \
      --checkpoint F0_haiku.npz --resolutions 224,256,320 \
      --config.data.data_dir=/data/tfds

--checkpoint is one of our workdirs (its newest orbax checkpoint; EMA params
when present, --use_ema=false for the raw params), a checkpoints/<step> dir,
or an official DeepMind F*_haiku.npz file. --config.a.b=v overrides work as in
scripts/train.py. Results are printed and written as JSON to --out (default:
<workdir>/eval_results.json for our checkpoints, ./eval_results.json else).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top

_CONFIG = flags.DEFINE_string('config', None, 'experiment config file (file.py[:arg]); '
                              'overrides with --config.a.b=v')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None,
                                  'workdir, checkpoints/<step> dir or official F*_haiku.npz')
_RESOLUTIONS = flags.DEFINE_list('resolutions', None,
                                 'eval resolutions (default: config.data.eval_image_size)')
_OUT = flags.DEFINE_string('out', None, 'output JSON path')
_USE_EMA = flags.DEFINE_bool('use_ema', True, 'evaluate EMA params when the checkpoint has them')
_MAX_BATCHES = flags.DEFINE_integer('max_batches', None,
                                    'stop after this many eval batches per resolution')
flags.mark_flags_as_required(['config', 'checkpoint'])


def main(argv, overrides):
  del argv
  config = config_load.exit_on_error(config_load.load_config, _CONFIG.value, overrides)
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  from nfnet_jax.analysis import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  try:
    resolutions = [int(r) for r in _RESOLUTIONS.value] if _RESOLUTIONS.value else None
  except ValueError:
    raise app.UsageError(f'--resolutions must be integers, got {_RESOLUTIONS.value}')
  ckpt = _CHECKPOINT.value
  if not os.path.exists(ckpt):
    raise app.UsageError(f'--checkpoint {ckpt!r} does not exist')
  result = eval_lib.evaluate(config, ckpt, resolutions, use_ema=_USE_EMA.value,
                             max_batches=_MAX_BATCHES.value)
  out = _OUT.value
  if out is None:
    out = (os.path.join(ckpt, 'eval_results.json') if os.path.isdir(os.path.join(ckpt, 'checkpoints'))
           else 'eval_results.json')
  eval_lib.write_json(result, out)
  print(f'[evaluate] wrote {out}')


if __name__ == '__main__':
  config_load.run_absl(main)
