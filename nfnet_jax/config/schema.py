"""The config schema shared by every experiment family.

Every config in ``configs/`` starts from :func:`base_config` and overrides
fields. The field names here are the public interface of the framework
(``--config.optimizer.clipping=0.02`` on the command line); defaults are the
NFNet paper's ImageNet recipe (arXiv 2102.06171) unless a comment says so.
"""
from typing import Any, Callable, Sequence

import ml_collections


IMAGENET_TRAIN_EXAMPLES = 1_281_167

# Allowed values of fields that several layers check (the validator, the
# parallel wrappers, the steps): named once here, at the bottom layer.
COMPUTE_DTYPES = ('float32', 'bfloat16')
PARALLEL_MODES = ('shard_map', 'pmap')
DISTRIBUTED = ('auto', 'on', 'off')
ASYNC_CHECKPOINTS = ('auto', 'on', 'off')

# The final classifier of every nfnet_jax / official model is the top-level
# module's own linear ('NFNet/~/linear', 'NF_ResNet/~/linear'); the
# squeeze-excite linears ('.../squeeze_excite/~/linear') do not match. AGC
# leaves its weight unclipped and fine-tuning re-initialises the module.
CLASSIFIER_MODULE = r'^[^/]+/~/linear'
CLASSIFIER_WEIGHT = CLASSIFIER_MODULE + r'/w$'


# NF models' numerics/layout options; None = official. timm's weights need
# timm's (nfnet_jax.interop.timm.timm_model_config; docs/weights_export.md).
NF_OPTIONS = {
    'gelu_form': None,         # tanh (official) | erf (timm)
    'ws_eps_form': None,       # floor (official) | add (timm)
    'ws_eps': None,            # None: 1e-4 for floor, 1e-5 for add
    'conv_padding': None,      # SAME (official) | symmetric (timm's own models)
    'shortcut': None,          # NF-ResNet: conv (official) | avgpool (timm)
    'attention': None,         # None: the model's/variant's; se | eca | none
    'channel_divisor': None,   # NF-RegNet: None (official int widths) | 8 (timm)
}


