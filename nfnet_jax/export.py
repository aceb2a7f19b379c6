"""Inference export: folded weight standardization, jax.export, SavedModel.

Scaled WS recomputes every kernel from `w` and `gain` at each call. For
inference that work is done once here: `fold_ws` replaces each WS conv's
`{w, gain, bias}` by `{w: standardized kernel, bias}` and sets the model's
`ws_folded` option, under which `WSConv2D` uses `w` as it is (plain conv +
bias; exporters that choke on the WS reduction see ordinary convolutions).

Then two serialized forms of `images -> logits` (batch size symbolic, the
folded weights baked in as constants):
* `export_stablehlo` / `load_stablehlo`: `jax.export` (StableHLO bytes),
  re-loadable with `jax.export.deserialize` and callable on CPU/GPU/TPU;
* `export_saved_model`: a TensorFlow SavedModel through `jax2tf` (native
  serialization), weights as `tf.Variable`s, signature `serving_default`.
"""
import inspect
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nfnet_jax import nn as nfnn
from nfnet_jax import utils
from nfnet_jax.models import create_model
from nfnet_jax.models import get_model_class
from nfnet_jax.models.common import ws_conv_options

PyTree = Any


def _as_dict(model_config) -> dict:
  return dict(model_config.to_dict() if hasattr(model_config, 'to_dict') else model_config)


def can_fold(model_config) -> bool:
  """Whether the configured model has scaled-WS convs and a `ws_folded` option."""
  cls = get_model_class(_as_dict(model_config).get('name', 'NFNet'))
  return 'ws_folded' in inspect.signature(cls.__init__).parameters


def _is_ws_conv(d: Mapping) -> bool:
  return set(d) >= {'w', 'gain', 'bias'} and np.ndim(d['w']) == 4


def fold_ws(params: PyTree, model_config) -> Tuple[dict, dict]:
  """Folds scaled WS and gains into plain conv kernels, once.

  Args:
    params: `{module: {param: array}}` of `create_model(model_config, ...)`.
    model_config: `config.model` (its `ws_eps_form` / `ws_eps` give the WS
      numerics that are folded in).

  Returns:
    (folded params, model config with `ws_folded=True`); the pair computes
    the same logits as the inputs (to float rounding) without WS at run time.

  Raises:
    ValueError: the model has no foldable WS convs, or is folded already.
  """
  cfg = _as_dict(model_config)
  if not can_fold(cfg):
    raise ValueError(f"config.model.name={cfg.get('name')!r} has no scaled-WS convs to fold")
  if cfg.get('ws_folded'):
    raise ValueError('config.model.ws_folded=True: the params are folded already')
  opts = ws_conv_options(cfg.get('ws_eps_form') or 'floor', cfg.get('ws_eps'))
  fold = jax.jit(lambda w, g: nfnn.standardize_weight(w, g, opts['eps'], opts['eps_form']))
  out = {}
  for module, d in params.items():
    if _is_ws_conv(d):
      rest = {k: v for k, v in d.items() if k not in ('w', 'gain')}
      out[module] = dict(rest, w=fold(jnp.asarray(d['w']), jnp.asarray(d['gain'])))
    else:
      out[module] = dict(d)
  return out, dict(cfg, ws_folded=True)


def inference_fn(params: PyTree, model_config, num_classes: int,
                 model_state: Optional[PyTree] = None):
  """`images [N, H, W, C] float32 -> logits [N, num_classes]` with params baked in."""
  model = create_model(model_config, num_classes)
  state = model_state if model_state is not None else {}

  def predict(images):
    return model.apply(params, state, None, images, False)[0]['logits']

  return predict


def _image_spec(image_size: int, channels: int, batch_size: Optional[int]):
  batch = jax.export.symbolic_shape('b')[0] if batch_size is None else batch_size
  return jax.ShapeDtypeStruct((batch, image_size, image_size, channels), jnp.float32)


def export_stablehlo(params: PyTree, model_config, num_classes: int, image_size: int,
                     path: Optional[str] = None, *, channels: int = 3,
                     batch_size: Optional[int] = None, model_state: Optional[PyTree] = None,
                     platforms: Tuple[str, ...] = ('cpu',)) -> jax.export.Exported:
  """Serializes `images -> logits` with `jax.export` (StableHLO).

  Args:
    params, model_config, num_classes, model_state: the model (pass folded
      params and config for inference; any params work).
    image_size: input height and width (fixed in the artifact).
    path: where to write the serialized bytes (None: only return).
    channels: input channels.
    batch_size: fixed batch size; None makes it symbolic (any batch).
    platforms: lowering platforms, e.g. ('cpu', 'cuda').

  Returns:
    The `jax.export.Exported` (call it with `.call(images)`).
  """
  fn = jax.jit(inference_fn(params, model_config, num_classes, model_state))
  exported = jax.export.export(fn, platforms=platforms)(
      _image_spec(image_size, channels, batch_size))
  if path is not None:
    data = exported.serialize()
    utils.atomic_write(path, lambda f: f.write(data), makedirs=True)
  return exported


def load_stablehlo(path: str) -> jax.export.Exported:
  """Reads an artifact of `export_stablehlo`; call it with `.call(images)`."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return jax.export.deserialize(bytearray(data))
  except Exception as e:  # corrupt/truncated files raise assorted errors
    raise ValueError(f'{path} is not a jax.export artifact: {type(e).__name__}: {e}') from None


def export_saved_model(params: PyTree, model_config, num_classes: int, image_size: int,
                       path: str, *, channels: int = 3,
                       model_state: Optional[PyTree] = None) -> None:
  """Writes a TensorFlow SavedModel of `images -> logits` through jax2tf.

  The batch dimension is polymorphic; weights are `tf.Variable`s; the
  signature `serving_default` takes float32 `images` [N, H, W, C].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  model = create_model(model_config, num_classes)
  state = model_state if model_state is not None else {}

  def predict(p, images):
    return model.apply(p, state, None, images, False)[0]['logits']

  hw = f'{image_size}, {image_size}, {channels}'
  tf_fn = jax2tf.convert(predict, polymorphic_shapes=[None, f'(b, {hw})'],
                         with_gradient=False)
  module = tf.Module()
  module.params = tf.nest.map_structure(
      lambda v: tf.Variable(np.asarray(v), trainable=False), params)
  spec = tf.TensorSpec([None, image_size, image_size, channels], tf.float32, name='images')
  module.predict = tf.function(lambda images: {'logits': tf_fn(module.params, images)},
                               input_signature=[spec], autograph=False)
  tf.saved_model.save(module, path, signatures={'serving_default': module.predict})

