"""timm <-> nfnet_jax weights for the NF model families both projects have.

`load_timm(source, name)` turns a timm state dict (or a `.pth` / `.bin` /
`.safetensors` file) into `(model_config, params)` for our Haiku models;
`save_timm(params, model_config, path)` writes the reverse, a file that
`timm.create_model(name)` loads with `strict=True`. torch, timm and
safetensors are optional: they are imported inside these functions only.

The loaded model reproduces timm's predictions: its config carries timm's
numerics (exact-erf GELU, and WS with eps added to the variance,
`rsqrt(N (var + 1e-5))`, where the official code floors `N var` at 1e-4) and,
for timm's own (non-`dm_`) models, its architecture choices (PyTorch-style
symmetric padding; NF-ResNets: average-pool shortcuts). Facts about timm
(v1.0.31, `timm/models/nfnet.py`) the mapping relies on:

* tensors: OIHW conv kernels, `gain` of shape [O, 1, 1, 1]; squeeze-excite
  layers are 1x1 convs (`attn_last.fc1/fc2`); the classifier is `head.fc`;
  our `conv0, conv1, conv1b, conv2, conv_shortcut` are timm's `conv1, conv2,
  conv2b, conv3, downsample.conv`; block k of the flat Haiku list is
  `stages.<stage>.<index in stage>`.
* `dm_nfnet_f*` apply the activation gamma in the activation, as the
  official code does, and have the `skipinit_gain` scalars.
* timm's own models fold gamma into every WS conv instead (`gamma * W`); that
  equals ours wherever a conv reads an activation, and differs by a factor
  gamma at the convs that read something else (the stem's first conv reads
  the image, NFNet's `final_conv` reads a block output), and the classifier
  reads an activation without gamma. The converter moves these factors into
  those convs' `gain` and into the classifier weight (exact up to float
  rounding). They have no `skipinit_gain`: ours is set to 1 on load, and on
  save a trained one is folded into the branch's last conv (gain and bias)
  and, under squeeze-excite, divided out of its first linear layer, which
  sees the scaled activations.
"""
import inspect
import os
import re
import sys
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from nfnet_jax import nn as nfnn
from nfnet_jax import pretrained
from nfnet_jax import utils
from nfnet_jax.models import get_model_class
from nfnet_jax.models.nfnet import NFNET_VARIANTS

INSTALL_HINT = 'pip install -e .[timm]'

# timm's numerics (NfCfg.std_conv_eps = 1e-5, eps added to the variance;
# PyTorch's exact GELU).
TIMM_NUMERICS = {'gelu_form': 'erf', 'ws_eps_form': 'add', 'ws_eps': 1e-5}
# Fields that change predictions slightly but not the weights' meaning:
# weights move between numerics freely (that is how timm got DeepMind's).
NUMERICS_ONLY = ('gelu_form', 'ws_eps_form', 'ws_eps')
# Fields that do not change the parameters or their meaning at inference.
_TRAIN_ONLY = ('drop_rate', 'stochdepth_rate', 'conv_impl', 'fc_init', 'skipinit_gain')
# Fields that only change sizes: with an explicit timm name they may differ
# (timm's create_model(name, depths=..., channels=...) overrides them too);
# the parameter shapes are then checked tensor by tensor.
SIZE_FIELDS = ('variant', 'depths', 'widths', 'stem_widths', 'width', 'stem_width')


class TimmArch(NamedTuple):
  """How one timm model name maps onto our models.

  Attributes:
    config: our `config.model` reproducing timm's numerics.
    gamma_in_conv: timm folds the activation gamma into every WS conv
      (timm's own models) instead of applying it in the activation (`dm_`).
    skip_gain: timm has the `skipinit_gain` scalars.
  """
  config: Dict[str, Any]
  gamma_in_conv: bool
  skip_gain: bool


