"""Evaluation of trained or official checkpoints at one or several resolutions.

Two kinds of checkpoint are read:

* our own orbax checkpoints (``nfnet_jax/train/checkpoint.py``): a workdir, its
  ``checkpoints/`` folder or one ``checkpoints/<step>/`` folder. The train
  state is stored as flat leaves plus JSON metadata with every leaf's tree
  path; :func:`load_train_checkpoint` rebuilds the ``params`` / ``ema_params``
  / ``model_state`` sub-trees from those paths, so evaluation needs neither
  the optimizer nor the exact train-state class;
* DeepMind's official ``F*_haiku.npz`` files (dill pickles of the Haiku params),
  through :func:`nfnet_jax.pretrained.load_official`.

:func:`evaluate` runs the model in inference mode (with weight
standardization folded into the kernels once, `nfnet_jax.export.fold_ws`)
over the config's eval split (every example exactly once, padding masked) at each resolution and
returns top-1, top-5 and mean cross-entropy.
"""
import ast
import json
import os
import re
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

PyTree = Any

# keystr writes dict keys as repr() (either quote style), sequence indices
# as [i] and attributes (NamedTuple fields) as .name.
_TOKEN = re.compile(r"""\[('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\]|\[(\d+)\]|\.([A-Za-z_]\w*)""")


def parse_keystr(path: str) -> List[Any]:
  """Splits a ``jax.tree_util.keystr`` path (``.params['a/~/b']['w']``) into keys."""
  out, pos = [], 0
  for m in _TOKEN.finditer(path):
    if m.start() != pos:
      raise ValueError(f'cannot parse tree path {path!r} at {pos}')
    pos = m.end()
    if m.group(1) is not None:
      out.append(ast.literal_eval(m.group(1)))
    elif m.group(2) is not None:
      out.append(int(m.group(2)))
    else:
      out.append(m.group(3))
  if pos != len(path):
    raise ValueError(f'cannot parse tree path {path!r} at {pos}')
  return out


def subtree_from_paths(paths: Sequence[str], leaves: Sequence[np.ndarray], key: str
                       ) -> Optional[Dict[str, Any]]:
  """The nested dict under the first path component named ``key``.

  E.g. ``key='params'`` turns ``.params['NFNet/~/linear']['w']`` into
  ``{'NFNet/~/linear': {'w': ...}}``. Returns None when no path holds ``key``
  (an empty dict when the sub-tree exists but has no leaves is not
  representable in the flat file, so None also covers empty states).
  """
  tree: Dict[str, Any] = {}
  found = False
  for p, leaf in zip(paths, leaves):
    parts = parse_keystr(p)
    if key not in parts:
      continue
    rest = parts[parts.index(key) + 1:]
    if not rest:
      continue
    found = True
    node = tree
    for r in rest[:-1]:
      node = node.setdefault(r, {})
    node[rest[-1]] = leaf
  return tree if found else None


