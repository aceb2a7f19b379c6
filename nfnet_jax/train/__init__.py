"""Training: the per-device step, pmap/shard_map wrappers, loop, checkpoints."""
from nfnet_jax.train.validate import validate_config
from nfnet_jax.train.loop import train_and_evaluate

__all__ = ['train_and_evaluate', 'validate_config']