def _registry() -> Dict[str, TimmArch]:
  archs = {}
  for k in range(7):  # DeepMind's weights, converted by timm
    archs[f'dm_nfnet_f{k}'] = TimmArch(
        dict(name='NFNet', variant=f'F{k}', **TIMM_NUMERICS), False, True)
  for k in range(8):  # timm's own F-series definition
    archs[f'nfnet_f{k}'] = TimmArch(
        dict(name='NFNet', variant=f'F{k}', conv_padding='symmetric', **TIMM_NUMERICS),
        True, False)
  for name in ('nfnet_l0', 'eca_nfnet_l0', 'eca_nfnet_l1', 'eca_nfnet_l2', 'eca_nfnet_l3'):
    if name in NFNET_VARIANTS:  # timm's light NFNets (SiLU, SE or ECA)
      archs[name] = TimmArch(
          dict(name='NFNet', variant=name, conv_padding='symmetric', **TIMM_NUMERICS),
          True, False)
  for depth in (26, 50, 101):
    base = dict(name='NFResNet', variant=f'ResNet{depth}', shortcut='avgpool',
                conv_padding='symmetric', **TIMM_NUMERICS)
    archs[f'nf_resnet{depth}'] = TimmArch(base, True, False)
    # timm's SE: hidden = C / 16 (the official SE-NF-ResNets use C / 4).
    archs[f'nf_seresnet{depth}'] = TimmArch(dict(base, se_ratio=1 / 16), True, False)
    archs[f'nf_ecaresnet{depth}'] = TimmArch(dict(base, attention='eca'), True, False)
  for k in range(6):  # timm's NF-RegNet variant: widths rounded to multiples of 8
    archs[f'nf_regnet_b{k}'] = TimmArch(
        dict(name='NFRegNet', variant=f'B{k}', channel_divisor=8, conv_padding='symmetric',
             **TIMM_NUMERICS), True, False)
  return archs


# timm model name -> TimmArch, for every name covered.
TIMM_ARCHS: Dict[str, TimmArch] = _registry()

# Our module names (after '<root>/~/') -> timm's, outside the blocks.
_TOP = {
    'NFNet': {'stem_conv0': 'stem.conv1', 'stem_conv1': 'stem.conv2',
              'stem_conv2': 'stem.conv3', 'stem_conv3': 'stem.conv4',
              'final_conv': 'final_conv', 'linear': 'head.fc'},
    'NFResNet': {'initial_conv': 'stem.conv', 'linear': 'head.fc'},
    'NFRegNet': {'initial_conv': 'stem.conv', 'final_conv': 'final_conv', 'linear': 'head.fc'},
}
_ROOT = {'NFNet': 'NFNet', 'NFResNet': 'NF_ResNet', 'NFRegNet': 'NF_RegNet'}
_BLOCK = {'NFNet': 'nf_block', 'NFResNet': 'nf_res_block', 'NFRegNet': 'nf_block'}
# Convs a timm-own model scales by an extra gamma (their input is no activation).
_GAMMA_CONVS = {'NFNet': ('stem_conv0', 'final_conv'), 'NFResNet': ('initial_conv',),
                'NFRegNet': ('initial_conv', 'final_conv')}
# NF-RegNets gate the expanded width between the 3x3 and the last conv
# (timm's `attn`), the others the block output (`attn_last`).
_ATTN_LAST = {'NFNet': True, 'NFResNet': True, 'NFRegNet': False}
# Inside a block.
_IN_BLOCK = {'conv0': 'conv1', 'conv1': 'conv2', 'conv1b': 'conv2b', 'conv2': 'conv3',
             'conv_shortcut': 'downsample.conv',
             'squeeze_excite/~/linear': 'attn_last.fc1',
             'squeeze_excite/~/linear_1': 'attn_last.fc2',
             'eca': 'attn_last.conv'}


def supported_names() -> list:
  """The timm model names `load_timm` / `save_timm` cover."""
  return sorted(TIMM_ARCHS)


def timm_model_config(name: str, overrides: Optional[Mapping[str, Any]] = None) -> dict:
  """Our `config.model` (with timm's numerics) for a timm model name.

  Args:
    name: timm model name.
    overrides: fields to change, e.g. {'depths': (1, 1, 1, 1)} for a model
      made by `timm.create_model(name, depths=(1, 1, 1, 1))` (timm's field
      for our `widths` is `channels`).
  """
  return dict(_arch(name).config, **dict(overrides or {}))


def _arch(name: str) -> TimmArch:
  if name not in TIMM_ARCHS:
    raise ValueError(f'timm model name {name!r} is not covered; covered: {supported_names()}')
  return TIMM_ARCHS[name]


def avoid_triton_after_tensorflow() -> None:
  """Keeps torch from importing triton into a process that has TensorFlow.

  Measured with tensorflow-cpu 2.21 and triton 3.8 (torch 2.14.1's): loading
  triton's native module after TensorFlow's segfaults the process (the other
  order works). torch imports triton only to offer `torch.compile` kernels,
  which weight conversion never uses, and treats a failed import as "no
  triton". So once TensorFlow is loaded, and triton is not, its import is
  made to fail.
  """
  if 'tensorflow' in sys.modules and 'triton' not in sys.modules:
    sys.modules['triton'] = None  # `import triton` now raises ImportError


