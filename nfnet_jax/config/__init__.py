"""Configs: the schema (every field) and the loader/override parser.

The bottom layer: imports nothing of the package but `nfnet_jax.errors`
and `nfnet_jax.utils`. Validation spans the parts, so it lives above them
(`nfnet_jax.train.validate.validate_config`).

``from nfnet_jax import config as config_lib; config_lib.base_config()`` keeps
working: the schema's public names are re-exported here.
"""
from nfnet_jax.config.schema import apply_local_imagenet_mode
from nfnet_jax.config.schema import apply_official_schedule
from nfnet_jax.config.schema import apply_local_mode
from nfnet_jax.config.schema import add_nf_options
from nfnet_jax.config.schema import base_config
from nfnet_jax.config.schema import CLASSIFIER_MODULE
from nfnet_jax.config.schema import CLASSIFIER_WEIGHT
from nfnet_jax.config.schema import COMPUTE_DTYPES
from nfnet_jax.config.schema import DATASET_DEFAULTS
from nfnet_jax.config.schema import DISTRIBUTED
from nfnet_jax.config.schema import apply_dataset_defaults
from nfnet_jax.config.schema import IMAGENET_TRAIN_EXAMPLES
from nfnet_jax.config.schema import official_train_steps
from nfnet_jax.config.schema import official_warmup_steps
from nfnet_jax.config.schema import PARALLEL_MODES
from nfnet_jax.config.schema import parse_config_arg
from nfnet_jax.config.schema import use_fashion_mnist
from nfnet_jax.config.load import ConfigError
from nfnet_jax.config.load import load_config
from nfnet_jax.config.load import parse_value