def find_checkpoint_dir(path: str) -> Tuple[str, Optional[int]]:
  """Maps a workdir / checkpoints dir / step dir to (checkpoints dir, step or None)."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    return os.path.join(path, 'checkpoints'), None
  base = os.path.basename(path.rstrip('/'))
  if base.isdigit() and os.path.isdir(path):
    return os.path.dirname(path), int(base)
  return path, None


def load_train_checkpoint(path: str, step: Optional[int] = None
                          ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Reads one of our orbax checkpoints without knowing the train-state class.

  Args:
    path: a workdir, its ``checkpoints/`` dir or a ``checkpoints/<step>`` dir.
    step: checkpoint step (default: the one named by ``path``, else the newest).

  Returns:
    (trees, meta): ``trees`` maps 'params', 'ema_params', 'model_state' to the
    nested dicts found (missing ones absent); ``meta`` is the saved JSON
    metadata (step, leaf paths, ...).

  Raises:
    FileNotFoundError: if there is no finished checkpoint at ``path``.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir, named_step = find_checkpoint_dir(path)
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f'--checkpoint {path!r}: no such directory')
  mngr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False))
  try:
    steps = sorted(mngr.all_steps())
    if not steps:
      raise FileNotFoundError(f'--checkpoint {path!r}: no finished checkpoint in {ckpt_dir}')
    step = step if step is not None else (named_step if named_step is not None else steps[-1])
    if step not in steps:
      raise FileNotFoundError(f'--checkpoint {path!r}: no step {step}; available {steps}')
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    flat = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  finally:
    mngr.close()
  paths = meta['paths']
  leaves = [np.asarray(flat[f'{i:06d}']) for i in range(len(paths))]
  trees = {}
  for key in ('params', 'ema_params', 'model_state'):
    t = subtree_from_paths(paths, leaves, key)
    if t is not None:
      trees[key] = t
  if 'params' not in trees:
    raise ValueError(f'--checkpoint {path!r}: step {step} holds no params (paths like '
                     f'{paths[:3]})')
  meta = dict(meta)
  meta['step'] = step
  return trees, meta


def load_for_eval(path: str, *, use_ema: bool = True, expected_params=None
                  ) -> Tuple[PyTree, PyTree, Dict[str, Any]]:
  """Params + model state to evaluate from any supported checkpoint.

  Args:
    path: an official ``.npz``/pickle file or one of our checkpoint dirs.
    use_ema: evaluate the EMA params when the checkpoint has them.
    expected_params: a params tree (arrays or ShapeDtypeStructs) of the
      configured model; official files are checked against its names and
      shapes by :func:`nfnet_jax.pretrained.load_official`.

  Returns:
    (params, model_state, info) with info describing the source.
  """
  if os.path.isfile(path):
    from nfnet_jax import pretrained  # pylint: disable=g-import-not-at-top
    params = pretrained.load_official(path, expected_params=expected_params)
    # Official files hold params only: NF models have no state.
    return params, {}, {'source': 'official', 'path': os.path.abspath(path)}
  trees, meta = load_train_checkpoint(path)
  ema = trees.get('ema_params')
  which = 'ema_params' if (use_ema and ema) else 'params'
  params = trees[which]
  state = trees.get('model_state', {})
  return params, state, {'source': 'orbax', 'path': os.path.abspath(path),
                         'step': meta['step'], 'params': which}


def make_eval_fn(model, compute_dtype: str = 'float32'):
  """A jitted ``(params, state, images, labels, mask) -> sums`` for one batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from nfnet_jax.optim import losses  # pylint: disable=g-import-not-at-top
  dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[compute_dtype]

  @jax.jit
  def fn(params, state, images, labels, mask):
    params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating)
                          else p, params)
    out, _ = model.apply(params, state, None, images.astype(dtype), False)
    logits = out['logits'].astype(jnp.float32)
    k5 = min(5, logits.shape[-1])
    return {'loss': jnp.sum(losses.softmax_cross_entropy(logits, labels) * mask),
            'top1': jnp.sum(losses.topk_correct(logits, labels, 1) * mask),
            'top5': jnp.sum(losses.topk_correct(logits, labels, k5) * mask),
            'count': jnp.sum(mask)}
  return fn


def evaluate_batches(eval_fn, params, state, batches: Iterable[Mapping[str, np.ndarray]]
                     ) -> Dict[str, float]:
  """Sums the per-batch results; returns top1, top5, loss (means) and count."""
  tot = {'loss': 0.0, 'top1': 0.0, 'top5': 0.0, 'count': 0.0}
  for b in batches:
    images = np.asarray(b['images'])
    images = images.reshape((-1,) + images.shape[-3:])  # pmap layouts -> flat
    labels = np.asarray(b['labels']).reshape(-1).astype(np.int32)
    mask = np.asarray(b.get('mask', np.ones(len(labels)))).reshape(-1).astype(np.float32)
    s = eval_fn(params, state, images, labels, mask)
    for k in tot:
      tot[k] += float(s[k])
  n = tot['count']
  if n == 0:
    raise ValueError('the eval split yielded no examples')
  return {'top1': tot['top1'] / n, 'top5': tot['top5'] / n, 'loss': tot['loss'] / n,
          'num_examples': int(n)}


def evaluate(config, checkpoint: str, resolutions: Optional[Sequence[int]] = None, *,
             use_ema: bool = True, max_batches: Optional[int] = None, log=print
             ) -> Dict[str, Any]:
  """Evaluates a checkpoint on ``config``'s eval split at each resolution.

  Args:
    config: the full experiment config (model, data, compute_dtype).
    checkpoint: official file or our workdir/checkpoint dir.
    resolutions: eval image sizes (default: ``config.data.eval_image_size``).
    use_ema: use EMA params when present.
    max_batches: stop after this many batches per resolution (quick checks).
    log: progress printer.

  Returns:
    A JSON-ready dict: checkpoint info and ``results[str(res)] = {top1, top5,
    loss, num_examples, seconds}``.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax import export  # pylint: disable=g-import-not-at-top
  from nfnet_jax import models  # pylint: disable=g-import-not-at-top
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
  eval_fn = make_eval_fn(model, getattr(config, 'compute_dtype', 'float32'))
  results = {}
  for r in resolutions:
    t0 = time.time()
    batches = data_lib.eval_iterator(config, layout='host', image_size=r)
    if max_batches is not None:
      batches = (b for i, b in zip(range(max_batches), batches))
    res = evaluate_batches(eval_fn, params, state, batches)
    res['seconds'] = time.time() - t0
    results[str(r)] = res
    log(f"[evaluate] {r}px: top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%  "
        f"loss {res['loss']:.4f}  ({res['num_examples']} images, {res['seconds']:.0f}s)")
  return {'checkpoint': src, 'dataset': config.data.name, 'split': config.data.eval_split,
          'model': dict(config.model), 'results': results}


def write_json(result: Mapping[str, Any], path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=1, default=str)
