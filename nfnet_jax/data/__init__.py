"""Input pipelines (tfds / tf.data): ImageNet, Fashion-MNIST, any tfds set.

The names below are resolved lazily: `datasets` (dataset metadata, config
defaults and validation) needs only numpy, while the pipelines need
TensorFlow, whose import takes ~6 s. Configs and the config validator import
`nfnet_jax.data.datasets` and so stay fast; TensorFlow is imported on first
use of `train_iterator`, `eval_iterator` or `DataIterator`.
"""
import importlib

_EXPORTS = {
    'apply_dataset_defaults': 'datasets',
    'DATASET_DEFAULTS': 'datasets',
    'dataset_info': 'datasets',
    'DatasetInfo': 'datasets',
    'validate_data_config': 'datasets',
    'DataIterator': 'pipeline',
    'eval_iterator': 'pipeline',
    'train_iterator': 'pipeline',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f'nfnet_jax.data.{_EXPORTS[name]}')
    return getattr(module, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + __all__)
