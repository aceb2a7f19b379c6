"""Weight conversion between nfnet_jax and other frameworks (timm)."""
