"""What the normalizer-free models share (NFNet, NF-ResNet, NF-RegNet).

* building blocks: `init_fn`, the numerics options (`ws_conv_options`,
  `ws_conv_maker`), the official skip path (`nf_shortcut`), the start and
  end of every NF bottleneck (`nf_block_entry`, `nf_residual`) and the
  blocks-then-head forward pass (`nf_blocks_and_head`). Functions that apply
  Haiku modules are called inside a module's `__call__` with modules the
  caller built (and named), so parameter names stay the caller's;
* config validation without tracing: `bad_field`, `check_nf_common`,
  `check_group_width` and `nf_validator`, which builds a model module's
  `validate_config`.
"""
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import haiku as hk
import jax.numpy as jnp
import numpy as np

from nfnet_jax import nn as nfnn
from nfnet_jax.nn.grouped_conv import IMPLS
from nfnet_jax.utils import is_number
from nfnet_jax.utils import is_pos_int


def init_fn(value: Union[float, Callable]) -> Callable:
  """A Haiku initializer from a constant or an initializer."""
  if callable(value):
    return value
  return hk.initializers.Constant(float(value))


# Numerics options shared by the NF models; the defaults are the official ones.
NUMERICS_FIELDS = ('gelu_form', 'ws_eps_form', 'ws_eps', 'conv_padding', 'ws_folded')
CONV_PADDINGS = ('SAME', 'symmetric')


def ws_conv_options(ws_eps_form: str = 'floor', ws_eps: Optional[float] = None,
                    conv_padding: str = 'SAME', ws_folded: bool = False) -> dict:
  """WSConv2D keywords for the model-level numerics options.

  Args:
    ws_eps_form: 'floor' (official `rsqrt(max(N var, eps))`) or 'add'
      (timm's `rsqrt(N (var + eps))`).
    ws_eps: the eps; None -> 1e-4 for 'floor', 1e-5 (timm's) for 'add'.
    conv_padding: 'SAME' (official, TF-style) or 'symmetric' (PyTorch-style,
      timm's own NF models; also their stem max-pool).
    ws_folded: kernels are pre-standardized (`nfnet_jax.export.fold_ws`):
      no WS at run time and no `gain` params.
  """
  if ws_eps is None:
    ws_eps = nfnn.TIMM_WS_EPS if ws_eps_form == 'add' else nfnn.WS_EPS
  return dict(eps=float(ws_eps), eps_form=ws_eps_form, padding=conv_padding,
              folded=bool(ws_folded))


def ws_conv_maker(conv_impl: str = 'auto',
                  ws_options: Optional[Mapping[str, Any]] = None) -> Callable:
  """`conv(channels, **kwargs)` -> a `WSConv2D` with the model's implementation and numerics."""
  options = dict(ws_options or {})
  return lambda *a, **k: nfnn.WSConv2D(*a, conv_impl=conv_impl, **options, **k)


def nf_shortcut(out, x, stride: int, conv_shortcut):
  """The official NF skip path of a block whose activated input is `out`.

  Strided transitions: 2x2 average pool (SAME) then the 1x1 `conv_shortcut`;
  a channel change at stride 1: `conv_shortcut(out)`; otherwise the raw `x`.
  `conv_shortcut` is None when the block has no projection.
  """
  if stride > 1:
    shortcut = hk.avg_pool(out, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1),
                           padding='SAME')
    return conv_shortcut(shortcut) if conv_shortcut is not None else shortcut
  if conv_shortcut is not None:
    return conv_shortcut(out)
  return x


def nf_block_entry(block: hk.Module, x, shortcut: Optional[Callable] = None):
  """The start of every NF bottleneck: `act(x) * beta`, the skip path, conv0, act, conv1.

  Call it inside the block's `__call__`.

  Args:
    block: the block; its `activation`, `beta` (input scale, 1 / expected
      std), `conv0` (1x1) and `conv1` (the strided 3x3) are applied, and
      for the official skip path its `stride` and `conv_shortcut`.
    x: the block input.
    shortcut: `(activated input, x) -> skip path output`; None: the official
      `nf_shortcut`.

  Returns:
    (conv1's output, the shortcut output).
  """
  out = block.activation(x) * block.beta
  if shortcut is None:
    skip = nf_shortcut(out, x, block.stride, block.conv_shortcut)
  else:
    skip = shortcut(out, x)
  return block.conv1(block.activation(block.conv0(out))), skip


