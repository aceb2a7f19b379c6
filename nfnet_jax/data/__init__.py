"""Input pipelines (tfds / tf.data): ImageNet, Fashion-MNIST, any tfds set."""
from nfnet_jax.data.datasets import apply_dataset_defaults
from nfnet_jax.data.datasets import DATASET_DEFAULTS
from nfnet_jax.data.datasets import dataset_info
from nfnet_jax.data.datasets import DatasetInfo
from nfnet_jax.data.datasets import validate_data_config
from nfnet_jax.data.pipeline import DataIterator
from nfnet_jax.data.pipeline import eval_iterator
from nfnet_jax.data.pipeline import train_iterator

__all__ = [
    'apply_dataset_defaults', 'DATASET_DEFAULTS', 'dataset_info',
    'DatasetInfo', 'validate_data_config', 'DataIterator', 'eval_iterator',
    'train_iterator',
]