def _import(module: str):
  avoid_triton_after_tensorflow()
  try:
    return __import__(module, fromlist=['_'])
  except ImportError as e:
    raise ImportError(f'{module} is needed for timm weights ({e}); install it with '
                      f'`{INSTALL_HINT}`') from e


# ---------------------------------------------------------------------------
# Architecture comparison


def _effective(model_config: Mapping) -> Tuple[str, dict]:
  """(registry name, every constructor field with defaults filled in)."""
  cfg = dict(model_config.to_dict() if hasattr(model_config, 'to_dict') else model_config)
  name = cfg.pop('name', 'NFNet')
  cls = get_model_class(name)
  sig = inspect.signature(cls.__init__)
  out = {k: p.default for k, p in sig.parameters.items()
         if k not in ('self', 'num_classes', 'name') and p.default is not inspect.Parameter.empty}
  out.update({k: v for k, v in cfg.items() if v is not None})
  # Constructor None = "the variant's value" (e.g. the light NFNets' activation).
  row = getattr(cls, 'VARIANTS', {}).get(out.get('variant'), {})
  out.update({k: row[k] for k, v in out.items() if v is None and k in row})
  out = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in out.items()}
  return name, out


def architecture_differences(model_config: Mapping, name: str,
                             ignore: Tuple[str, ...] = NUMERICS_ONLY) -> list:
  """Fields where `model_config` builds another network than timm's `name`.

  Training-only fields (dropout, stochastic depth, conv implementation,
  initialisers) and, by default, the numerics-only fields are not compared.

  Returns:
    Lines `config.model.<field>=<ours> (timm <name>: <theirs>)`; empty when
    the architectures agree.
  """
  ours_name, ours = _effective(model_config)
  theirs_name, theirs = _effective(_arch(name).config)
  if ours_name != theirs_name:
    return [f'config.model.name={ours_name!r} (timm {name}: {theirs_name!r})']
  skip = set(_TRAIN_ONLY) | set(ignore)
  return [f'config.model.{k}={ours.get(k)!r} (timm {name}: {theirs[k]!r})'
          for k in sorted(set(ours) | set(theirs)) if k not in skip
          and ours.get(k) != theirs.get(k)]


def timm_name_for(model_config: Mapping) -> str:
  """The timm model name whose architecture `model_config` builds.

  Raises:
    ValueError: no covered timm model has that architecture (the message
      names the closest one and the fields that differ).
  """
  cls_name, _ = _effective(model_config)
  diffs = {n: architecture_differences(model_config, n) for n, a in TIMM_ARCHS.items()
           if a.config['name'] == cls_name}
  if not diffs:
    raise ValueError(f'config.model.name={cls_name!r}: no covered timm model is of this kind')
  matches = [n for n, d in diffs.items() if not d]
  if len(matches) == 1:
    return matches[0]
  if matches:
    raise ValueError(f'config.model matches several timm models {matches}; pass name=')
  closest = min(diffs, key=lambda n: len(diffs[n]))
  raise ValueError(f'no covered timm model has the architecture of config.model; the '
                   f'closest, {closest}, differs in: {"; ".join(diffs[closest])}')


# ---------------------------------------------------------------------------
# Name and layout mapping


def _block_positions(name: str, kw: Mapping) -> list:
  """'stages.<s>.<i>' of each block in the flat Haiku order."""
  depths = kw.get('depths') or get_model_class(name).VARIANTS[kw['variant']]['depth']
  return [f'stages.{s}.{i}' for s, d in enumerate(depths) for i in range(d)]


class _Entry(NamedTuple):
  module: str      # our Haiku module path
  param: str       # our param name
  key: str         # timm state-dict key
  kind: str        # conv_w | gain | vec | linear_w | se_w | eca_w | skip