def set_variant(module: hk.Module, model: str, variant: str,
                depths: Optional[Sequence[int]], widths: Optional[Sequence[int]]) -> dict:
  """Looks `variant` up in `module.VARIANTS` and sets the fields it gives.

  Sets `module.variant`, `train_imsize`, `test_imsize`, `depth_pattern` and
  `width_pattern` (`depths` / `widths` override the variant's).

  Returns:
    The variant's row of the table.

  Raises:
    ValueError: an unknown variant.
  """
  if variant not in module.VARIANTS:
    raise ValueError(f'Unknown {model} variant {variant!r}; allowed: {sorted(module.VARIANTS)}')
  row = module.VARIANTS[variant]
  module.variant = variant
  module.train_imsize, module.test_imsize = row['train_imsize'], row['test_imsize']
  module.depth_pattern = tuple(depths if depths is not None else row['depth'])
  module.width_pattern = tuple(widths if widths is not None else row['width'])
  return row


def nf_blocks_and_head(out: jnp.ndarray, blocks: Sequence[Callable], schedule: Sequence[dict],
                       features: Callable, fc: Callable, drop_rate: float,
                       is_training: bool, return_metrics: bool) -> dict:
  """Runs the blocks, then the classifier head; collects SPP statistics.

  Args:
    out: the stem's output, NHWC.
    blocks: NF blocks, each `block(x, is_training=...) -> (out, branch)`.
    schedule: `nfnn.nf_block_schedule` entries, one per block.
    features: applied to the last block's output before the mean pool (an
      activation, or final conv then activation).
    fc: the classifier.
    drop_rate: dropout on the pooled features while training.
    is_training: training mode (dropout, stochastic depth).
    return_metrics: also return per-block signal-propagation statistics.

  Returns:
    {'logits': [N, num_classes] float32} plus 'spp' with return_metrics.
  """
  stats = []
  for info, block in zip(schedule, blocks):
    out, branch = block(out, is_training=is_training)
    if return_metrics:
      stats.append(dict(nfnn.signal_stats(out),
                        res_avg_var=nfnn.avg_channel_var(branch),
                        expected_var=info['expected_var'],
                        is_transition=info['is_transition']))
  pool = jnp.mean(features(out), axis=(1, 2))
  if is_training and drop_rate > 0.0:
    pool = hk.dropout(hk.next_rng_key(), drop_rate, pool)
  outputs = {'logits': fc(pool).astype(jnp.float32)}
  if return_metrics:
    outputs['spp'] = nfnn.stack_block_stats(stats)
  return outputs


def nf_residual(branch: jnp.ndarray, shortcut: jnp.ndarray, alpha: float,
                stoch_depth: Optional[Callable], skipinit_gain: Optional[Callable],
                is_training: bool):
  """Closes an NF block: `alpha * skip_gain * stochdepth(branch) + shortcut`.

  Call it inside the block's `__call__`: the scalar `skip_gain` parameter is
  then the block's own (`<block>/skip_gain`, as officially).

  Args:
    branch: the residual branch output.
    shortcut: the shortcut output.
    alpha: residual branch scale.
    stoch_depth: a `StochDepth` module, or None.
    skipinit_gain: initializer of the block's scalar `skip_gain`; None: no
      scalar (timm's conv2_gain mode, where conv2's gain plays its part).
    is_training: training mode (stochastic depth).

  Returns:
    (block output, the branch before stochastic depth and gain) -- the
    latter for the SPP statistics.
  """
  out = branch
  if stoch_depth is not None:
    out = stoch_depth(out, is_training)
  if skipinit_gain is not None:
    out = out * hk.get_parameter('skip_gain', (), out.dtype, init=skipinit_gain)
  return out * alpha + shortcut, branch


# ---------------------------------------------------------------------------
# Config validation (no tracing)

def bad_field(model: str, field: str, value, allowed: str):
  """Raises the one-line ValueError of a bad `config.model.<field>`."""
  raise ValueError(f'config.model.{field}={value!r} is not valid for {model}; '
                   f'allowed: {allowed}')


