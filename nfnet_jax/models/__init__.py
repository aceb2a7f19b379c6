"""Model registry: names -> Haiku module classes, and `create_model`.

Each model module defines the class plus two module-level functions,
`validate_config(model_kwargs, num_classes=None)` and
`min_resolution(model_kwargs)`, which the registry dispatches to.
"""
import importlib
import sys
from typing import Optional

import haiku as hk

# Registry name -> (module path, class name). A model whose file fails to
# import is left out of MODELS (get_model_class still raises its error).
_REGISTRY = {
    'NFNet': ('nfnet_jax.models.nfnet', 'NFNet'),
    'NFResNet': ('nfnet_jax.models.nf_resnet', 'NFResNet'),
    'NFRegNet': ('nfnet_jax.models.nf_regnet', 'NFRegNet'),
    'ResNet': ('nfnet_jax.models.resnet', 'ResNet'),
}


def get_model_class(name: str) -> type:
  """Returns the model class registered under `name`."""
  if name not in _REGISTRY:
    raise ValueError(f'config.model.name={name!r} is not a registered model; '
                     f'allowed: {sorted(_REGISTRY)}')
  module_path, cls_name = _REGISTRY[name]
  return getattr(importlib.import_module(module_path), cls_name)


# name -> class of every registered model (an import error is a bug: it propagates).
MODELS = {name: get_model_class(name) for name in _REGISTRY}


def _as_kwargs(model_config) -> dict:
  if hasattr(model_config, 'to_dict'):
    model_config = model_config.to_dict()
  return dict(model_config)


def _split(model_config):
  kw = _as_kwargs(model_config)
  name = kw.pop('name', 'NFNet')
  cls = get_model_class(name)
  # None means "the variant's / constructor's default".
  kw = {k: v for k, v in kw.items() if v is not None}
  return name, cls, sys.modules[cls.__module__], kw


def validate_model_config(model_config, num_classes: Optional[int] = None) -> None:
  """Checks `config.model` without tracing; ValueError names the bad field."""
  _, _, module, kw = _split(model_config)
  module.validate_config(kw, num_classes=num_classes)


def model_min_resolution(model_config) -> int:
  """Smallest input side length the configured model accepts."""
  _, _, module, kw = _split(model_config)
  return module.min_resolution(kw)


def create_model(model_config, num_classes: int) -> hk.TransformedWithState:
  """Builds `apply(params, state, rng, images, is_training, return_metrics=False)`."""
  _, cls, module, kw = _split(model_config)
  module.validate_config(kw, num_classes=num_classes)

  def forward(images, is_training, return_metrics=False):
    model = cls(num_classes=num_classes, **kw)
    return model(images, is_training=is_training, return_metrics=return_metrics)

  return hk.transform_with_state(forward)


__all__ = ['MODELS', 'get_model_class', 'create_model', 'validate_model_config',
           'model_min_resolution']
