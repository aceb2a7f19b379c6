"""The one eval runner and metric accumulator (the loop and evaluate.py).

:class:`Evaluator` is the training loop's periodic eval built on them.

:func:`run_eval` feeds host batches through the compiled eval step of
:func:`nfnet_jax.train.step.make_eval_step` (padding each batch to a
multiple of the local devices, padding masked out) and sums its per-batch
totals on the device; :func:`eval_metrics` turns the sums into means.
"""
import time
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nfnet_jax import data as data_lib
from nfnet_jax.train import parallel as parallel_lib

SUM_KEYS = ('loss', 'top1', 'top5', 'count')


def run_eval(eval_step, par: parallel_lib.Parallel, params, model_state,
             batches: Iterable[Mapping[str, np.ndarray]]) -> dict:
  """Sums of the eval step over ``batches``: host floats, keys SUM_KEYS.

  Args:
    eval_step: ``par.wrap_eval_step(make_eval_step(...))``.
    par: the devices the step runs on.
    params, model_state: on the devices (``par.put_replicated``).
    batches: host-layout batches (``images``, ``labels``, optional ``mask``).
  """
  totals, size = None, None
  for batch in batches:
    if size is None:
      # Every batch is padded to the first one's size: one compilation.
      n = len(batch['labels'])
      size = -(-n // par.num_local) * par.num_local
    out = eval_step(params, model_state,
                    par.put_batch(parallel_lib.pad_batch(dict(batch), size)))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  if totals is None:
    return {k: 0.0 for k in SUM_KEYS}
  sums = par.get_metrics(totals)
  return {k: float(sums[k]) for k in SUM_KEYS}


def eval_metrics(sums: Mapping[str, float]) -> dict:
  """Means of the summed eval metrics: top1, top5, loss and the count.

  An empty eval (count 0) gives zeros; callers that must not accept one
  check ``count``.
  """
  count = float(sums['count'])
  denom = max(count, 1.0)
  return {'top1': sums['top1'] / denom, 'top5': sums['top5'] / denom,
          'loss': sums['loss'] / denom, 'count': int(count)}


class Evaluator:
  """The loop's periodic eval: the eval split at the test resolution.

  With ``config.data.train_eval_split`` set (e.g. the training subset
  ``'train[:5000]'``), the final eval also measures top-1 on that split with
  the eval preprocessing (no augmentation, no dropout), so train and test
  accuracy (and their gap) come from the same parameters; it is kept in
  :attr:`train_eval` and the summary's ``final_train_eval``.

  Evaluates the EMA params when ``config.train.eval_with_ema`` (and the EMA
  is on), writes ``eval/*`` scalars, logs one line, and keeps the best and
  the last result (seeded on resume from the rows already in
  ``metrics.jsonl``).
  """

  def __init__(self, config, par, eval_step, writer, topology: dict,
               rows: Iterable[dict] = ()):
    self.config = config
    self.par = par
    self.eval_step = eval_step
    self.writer = writer
    self.topology = topology
    self.use_ema = bool(config.train.eval_with_ema
                        and config.optimizer.ema_decay is not None)
    self.decode_errors = 0
    self.best, self.last = None, None
    # The final eval on data.train_eval_split (None when not configured).
    self.train_eval = None
    for row in rows:
      if row.get('split') == 'eval':
        self._record(row)

  def _record(self, result: dict, final: bool = False) -> None:
    # The final eval wins a tie: the summary then names the final params.
    self.last = result
    top1, best = result.get('eval/top1', -1), self.best
    if best is None or top1 > best['eval/top1'] or (
        final and top1 == best['eval/top1']):
      self.best = result

  def __call__(self, state, step: int, final: bool = False) -> dict:
    t0 = time.time()
    size = self.config.data.eval_image_size
    it = data_lib.eval_iterator(self.config, layout='host', image_size=size,
                                **self.topology)
    params = state.ema_params if self.use_ema else state.params
    m = eval_metrics(run_eval(self.eval_step, self.par, params,
                              state.model_state, it))
    self.decode_errors = int(getattr(it, 'decode_errors', 0) or 0)
    result = {'eval/top1': m['top1'], 'eval/top5': m['top5'],
              'eval/loss': m['loss'], 'eval/count': m['count'],
              'eval/image_size': int(size), 'eval/ema': self.use_ema}
    self.writer.write(step, 'eval', result)
    self.writer.log(
        f'[eval] step {step}: top-1 {100 * m["top1"]:.2f}% top-5 '
        f'{100 * m["top5"]:.2f}% loss {m["loss"]:.4f} ({m["count"]} images, '
        f'{time.time() - t0:.1f}s)')
    result = dict(result, step=step)
    self._record(result, final)
    if final and self.config.data.get('train_eval_split'):
      self.train_eval = self._eval_train_split(state, step, params, size)
    return result

  def _eval_train_split(self, state, step: int, params, size) -> dict:
    """Top-1 on ``data.train_eval_split`` (eval preprocessing: no augmentation)."""
    t0 = time.time()
    split = self.config.data.train_eval_split
    it = data_lib.eval_iterator(self.config, layout='host', image_size=size,
                                split=split, **self.topology)
    m = eval_metrics(run_eval(self.eval_step, self.par, params, state.model_state, it))
    self.decode_errors += int(getattr(it, 'decode_errors', 0) or 0)
    result = {'train_eval/top1': m['top1'], 'train_eval/top5': m['top5'],
              'train_eval/loss': m['loss'], 'train_eval/count': m['count'],
              'train_eval/split': str(split)}
    self.writer.write(step, 'train_eval', {k: v for k, v in result.items()
                                           if not k.endswith('/split')})
    self.writer.log(
        f'[eval] step {step}: {split}: top-1 {100 * m["top1"]:.2f}% loss {m["loss"]:.4f} '
        f'({m["count"]} images, eval preprocessing, {time.time() - t0:.1f}s)')
    return dict(result, step=step)