def check_nf_common(model: str, model_kwargs: Mapping[str, Any], known: Sequence[str],
                    variants: Mapping[str, Any], num_classes=None) -> dict:
  """Checks the fields NFNet and NF-ResNet share; raises one ValueError.

  Returns:
    The kwargs that are set (None values and `name` dropped), for the
    model-specific checks.
  """
  kw = {k: v for k, v in dict(model_kwargs).items() if v is not None and k != 'name'}
  for field in kw:
    if field not in known:
      bad_field(model, field, kw[field], f'one of the fields {sorted(known)}')
  if num_classes is not None and not is_pos_int(num_classes):
    raise ValueError(f'num_classes={num_classes!r} must be a positive int')
  if 'variant' in kw and kw['variant'] not in variants:
    bad_field(model, 'variant', kw['variant'], str(sorted(variants)))
  if 'activation' in kw:
    act = kw['activation']
    usable = sorted(set(nfnn.ACTIVATIONS) - set(nfnn.SHAPE_CHANGING_ACTIVATIONS))
    if act not in usable:
      extra = (' (glu halves the channel count, so it cannot be a block activation)'
               if act == 'glu' else '')
      bad_field(model, 'activation', act, f'{usable}{extra}')
  if 'alpha' in kw and (not is_number(kw['alpha']) or kw['alpha'] <= 0):
    bad_field(model, 'alpha', kw['alpha'], 'a number > 0')
  for field in ('stochdepth_rate', 'drop_rate'):
    if field in kw and (not is_number(kw[field]) or not 0.0 <= kw[field] < 1.0):
      bad_field(model, field, kw[field], 'a number in [0, 1)')
  if 'se_ratio' in kw and (not is_number(kw['se_ratio']) or kw['se_ratio'] < 0):
    bad_field(model, 'se_ratio', kw['se_ratio'], 'a number >= 0 (0 disables squeeze-excite)')
  for field in ('width', 'bottleneck_ratio'):
    if field in kw and (not is_number(kw[field]) or kw[field] <= 0):
      bad_field(model, field, kw[field], 'a number > 0')
  if 'conv_impl' in kw and kw['conv_impl'] not in IMPLS:
    bad_field(model, 'conv_impl', kw['conv_impl'], str(list(IMPLS)))
  if 'skipinit_gain' in kw and not (is_number(kw['skipinit_gain'])
                                    or callable(kw['skipinit_gain'])):
    bad_field(model, 'skipinit_gain', kw['skipinit_gain'], 'a number or an initializer')
  if 'fc_init' in kw and not callable(kw['fc_init']):
    bad_field(model, 'fc_init', kw['fc_init'], 'None or a Haiku initializer')
  if 'gelu_form' in kw and kw['gelu_form'] not in nfnn.GELU_FORMS:
    bad_field(model, 'gelu_form', kw['gelu_form'], str(list(nfnn.GELU_FORMS)))
  if 'ws_eps_form' in kw and kw['ws_eps_form'] not in nfnn.EPS_FORMS:
    bad_field(model, 'ws_eps_form', kw['ws_eps_form'], str(list(nfnn.EPS_FORMS)))
  if 'ws_eps' in kw and (not is_number(kw['ws_eps']) or kw['ws_eps'] <= 0):
    bad_field(model, 'ws_eps', kw['ws_eps'], 'None or a number > 0')
  if 'conv_padding' in kw and kw['conv_padding'] not in CONV_PADDINGS:
    bad_field(model, 'conv_padding', kw['conv_padding'], str(list(CONV_PADDINGS)))
  if 'ws_folded' in kw and not isinstance(kw['ws_folded'], (bool, np.bool_)):
    bad_field(model, 'ws_folded', kw['ws_folded'], 'True or False')
  for field in ('depths', 'widths', 'stem_widths'):
    v = kw.get(field)
    if v is not None and (isinstance(v, (str, bytes)) or not hasattr(v, '__len__')
                          or len(v) != 4 or not all(is_pos_int(d) for d in v)):
      bad_field(model, field, v, 'None or a list of 4 positive ints')
  return kw


def check_group_width(model: str, field: str, group_width: int, bottlenecks) -> None:
  """Every grouped conv must hold at least one whole group.

  Args:
    model: model name for the message.
    field: the config field that sets the group width.
    group_width: channels per group.
    bottlenecks: (width, how it came about) of every grouped conv's input.
  """
  for width, origin in bottlenecks:
    if width < group_width:
      bad_field(model, field, group_width,
           f'at most the smallest grouped width {width} ({origin}), so that every grouped '
           'conv holds a whole group')


def nf_validator(model: str, known: Sequence[str], variants: Mapping[str, Any],
                 check_specific: Callable[[str, dict], None]) -> Callable:
  """A model module's `validate_config`: `check_nf_common`, then the model's own checks.

  Args:
    model: model name for the messages.
    known: the constructor's config fields.
    variants: the variant table.
    check_specific: `(model, kw)` -> None, raising on the model-specific
      fields; `kw` holds the fields that are set.
  """
  def validate_config(model_kwargs: Mapping[str, Any], num_classes=None) -> None:
    kw = check_nf_common(model, model_kwargs, known, variants, num_classes)
    check_specific(model, kw)
  validate_config.__doc__ = (
      f'Checks {model} constructor kwargs (`config.model` minus `name`), no tracing.\n\n'
      '  Raises:\n'
      '    ValueError: naming `config.model.<field>`, the bad value and what is allowed.\n')
  return validate_config