def _entries(model_config: Mapping, shapes: Mapping) -> list:
  """One _Entry per parameter of our model (shapes: {module: {param: shape}})."""
  name, kw = _effective(model_config)
  root = _ROOT[name] + '/~/'
  positions = _block_positions(name, kw)
  block_re = re.compile(rf'^{_BLOCK[name]}(?:_(\d+))?(?:/~/(.+))?$')
  out = []
  for module, params in shapes.items():
    if not module.startswith(root):
      raise ValueError(f'unexpected module {module!r} (not under {root})')
    rest = module[len(root):]
    m = block_re.match(rest)
    if rest in _TOP[name]:
      tmod = _TOP[name][rest]
    elif m:
      pos = positions[int(m.group(1) or 0)]
      if m.group(2) is None:
        tmod = pos
      elif m.group(2) in _IN_BLOCK:
        tmod = f'{pos}.{_IN_BLOCK[m.group(2)]}'
        if not _ATTN_LAST[name]:
          tmod = tmod.replace('.attn_last.', '.attn.')
      else:
        raise ValueError(f'no timm equivalent known for {module!r}')
    else:
      raise ValueError(f'no timm equivalent known for {module!r}')
    for param, shape in params.items():
      if param == 'skip_gain':
        out.append(_Entry(module, param, f'{tmod}.skipinit_gain', 'skip'))
      elif param in ('w', 'b') and rest == 'linear':
        out.append(_Entry(module, param, f'{tmod}.{"weight" if param == "w" else "bias"}',
                          'linear_w' if param == 'w' else 'vec'))
      elif param in ('w', 'b') and 'squeeze_excite' in module:  # 1x1 convs in timm
        out.append(_Entry(module, param, f'{tmod}.{"weight" if param == "w" else "bias"}',
                          'se_w' if param == 'w' else 'vec'))
      elif param == 'w' and rest.endswith('/~/eca'):  # ECA's 1-D kernel [k]
        out.append(_Entry(module, param, f'{tmod}.weight', 'eca_w'))
      elif param == 'w' and len(shape) == 4:
        out.append(_Entry(module, param, f'{tmod}.weight', 'conv_w'))
      elif param == 'gain':
        out.append(_Entry(module, param, f'{tmod}.gain', 'gain'))
      elif param == 'bias':
        out.append(_Entry(module, param, f'{tmod}.bias', 'vec'))
      else:
        raise ValueError(f'no timm equivalent known for {module}/{param}')
  return out


