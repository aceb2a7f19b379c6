"""Optimizer stack of the NFNet recipe: AGC, masked weight decay, SGD-Nesterov
with warm-up + cosine LR, SAM / accumulation options, parameter EMA, losses."""
from nfnet_jax.optim.agc import AdaptiveGradClipState
from nfnet_jax.optim.agc import CLASSIFIER_REGEX
from nfnet_jax.optim.agc import adaptive_grad_clip
from nfnet_jax.optim.agc import agc_telemetry
from nfnet_jax.optim.agc import agc_unit_counts
from nfnet_jax.optim.agc import unitwise_norm
from nfnet_jax.optim.builder import OPTIMIZERS
from nfnet_jax.optim.builder import SAM_MODES
from nfnet_jax.optim.builder import SCHEDULES
from nfnet_jax.optim.builder import build_optimizer
from nfnet_jax.optim.builder import sam_perturbation
from nfnet_jax.optim.builder import validate_optimizer_config
from nfnet_jax.optim.builder import warmup_cosine_schedule
from nfnet_jax.optim.ema import ema_decay
from nfnet_jax.optim.ema import update_ema
from nfnet_jax.optim.losses import softmax_cross_entropy
from nfnet_jax.optim.losses import topk_correct
from nfnet_jax.optim.masks import make_mask
from nfnet_jax.optim.masks import param_paths

__all__ = [
    'AdaptiveGradClipState', 'CLASSIFIER_REGEX', 'adaptive_grad_clip',
    'agc_telemetry', 'agc_unit_counts',
    'unitwise_norm', 'OPTIMIZERS', 'SAM_MODES', 'SCHEDULES', 'build_optimizer',
    'sam_perturbation',
    'validate_optimizer_config', 'warmup_cosine_schedule', 'ema_decay',
    'update_ema', 'softmax_cross_entropy', 'topk_correct', 'make_mask',
    'param_paths',
]