def add_nf_options(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the NF options (None) that `model` lacks, so `--config.model.X=` works."""
  for field, value in NF_OPTIONS.items():
    if field not in model:
      model[field] = value
  return model


def official_train_steps(epochs: int, batch_size: int,
                         examples: int = IMAGENET_TRAIN_EXAMPLES) -> int:
  """Training length as DeepMind's experiment files compute it.

  ``(examples * epochs) // batch_size``: the floor is taken once over the whole
  run, not per epoch (``360 * (examples // batch)`` would be 282 steps short
  at batch 4096).
  """
  return (examples * epochs) // batch_size


def official_warmup_steps(epochs: float, batch_size: int,
                          examples: int = IMAGENET_TRAIN_EXAMPLES) -> float:
  """Warm-up length as the official experiments compute it: a float.

  ``epochs * examples / batch_size`` is not rounded there (5 epochs at batch
  4096 are 1563.92 steps); the LR schedule takes fractional warm-ups.
  """
  return epochs * examples / batch_size


def _add_data_fields(c: ml_collections.ConfigDict) -> None:
  """`base_config`'s ``data`` section."""
  # ---- data
  c.data = ml_collections.ConfigDict()
  c.data.name = 'imagenet2012'         # imagenet2012 | fashion_mnist | any tfds image dataset
  c.data.data_dir = None               # tfds data_dir / folder of idx files
  c.data.allow_download = False
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  # A split measured with the eval preprocessing at the final eval, for train
  # top-1 (e.g. the training subset 'train[:5000]'); None: not measured.
  c.data.train_eval_split = None
  c.data.image_size = 192              # train resolution
  c.data.eval_image_size = 256         # test resolution
  c.data.eval_crop_padding = 32        # eval: squash to res+32, centre crop res
  c.data.eval_resize = 'squash'        # squash | aspect
  c.data.train_crop = 'inception'      # inception | pad_crop | none
  c.data.pad_crop_padding = 4          # for train_crop='pad_crop'
  c.data.random_flip = True
  c.data.randaugment_layers = 4
  c.data.randaugment_magnitude = 5
  # 'official': the TPU/EfficientNet level mapping the paper's magnitudes were
  # tuned with; 'increasing': every op stronger with magnitude (see
  # nfnet_jax/data/randaugment.py for both sets of formulas).
  c.data.randaugment_mode = 'official'
  c.data.mixup_alpha = 0.2             # Beta(0.2, 0.2); 0 disables
  c.data.cutmix = True                 # CutMix on half the batch, MixUp on the other half
  # Where RandAugment runs when mixing is on: False (the official NFNet
  # experiment's order) applies it to each mixed example after MixUp/CutMix;
  # True to each example before mixing. Without mixing the two are the same.
  c.data.augment_before_mix = False
  # Random erasing (Zhong et al. 2017; nfnet_jax/data/erasing.py): the
  # probability that a training example gets one rectangle of random pixels
  # (0: off; the paper's value is 0.5), the rectangle's area as a fraction of
  # the image, and the smallest aspect ratio (drawn in [it, 1 / it]).
  c.data.random_erase = 0.0
  c.data.random_erase_area = (0.02, 0.4)
  c.data.random_erase_min_aspect = 0.3
  c.data.grayscale_to_rgb = True
  c.data.shuffle_buffer = 10_000
  c.data.num_parallel_calls = -1       # tf.data.AUTOTUNE
  c.data.prefetch = 2
  c.data.resize_method = 'bicubic'     # bicubic (official) | bilinear | area | nearest
  c.data.mean = None                   # per-channel, [0, 255] units; None: the data set's
  c.data.std = None                    # (ImageNet's for imagenet2012)


def _add_optimizer_fields(c: ml_collections.ConfigDict) -> None:
  """`base_config`'s ``optimizer`` section."""
  # ---- optimizer (the paper's chain: AGC -> coupled wd -> SGD Nesterov -> LR)
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'             # sgd | adam | adamw
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.base_lr = 0.1            # peak LR per 256 examples
  c.optimizer.lr_batch_base = 256      # peak LR = base_lr * batch_size / lr_batch_base
  c.optimizer.schedule = 'cosine'      # cosine | constant
  c.optimizer.min_lr = 0.0             # cosine floor (official NF-RegNet experiment: 0.001)
  c.optimizer.warmup_steps = official_warmup_steps(5, 4096)  # 1563.92
  c.optimizer.weight_decay = 2e-5      # coupled L2, added to the gradient
  # No wd on gains, skip gains, biases and norm scale/offset: the official rule is param
  # name in (b, scale, offset) or containing 'gain'/'bias' (regex on 'module/param').
  c.optimizer.wd_exclude = r'(^|/)(b|scale|offset|[^/]*gain[^/]*|[^/]*bias[^/]*)$'
  c.optimizer.clipping = 0.01          # AGC lambda; None disables AGC
  c.optimizer.clip_eps = 1e-3
  c.optimizer.clip_exclude = CLASSIFIER_WEIGHT  # the classifier weight
  c.optimizer.sam_rho = None           # SAM neighbourhood size; None disables
  c.optimizer.accum_steps = 1          # gradient accumulation over k micro-batches
  c.optimizer.ema_decay = 0.99999      # None disables the parameter EMA
  c.optimizer.label_smoothing = 0.1


def _add_train_fields(c: ml_collections.ConfigDict) -> None:
  """`base_config`'s ``train``, ``parallel`` and ``finetune`` sections."""
  # ---- training loop
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 4096            # global
  c.train.total_steps = official_train_steps(360, 4096)   # 112602
  c.train.eval_batch_size = 1000       # global
  c.train.eval_every = 5000            # steps; 0 = only at the end
  c.train.log_every = 100
  c.train.checkpoint_every = 5000
  c.train.keep_checkpoints = 3
  # A workdir lock whose holder on another host has not refreshed it for
  # this long is stale (taken over); one multi-host process silent this
  # long is lost (the others stop, exit status 75). See fault_tolerance.md.
  c.train.lock_stale_after_s = 300.0
  c.train.lost_host_timeout_s = 30.0
  c.train.nonfinite = 'skip'           # skip | raise
  c.train.max_consecutive_nonfinite = 20
  c.train.eval_with_ema = True
  # The official experiments evaluate in float32 even when they train in
  # bfloat16 (their bf16 cast is for mode == 'train' only).
  c.train.eval_compute_dtype = 'float32'   # 'float32' | 'bfloat16'
  # Test-time augmentation: each eval image's logits averaged with those of
  # its left-right mirror image (two forward passes per image). Off in the
  # papers' protocol; for data sets whose classes are mirror-symmetric.
  c.train.eval_flip_tta = False
  # Persistent XLA compilation cache: a resumed (pre-empted) or repeated run
  # loads its compiled step instead of recompiling it. None disables it.
  c.train.compilation_cache_dir = '~/.cache/nfnet_jax/xla'
  # Checkpoints written in the background (training continues meanwhile);
  # SIGTERM and the final save still wait. auto: on for GPU/TPU, off on CPU
  # (whose cores the write would take from the step).
  c.train.async_checkpoints = 'auto'   # auto | on | off
  # With AGC on: per-module clipped fraction and ||G||/max(||W||, eps)
  # median/max, logged every log_every steps (train/logs/agc.py).
  c.train.agc_telemetry = True
  # 'a,b': a jax.profiler trace of steps a..b into <workdir>/profile ('' = off).
  c.train.profile_steps = ''

  # ---- parallelism
  c.parallel = ml_collections.ConfigDict()
  # shard_map: JAX has kept pmap in maintenance mode since 0.8 and
  # recommends shard_map; pmap stays available (same numbers, tested).
  c.parallel.mode = 'shard_map'        # shard_map | pmap
  c.parallel.distributed = 'auto'      # auto | on | off: jax.distributed.initialize()
  c.parallel.num_devices = 0           # 0: every device; k: the first k devices (single host; tests/debugging)

  # ---- fine-tuning from an official checkpoint (new classifier)
  c.finetune = ml_collections.ConfigDict()
  c.finetune.checkpoint = None         # path to F*_haiku.npz or our checkpoint dir
  c.finetune.reset_classifier = True
  c.finetune.format = 'auto'           # auto (official file / our checkpoint dir) | timm
  c.finetune.timm_name = None          # format='timm': timm model name, e.g. 'dm_nfnet_f0'


def base_config() -> ml_collections.ConfigDict:
  """Returns the full config tree with the paper's ImageNet defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.compute_dtype = 'float32'          # 'float32' | 'bfloat16' (f32 master weights)

  # ---- model: every field except `name` is passed to the model constructor.
  c.model = ml_collections.ConfigDict()
  c.model.name = 'NFNet'               # registry name: NFNet | NFResNet | ResNet
  c.model.variant = 'F0'
  c.model.alpha = 0.2
  c.model.stochdepth_rate = 0.25
  c.model.drop_rate = None             # None: the variant's table value
  c.model.activation = 'gelu'
  c.model.se_ratio = 0.5
  c.model.conv_impl = 'auto'           # grouped convs: auto | xla | split
  add_nf_options(c.model)

  _add_data_fields(c)
  _add_optimizer_fields(c)
  _add_train_fields(c)
  return c


def apply_official_schedule(c: ml_collections.ConfigDict, batch: int, epochs: int) -> None:
  """DeepMind's ImageNet run length: ``epochs`` epochs at ``batch``, 5 of warm-up.

  Steps and warm-up as `official_train_steps` / `official_warmup_steps`
  (e.g. 360 epochs at 4096 and 90 at 1024 are both 112602 steps); evaluates
  every 5000 steps and checkpoints every 2000.
  """
  c.train.batch_size = batch
  c.train.total_steps = official_train_steps(epochs, batch)
  c.optimizer.warmup_steps = official_warmup_steps(5, batch)
  c.train.eval_every = 5000
  c.train.checkpoint_every = 2000


def parse_config_arg(arg: str, config_file: str, default: Any, modifiers: Sequence[str],
                     pick: Callable[[str], Any], allowed: str, example: str):
  """Splits a config's ``arg`` ("variant,modifier,...") into (variant, modifiers).

  Args:
    arg: the comma-separated argument of ``get_config``.
    config_file: the config's path, for the message (``configs/nfnet.py``).
    default: the variant when ``arg`` names none.
    modifiers: the allowed modifiers.
    pick: maps a part to its variant, or None where it names none.
    allowed: what a variant may be, for the message ('a variant (F0, ...)').
    example: a valid ``arg``, for the message.

  Returns:
    (variant, set of modifiers); a later variant wins.

  Raises:
    ValueError: naming the config file, the unknown part and what is allowed.
  """
  variant, mods = default, set()
  for p in [p.strip() for p in (arg or '').split(',') if p.strip()]:
    if p in modifiers:
      mods.add(p)
    elif pick(p) is not None:
      variant = pick(p)
    else:
      raise ValueError(f'{config_file}: unknown argument {p!r}; allowed: {allowed} and '
                       f'modifiers {tuple(modifiers)}, comma-separated, e.g. "{example}".')
  return variant, mods


# Sensible small-image settings for Fashion-MNIST (the base config holds the
# paper's ImageNet values). Config files apply them with
# `apply_dataset_defaults`; explicit overrides afterwards still win.
DATASET_DEFAULTS = {
    'fashion_mnist': dict(
        train_split='train', eval_split='test', image_size=28,
        eval_image_size=28, eval_crop_padding=0, eval_resize='squash',
        train_crop='pad_crop', pad_crop_padding=4, random_flip=True,
        randaugment_layers=0, randaugment_magnitude=0, mixup_alpha=0.0,
        cutmix=False, grayscale_to_rgb=False),
}


def apply_dataset_defaults(data_config):
  """Sets DATASET_DEFAULTS[data_config.name] fields in place (if any)."""
  for k, v in DATASET_DEFAULTS.get(data_config.get('name'), {}).items():
    data_config[k] = v
  return data_config


def use_fashion_mnist(data: ml_collections.ConfigDict, image_size: int) -> None:
  """Points ``config.data`` at Debian's Fashion-MNIST idx files, resized to ``image_size``."""
  data.name = 'fashion_mnist'
  data.data_dir = '/usr/share/datasets/fashion-mnist'
  apply_dataset_defaults(data)
  data.image_size = image_size
  data.eval_image_size = image_size


def apply_local_imagenet_mode(c: ml_collections.ConfigDict) -> None:
  """`apply_local_mode` for an ImageNet config: the grey images go through the RGB path.

  Fashion-MNIST's train/test splits stand for ImageNet's; the single grey
  channel is repeated to 3 so the ImageNet model's stem is exercised.
  """
  apply_local_mode(c)
  c.data.grayscale_to_rgb = True
  c.data.train_split = 'train'
  c.data.eval_split = 'test'


def apply_local_mode(c: ml_collections.ConfigDict) -> None:
  """The shared tiny CPU setting of the `local` config variants.

  Trains 10 steps of batch 32 on Fashion-MNIST at 32 px (Debian's idx files)
  so that any config family runs end to end on a laptop CPU in about a
  minute; model size is left to the caller.
  """
  use_fashion_mnist(c.data, 32)
  c.train.batch_size = 32
  c.train.eval_batch_size = 1000
  c.train.total_steps = 10
  c.train.log_every = 5
  c.train.eval_every = 0
  c.train.checkpoint_every = 5
  c.optimizer.warmup_steps = 2