def _to_timm(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == 'conv_w':
    return np.transpose(x, (3, 2, 0, 1))           # HWIO -> OIHW
  if kind == 'gain':
    return np.reshape(x, (-1, 1, 1, 1))
  if kind == 'linear_w':
    return np.transpose(x)                          # [in, out] -> [out, in]
  if kind == 'se_w':
    return np.transpose(x)[:, :, None, None]        # -> 1x1 conv [out, in, 1, 1]
  if kind == 'eca_w':
    return np.reshape(x, (1, 1, -1))                # Conv1d(1, 1, k) weight
  return x


def _timm_shape(shape: tuple, kind: str) -> tuple:
  return tuple(_to_timm(np.empty(shape, np.float32), kind).shape) if shape else ()


def _from_timm(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == 'conv_w':
    return np.transpose(x, (2, 3, 1, 0))            # OIHW -> HWIO
  if kind == 'gain':
    return np.reshape(x, (-1,))
  if kind == 'linear_w':
    return np.transpose(x)
  if kind == 'se_w':
    return np.transpose(x[:, :, 0, 0])
  if kind == 'eca_w':
    return np.reshape(x, (-1,))
  return x


def _timm_shapes(entries, shapes, arch: TimmArch) -> dict:
  return {e.key: _timm_shape(shapes[e.module][e.param], e.kind) for e in entries
          if arch.skip_gain or e.kind != 'skip'}


def expected_state_dict_shapes(name: str, num_classes: int = 1000,
                               overrides: Optional[Mapping[str, Any]] = None) -> dict:
  """{timm key: shape} that timm's `name` has, derived from OUR model.

  Computed with `jax.eval_shape` (nothing compiles); a test compares it with
  `timm.create_model(name).state_dict()` on the meta device.
  """
  arch = _arch(name)
  config = timm_model_config(name, overrides)
  shapes = _expected_shapes(config, num_classes)
  return _timm_shapes(_entries(config, shapes), shapes, arch)


def _gamma(model_config: Mapping) -> float:
  _, kw = _effective(model_config)
  return float(nfnn.ACTIVATIONS[kw['activation']][1])


def _expected_shapes(model_config: Mapping, num_classes: int) -> dict:
  return pretrained.expected_param_shapes(model_config, num_classes)


# ---------------------------------------------------------------------------
# Reading and writing files


def _tensor_to_numpy(v) -> np.ndarray:
  if hasattr(v, 'detach'):  # a torch tensor
    v = v.detach().cpu()
    if v.is_floating_point():
      v = v.float()
    return v.numpy()
  return np.asarray(v)


def read_state_dict(source) -> Dict[str, np.ndarray]:
  """A timm state dict as {key: numpy array} (floats as float32).

  Args:
    source: a mapping {key: tensor or array}, or a path to a `.safetensors`
      file or a torch pickle (`.pth`, `.bin`, `.pt`), possibly wrapping the
      state dict under 'state_dict' or 'model' (timm's training checkpoints).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not a readable state dict.
    ImportError: torch / safetensors missing.
  """
  if isinstance(source, Mapping):
    raw, where = source, 'the given state dict'
  else:
    path = os.fspath(source)
    where = path
    if not os.path.isfile(path):
      raise FileNotFoundError(f'timm weight file {path!r} does not exist')
    try:
      if path.endswith('.safetensors'):
        st = _import('safetensors.torch')
        raw = st.load_file(path)
      else:
        torch = _import('torch')
        raw = torch.load(path, map_location='cpu', weights_only=True)
    except ImportError:
      raise
    except Exception as e:  # truncated/corrupt files raise many error types
      raise ValueError(f'{path} is not a readable timm weight file (.safetensors, or a torch '
                       f'.pth/.bin state dict): {type(e).__name__}: {e}') from None
  if isinstance(raw, Mapping):
    for wrapper in ('state_dict', 'model'):
      if isinstance(raw.get(wrapper), Mapping):
        raw = raw[wrapper]
        break
  if not isinstance(raw, Mapping) or not raw:
    raise ValueError(f'{where}: expected a non-empty state dict {{name: tensor}}, got '
                     f'{type(raw).__name__}')
  out = {}
  for k, v in raw.items():
    k = k[len('module.'):] if isinstance(k, str) and k.startswith('module.') else k
    try:
      out[k] = _tensor_to_numpy(v)
    except Exception as e:
      raise ValueError(f'{where}: entry {k!r} is not a tensor: {e}') from None
  return out


def load_timm(source, name: str, overrides: Optional[Mapping[str, Any]] = None
              ) -> Tuple[dict, dict]:
  """Converts timm weights into our model config and params.

  Args:
    source: a timm state dict, or a `.pth` / `.bin` / `.safetensors` file.
    name: the timm model name (`supported_names()`), e.g. 'dm_nfnet_f0'.
    overrides: changes to the name's config (`timm_model_config`), for
      models made with timm overrides such as `depths=`.

  Returns:
    (model_config, params): `config.model` as a dict (timm's numerics, see
    the module docstring) and `{module: {param: jnp array}}` for
    `create_model(model_config, num_classes)` (num_classes is the file's).

  Raises:
    ValueError: unknown name, unreadable file, or tensors that do not fit
      the model (one message listing every missing, unexpected and
      mis-shaped name; nothing is returned partially).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  arch = _arch(name)
  config = timm_model_config(name, overrides)
  sd = read_state_dict(source)
  where = source if isinstance(source, (str, os.PathLike)) else 'the state dict'
  bias = sd.get('head.fc.bias')
  num_classes = int(bias.shape[0]) if bias is not None and bias.ndim == 1 else 1000
  shapes = _expected_shapes(config, num_classes)
  entries = _entries(config, shapes)
  expected = _timm_shapes(entries, shapes, arch)
  check_state_dict(sd, expected, f'{where} (timm {name}, {num_classes} classes)')
  gamma = _gamma(config)
  root = _ROOT[arch.config['name']] + '/~/'
  params: Dict[str, Dict[str, Any]] = {}
  for e in entries:
    if e.kind == 'skip' and not arch.skip_gain:
      value = np.ones((), np.float32)  # timm's block has no such scalar: identity
    else:
      value = _from_timm(sd[e.key], e.kind).astype(np.float32)
    if arch.gamma_in_conv:
      if e.param == 'gain' and e.module[len(root):] in _GAMMA_CONVS[arch.config['name']]:
        value = value * np.float32(gamma)
      elif e.module == root + 'linear' and e.param == 'w':
        value = value / np.float32(gamma)
    params.setdefault(e.module, {})[e.param] = jnp.asarray(value)
  return config, params


def check_state_dict(sd: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                     what: str) -> None:
  """Raises one ValueError listing missing, unexpected and mis-shaped keys."""
  problems = pretrained.flat_shapes_report(
      {k: tuple(np.shape(v)) for k, v in sd.items()}, expected)
  if problems:
    raise ValueError(f'{what} does not match the model: ' + '; '.join(problems))


def to_timm_state_dict(params: Mapping, model_config: Mapping,
                       name: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Our params as timm's state dict {key: float32 numpy array} for `name`.

  Args:
    params: `{module: {param: array}}` of `create_model(model_config, ...)`.
    model_config: `config.model`; its architecture must be timm `name`'s
      (numerics-only fields may differ).
    name: timm model name; None infers it from `model_config`. When given,
      size fields (variant, depths, widths) may differ from the name's: the
      tensor shapes are checked instead.

  Raises:
    ValueError: no timm model has this architecture, or params that do not
      fit the model (one message listing the differences).
  """
  ignore = NUMERICS_ONLY + (SIZE_FIELDS if name else ())
  name = name or timm_name_for(model_config)
  arch = _arch(name)
  diffs = architecture_differences(model_config, name, ignore=ignore)
  if diffs:
    raise ValueError(f'config.model is not the architecture of timm {name}: {"; ".join(diffs)}')
  host = {m: {n: np.asarray(v, np.float32) for n, v in d.items()} for m, d in params.items()}
  root = _ROOT[arch.config['name']] + '/~/'
  num_classes = pretrained.classifier_classes(host) or 1000
  shapes = _expected_shapes(model_config, num_classes)
  pretrained.check_params(host, shapes, what=f'params for timm {name}')
  gamma = np.float32(_gamma(model_config))
  if not arch.skip_gain:
    host = _fold_skip_gains(host, _ATTN_LAST[arch.config['name']])
  sd = {}
  for e in _entries(model_config, shapes):
    if e.kind == 'skip' and not arch.skip_gain:
      continue
    value = host[e.module][e.param]
    if arch.gamma_in_conv:
      if e.param == 'gain' and e.module[len(root):] in _GAMMA_CONVS[arch.config['name']]:
        value = value / gamma
      elif e.module == root + 'linear' and e.param == 'w':
        value = value * gamma
    sd[e.key] = np.ascontiguousarray(_to_timm(value, e.kind), np.float32)
  return sd


def _fold_skip_gains(host: dict, attn_last: bool = True) -> dict:
  """Folds every block's skip_gain s into its branch (timm has no scalar).

  `s * attn(conv2(h)) * conv2(h)` equals the same block with conv2's gain and
  bias times s when squeeze-excite's first linear layer is divided by s
  (its input, the mean of the branch, is then s times larger); s = 0 zeroes
  the branch either way.
  """
  out = {m: dict(d) for m, d in host.items()}
  for module, d in host.items():
    if 'skip_gain' not in d:
      continue
    s = np.float32(d['skip_gain'])
    del out[module]['skip_gain']
    conv2 = out[module + '/~/conv2']
    conv2['gain'] = conv2['gain'] * s
    conv2['bias'] = conv2['bias'] * s
    # The attention gate reads the branch mean linearly (SE's first linear,
    # ECA's bias-free conv): divide s back out there.
    for gate in (module + '/~/squeeze_excite/~/linear', module + '/~/eca'):
      if attn_last and gate in out and s != 0:
        out[gate]['w'] = out[gate]['w'] / s
  return out


def save_timm(params: Mapping, model_config: Mapping, path: str,
              name: Optional[str] = None) -> str:
  """Writes params as a timm state dict that `timm.create_model(name)` loads strictly.

  Args:
    params: `{module: {param: array}}` of `create_model(model_config, ...)`.
    model_config: `config.model` (e.g. from `load_timm` or
      `timm_model_config(name)`; an official-numerics config of the same
      architecture is accepted too: the weights mean the same).
    path: `.safetensors` or `.pth` / `.bin` (a torch pickle of the dict).
    name: timm model name; None infers it from `model_config`.

  Returns:
    The timm model name written for.

  Raises:
    ValueError: bad suffix, no timm model with this architecture, or params
      that do not fit it; nothing is written then.
  """
  if not path.endswith(('.safetensors', '.pth', '.bin', '.pt')):
    raise ValueError(f'{path}: the file name must end in .safetensors, .pth, .bin or .pt')
  name = name or timm_name_for(model_config)
  sd = to_timm_state_dict(params, model_config, name)
  with utils.atomic_path(path) as tmp:  # never a half-written file under `path`
    if path.endswith('.safetensors'):
      _import('safetensors.numpy').save_file(sd, tmp)
    else:
      torch = _import('torch')
      torch.save({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, tmp)
  return name
