"""Evaluation of trained or official checkpoints at one or several resolutions.

Weights are read by the one loader, :func:`nfnet_jax.train.weights.load_weights`:

* our own orbax checkpoints: a workdir, its ``checkpoints/`` folder or one
  ``checkpoints/<step>/`` folder (no optimizer or train-state class needed);
* DeepMind's official ``F*_haiku.npz`` files (dill pickles of the Haiku params),
  checked name for name against the configured model;
* timm files, ``timm:NAME=PATH``.

:func:`evaluate` runs the training loop's eval step
(:func:`nfnet_jax.train.step.make_eval_step`, through the shared runner
:func:`nfnet_jax.train.evaluator.run_eval`) over the config's eval split
(every example exactly once, padding masked) at each resolution and returns
top-1, top-5 and mean cross-entropy, with weight standardization folded into
the kernels once (`nfnet_jax.export.fold_ws`).
"""
import json
import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from nfnet_jax import data as data_lib
from nfnet_jax import export
from nfnet_jax import models
from nfnet_jax.train import evaluator as evaluator_lib
from nfnet_jax.train import parallel as parallel_lib
from nfnet_jax.train import step as step_lib
from nfnet_jax.train import weights as weights_lib

PyTree = Any


def load_for_eval(path: str, *, use_ema: bool = True, expected_params=None
                  ) -> Tuple[PyTree, PyTree, Dict[str, Any]]:
  """Params + model state to evaluate from any supported checkpoint.

  Args:
    path: a weight spec (`nfnet_jax.train.weights`): an official
      ``.npz``/pickle file, one of our checkpoint dirs, or `timm:NAME=PATH`.
    use_ema: evaluate the EMA params when the checkpoint has them.
    expected_params: a params tree (arrays or ShapeDtypeStructs) of the
      configured model; official files are checked against its names and
      shapes by :func:`nfnet_jax.pretrained.load_official`.

  Returns:
    (params, model_state, info) with info describing the source.
  """
  w = weights_lib.load_weights(path, use_ema=use_ema, expected_params=expected_params)
  if w.kind != 'ckpt':
    return w.params, w.model_state, {'source': w.kind, 'path': os.path.abspath(w.path)}
  return w.params, w.model_state, {'source': 'orbax', 'path': os.path.abspath(w.path),
                                   'step': w.step, 'params': w.tree}


def evaluate(config, checkpoint: str, resolutions: Optional[Sequence[int]] = None, *,
             use_ema: bool = True, max_batches: Optional[int] = None, log=print
             ) -> Dict[str, Any]:
  """Evaluates a checkpoint on ``config``'s eval split at each resolution.

  Args:
    config: the full experiment config (model, data, train.eval_compute_dtype,
      train.eval_flip_tta).
    checkpoint: official file or our workdir/checkpoint dir.
    resolutions: eval image sizes (default: ``config.data.eval_image_size``).
    use_ema: use EMA params when present.
    max_batches: stop after this many batches per resolution (quick checks).
    log: progress printer.

  Returns:
    A JSON-ready dict: checkpoint info and ``results[str(res)] = {top1, top5,
    loss, num_examples, flip_tta, seconds}``.
  """
  import jax  # pylint: disable=g-import-not-at-top
  flip_tta = bool(config.train.get('eval_flip_tta', False))
  info = data_lib.dataset_info(config.data)
  resolutions = list(resolutions or [config.data.eval_image_size])
  for r in resolutions:
    if not isinstance(r, int) or r < 1:
      raise ValueError(f'--resolutions must be positive integers, got {r!r}')
  model = models.create_model(config.model, info.num_classes)
  # The expected tree, built for this data set's channels (e.g. 1 for
  # grayscale Fashion-MNIST without grayscale_to_rgb), without computing it.
  channels = info.image_shape[-1]
  res0 = resolutions[0]
  expected, _ = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, False),
                               jax.ShapeDtypeStruct((1, res0, res0, channels), np.float32))
  params, state, src = load_for_eval(checkpoint, use_ema=use_ema, expected_params=expected)
  if export.can_fold(config.model) and not config.model.get('ws_folded'):
    # Standardize the kernels once instead of at every batch (same logits).
    params, folded_config = export.fold_ws(params, config.model)
    model = models.create_model(folded_config, info.num_classes)
  # One device (as the loop's eval step on a one-device mesh): evaluate.py
  # reads the whole eval split in this process. float32 unless
  # config.train.eval_compute_dtype says otherwise: the official experiments
  # evaluate in float32 even after bfloat16 training.
  par = parallel_lib.Parallel(config.parallel.mode, jax.local_devices()[:1])
  eval_step = par.wrap_eval_step(step_lib.make_eval_step(
      model.apply,
      compute_dtype=config.train.get('eval_compute_dtype', 'float32'),
      num_classes=info.num_classes, flip_tta=flip_tta))
  params, state = par.put_replicated(params), par.put_replicated(state)
  results = {}
  for r in resolutions:
    t0 = time.time()
    batches = data_lib.eval_iterator(config, layout='host', image_size=r,
                                     process_index=0, process_count=1,
                                     local_device_count=1)
    if max_batches is not None:
      batches = (b for i, b in zip(range(max_batches), batches))
    m = evaluator_lib.eval_metrics(evaluator_lib.run_eval(
        eval_step, par, params, state, batches))
    if m['count'] == 0:
      raise ValueError('the eval split yielded no examples')
    res = {'top1': m['top1'], 'top5': m['top5'], 'loss': m['loss'],
           'num_examples': m['count'], 'flip_tta': flip_tta,
           'seconds': time.time() - t0}
    results[str(r)] = res
    log(f"[evaluate] {r}px: top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%  "
        f"loss {res['loss']:.4f}  ({res['num_examples']} images, {res['seconds']:.0f}s)")
  return {'checkpoint': src, 'dataset': config.data.name, 'split': config.data.eval_split,
          'model': dict(config.model), 'results': results}


def write_json(result: Mapping[str, Any], path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=1, default=str)
