"""Haiku building blocks for normalizer-free networks."""
from nfnet_jax.nn.activations import (ACTIVATIONS, CHANNEL_AXIS_ACTIVATIONS, GELU_FORMS,
                                      SHAPE_CHANGING_ACTIVATIONS, estimate_gamma,
                                      estimate_gamma_monte_carlo, gaussian_nodes,
                                      get_activation)
from nfnet_jax.nn.layers import (EfficientChannelAttention, SqueezeExcite, StochDepth,
                                 eca_kernel_size, skip_gain, stoch_depth_or_none)
from nfnet_jax.nn.pooling import max_pool
from nfnet_jax.nn.spp import (SPP_KEYS, avg_channel_var, avg_sq_channel_mean,
                             nf_block_schedule, signal_stats, stack_block_stats)
from nfnet_jax.nn.ws_conv import (EPS_FORMS, PLAIN_WS_EPS, TIMM_WS_EPS, WS_EPS, StdConv2D,
                                  WSConv2D, standardize_weight, standardize_weight_plain,
                                  symmetric_padding)

__all__ = [
    'ACTIVATIONS', 'CHANNEL_AXIS_ACTIVATIONS', 'SHAPE_CHANGING_ACTIVATIONS',
    'estimate_gamma', 'estimate_gamma_monte_carlo', 'gaussian_nodes', 'get_activation',
    'EfficientChannelAttention', 'eca_kernel_size', 'SqueezeExcite', 'StochDepth',
    'skip_gain', 'stoch_depth_or_none', 'avg_channel_var',
    'avg_sq_channel_mean', 'signal_stats', 'SPP_KEYS', 'nf_block_schedule',
    'stack_block_stats', 'WS_EPS', 'WSConv2D', 'standardize_weight',
    'GELU_FORMS', 'EPS_FORMS', 'TIMM_WS_EPS', 'symmetric_padding',
    'PLAIN_WS_EPS', 'StdConv2D', 'standardize_weight_plain', 'max_pool',
]
