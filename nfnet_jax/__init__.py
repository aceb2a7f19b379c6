"""nfnet_jax: normalizer-free networks in JAX/Haiku."""
__version__ = "0.1.0"
