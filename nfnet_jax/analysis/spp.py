"""Signal Propagation Plots (Brock, De, Smith 2021, arXiv 2101.08692).

At initialization, a batch of unit-Gaussian inputs (or real images) is pushed
through each model with the per-block statistics turned on
(``return_metrics=True``): the average squared channel mean, the average
channel variance of each residual block's output, and the average channel
variance of its residual branch. :func:`compute_spp` gathers them,
:func:`write_csv` writes ``spp.csv`` and :func:`plot_spp` draws the paper's
three panels with transition blocks marked and, for NF models, the analytic
expected variance ``1 + k * alpha^2`` (k = blocks into the stage, reset at
every transition) overlaid.

Models are named by short specs (:data:`MODEL_SPECS` and the patterns in
:func:`resolve_spec`), optionally with overrides: ``nf_resnet50:alpha=0.5;
activation=gelu``.
"""
import csv
import inspect
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from nfnet_jax import data as data_lib
from nfnet_jax import models
from nfnet_jax import pretrained
from nfnet_jax.config import load as config_load
from nfnet_jax.models.nfnet import NFNET_VARIANTS
from nfnet_jax.optim import agc
from nfnet_jax.train import weights as weights_lib

CSV_COLUMNS = ('model', 'block', 'avg_sq_mean', 'avg_var', 'res_avg_var')
STAT_KEYS = ('avg_sq_mean', 'avg_var', 'res_avg_var', 'expected_var', 'is_transition')
# The paper's comparison (Figures 1 and 2): the two BN block orders, an
# unnormalized ResNet with plain convs, and an NF-ResNet with Scaled WS.
DEFAULT_MODELS = ('bn_resnet50_bn_relu_conv', 'bn_resnet50_relu_bn_conv', 'resnet50_plain',
                  'nf_resnet50')

# Analysis runs keep stochastic depth and dropout off: they would make the
# statistics random and are identities at initialization anyway in the paper.
_NO_NOISE = {'stochdepth_rate': 0.0, 'drop_rate': 0.0}

# Short names -> model configs ('name' is the registry key, the rest are
# constructor keywords). resolve_spec() also accepts any depth in these
# patterns (nf_resnet101, bn_resnet152_relu_bn_conv, gn_resnet50, nfnet_f3...).
MODEL_SPECS: Dict[str, Dict[str, Any]] = {
    'nf_resnet50': dict(name='NFResNet', variant='ResNet50', alpha=0.2, activation='relu',
                        **_NO_NOISE),
    'bn_resnet50_bn_relu_conv': dict(name='ResNet', variant='ResNet50', norm='batchnorm',
                                     block_order='bn_relu_conv', **_NO_NOISE),
    'bn_resnet50_relu_bn_conv': dict(name='ResNet', variant='ResNet50', norm='batchnorm',
                                     block_order='relu_bn_conv', **_NO_NOISE),
    'resnet50_plain': dict(name='ResNet', variant='ResNet50', norm='none',
                           block_order='bn_relu_conv', **_NO_NOISE),
    'nfnet_f0': dict(name='NFNet', variant='F0', **_NO_NOISE),
}

# Model fields only NF models give meaning to.
_NF_ONLY = ('alpha', 'se_ratio')

_NORMS = {'bn': 'batchnorm', 'gn': 'groupnorm', 'wsgn': 'ws_groupnorm'}
_PATTERNS = (
    (r'nf_resnet(\d+)', lambda d: dict(name='NFResNet', variant=f'ResNet{d[0]}', alpha=0.2,
                                       activation='relu', **_NO_NOISE)),
    (r'(bn|gn|wsgn)_resnet(\d+)(?:_(bn_relu_conv|relu_bn_conv))?',
     lambda d: dict(name='ResNet', variant=f'ResNet{d[1]}', norm=_NORMS[d[0]],
                    block_order=d[2] or 'bn_relu_conv', **_NO_NOISE)),
    (r'resnet(\d+)_plain', lambda d: dict(name='ResNet', variant=f'ResNet{d[0]}', norm='none',
                                          block_order='bn_relu_conv', **_NO_NOISE)),
    (r'nfnet_f(\d)(\+?)', lambda d: dict(name='NFNet', variant=f'F{d[0]}{d[1]}', **_NO_NOISE)),
    (r'(nfnet_l0|eca_nfnet_l\d)', lambda d: dict(name='NFNet', variant=d[0], **_NO_NOISE)),
    (r'nf_regnet_b(\d)', lambda d: dict(name='NFRegNet', variant=f'B{d[0]}', **_NO_NOISE)),
    (r'fixup_resnet(\d+)', lambda d: dict(name='ResNet', variant=f'ResNet{d[0]}', norm='none',
                                          fixup=True, **_NO_NOISE)),
)


def split_models(text: str) -> List[str]:
  """Splits ``--models`` on commas outside brackets (``a:widths=(64,64),b``)."""
  out, depth, cur = [], 0, ''
  for ch in text:
    depth += ch in '([{'
    depth -= ch in ')]}'
    if ch == ',' and depth == 0:
      out.append(cur)
      cur = ''
    else:
      cur += ch
  out.append(cur)
  return [m.strip() for m in out if m.strip()]


def resolve_spec(spec: str) -> Dict[str, Any]:
  """Expands ``name`` or ``name:key=val;key=val`` into a model config dict.

  Args:
    spec: a short model name (see MODEL_SPECS; any depth works in the
      patterns ``nf_resnetD``, ``{bn,gn,wsgn}_resnetD[_{bn_relu_conv,
      relu_bn_conv}]``, ``resnetD_plain``, ``nfnet_fN[+]``), optionally
      followed by ``:`` and ``;``-separated constructor overrides.

  Returns:
    A dict with the registry ``name`` and constructor keywords.

  Raises:
    ValueError: for an unknown name or a malformed override.
  """
  name, _, over = spec.partition(':')
  name = name.strip()
  if name in MODEL_SPECS:
    cfg = dict(MODEL_SPECS[name])
  else:
    cfg = None
    for pat, make in _PATTERNS:
      m = re.fullmatch(pat, name)
      if m:
        cfg = make(m.groups())
        break
    if cfg is None:
      raise ValueError(f'--models: unknown model spec {name!r}; use one of {sorted(MODEL_SPECS)} '
                       'or a pattern nf_resnetD, bn_resnetD_{bn_relu_conv,relu_bn_conv}, '
                       'gn_resnetD, wsgn_resnetD, resnetD_plain, fixup_resnetD, nfnet_fN, '
                       'nfnet_l0, eca_nfnet_lN, nf_regnet_bN')
  for item in filter(None, (s.strip() for s in over.split(';'))):
    if '=' not in item:
      raise ValueError(f'--models: override {item!r} in {spec!r} must look like key=value')
    k, _, v = item.partition('=')
    cfg[k.strip()] = config_load.parse_value(v)
  return cfg


def accepted_keys(model_name: str) -> Optional[set]:
  """Constructor keywords of a registered model class (None if it takes **kwargs)."""
  cls = models.get_model_class(model_name)
  params = inspect.signature(cls.__init__).parameters
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return None
  return set(params) - {'self'}


def apply_overrides(model_cfg: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
  """Applies global ``--config.model.k=v`` overrides to the keys the model accepts.

  An override the model class does not take (``alpha`` for a BatchNorm
  ResNet) is skipped, so one flag can tune every NF model of a comparison.
  """
  out = dict(model_cfg)
  keys = accepted_keys(out['name'])
  for k, v in overrides.items():
    if k in _NF_ONLY and not is_nf_model(out):
      continue  # baselines accept but refuse alpha/se_ratio values
    if keys is None or k in keys:
      out[k] = v
  # Drop noise knobs the class does not have (e.g. baselines without stochdepth).
  if keys is not None:
    for k in _NO_NOISE:
      if k in out and k not in keys:
        del out[k]
  return out


def check_model_overrides(model_cfgs: Sequence[Mapping[str, Any]],
                          overrides: Mapping[str, Any]) -> None:
  """Raises ConfigError for an override that none of the models takes.

  Args:
    model_cfgs: the resolved model configs of the comparison.
    overrides: the ``--config.model.k=v`` overrides, by ``k``.
  """
  known = set()
  for cfg in model_cfgs:
    keys = accepted_keys(cfg['name'])
    if keys is None:
      return  # a model taking **kwargs accepts anything
    known |= keys | set(cfg)
  for k in overrides:
    if k not in known:
      near = config_load.closest_name(k, sorted(known))
      hint = f'did you mean config.model.{near}?' if near else (
          f'the models take {sorted(known)}')
      raise config_load.ConfigError(
          f'config.model.{k} is not a field of any of the models; {hint}')


def uses_conv2_gain(model_cfg: Mapping[str, Any]) -> bool:
  """True for NFNets whose SkipInit gain is conv2's gain (timm's light family)."""
  if model_cfg.get('name') != 'NFNet':
    return False
  if model_cfg.get('skipinit_mode') is not None:
    return model_cfg['skipinit_mode'] == 'conv2_gain'
  variant = NFNET_VARIANTS.get(model_cfg.get('variant') or 'F0', {})
  return variant.get('skipinit_mode') == 'conv2_gain'


def set_skip_gain(params: Mapping[str, Mapping[str, Any]], value: float,
                  conv2_gain: bool = False):
  """Returns params with every SkipInit gain set to ``value``.

  That is every scalar ``skip_gain`` and, with ``conv2_gain`` (models built
  with ``skipinit_mode='conv2_gain'``), the ``gain`` of every block's last
  conv (``.../nf_block*/~/conv2``), which plays that role there.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  out = {}
  for mod, leaves in params.items():
    last_conv = conv2_gain and re.search(r'/nf_block(_\d+)?/~/conv2$', mod)
    out[mod] = {k: (jnp.full_like(v, value)
                    if k == 'skip_gain' or (last_conv and k == 'gain') else v)
                for k, v in leaves.items()}
  return out


def gaussian_batch(batch_size: int, resolution: int, seed: int = 0, channels: int = 3):
  """A batch of unit-Gaussian NHWC images."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.random.normal(jax.random.PRNGKey(seed + 1),
                           (batch_size, resolution, resolution, channels))


def smooth_gaussian_batch(batch_size: int, resolution: int, cell: int, seed: int = 0,
                          channels: int = 3):
  """Unit-Gaussian images that are constant over aligned `cell` x `cell` squares.

  Models whose strided shortcuts average-pool 2x2 windows (NFNets,
  NF-RegNets) quarter the variance of spatially independent (white-noise)
  inputs at every transition; the analysis (`1 + k * alpha^2`) assumes a
  variance-preserving shortcut, which holds for signals that are smooth on
  the scale of the network's stride. Cells as large as the total stride make
  every pooling window constant.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if cell < 1 or resolution % cell:
    raise ValueError(f'--cell {cell} must be >= 1 and divide --resolution {resolution}')
  n = resolution // cell
  z = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch_size, n, n, channels))
  return jnp.repeat(jnp.repeat(z, cell, axis=1), cell, axis=2)


def data_batch(config, batch_size: int, resolution: int):
  """The first ``batch_size`` evaluation images of ``config``'s data set, at ``resolution``."""
  images = []
  for batch in data_lib.eval_iterator(config, layout='host', image_size=resolution):
    keep = np.asarray(batch['mask']) > 0
    images.append(np.asarray(batch['images'])[keep])
    if sum(len(i) for i in images) >= batch_size:
      break
  x = np.concatenate(images)[:batch_size]
  if len(x) < batch_size:
    raise ValueError(f'--batch {batch_size} is larger than the eval split ({len(x)} images)')
  return x


def compute_spp(model_cfg: Mapping[str, Any], images, *, skip_gain: Optional[float] = 1.0,
                num_classes: int = 1000, seed: int = 0, jit: bool = False,
                params=None, model_state=None) -> Dict[str, np.ndarray]:
  """Per-block signal-propagation statistics of a model (at init by default).

  Args:
    model_cfg: model config dict (registry ``name`` + constructor keywords).
    images: NHWC input batch.
    skip_gain: value every SkipInit ``skip_gain`` is set to (None keeps the
      init value 0, which hides every residual branch).
    num_classes: classifier width (irrelevant to the statistics).
    seed: init seed.
    jit: compile the init and the forward pass, or run them op by op
      (False). In a fresh process compiling is the faster on CPU, small
      models included (`nfnet-spp`, which compiles by default; session 32:
      nf_resnet26 at widths 16, batch 4 at 32 px 14.5 vs 19.0 s, nf_resnet50
      at 224 px 13.6 vs 26.9 s): op by op, each of a few hundred operations
      is compiled on its own. Within one process those per-operation
      compilations are reused by later calls, and op by op is as fast
      (tests/test_spp.py: 26.3 vs 25.6 CPU-s).
    params: trained parameters to use instead of a fresh initialization
      (`load_trained`); pass ``skip_gain=None`` with them so the trained skip
      gains are kept.
    model_state: the trained model state (BatchNorm statistics; the
      statistics use batch statistics, as at init).

  Returns:
    Dict of float64 arrays [num_blocks]: avg_sq_mean, avg_var, res_avg_var,
    expected_var, is_transition.
  """
  import jax  # pylint: disable=g-import-not-at-top
  model = models.create_model(dict(model_cfg), num_classes)
  rng = jax.random.PRNGKey(seed)
  # BatchNorm models use batch statistics (is_training=True), as in the paper;
  # NF models do the same (stochastic depth and dropout are off in the specs).
  if params is None:
    init = (jax.jit(model.init, static_argnums=2) if jit else model.init)
    params, state = init(rng, images, True)
  else:
    state = model_state or {}
  if skip_gain is not None:
    params = set_skip_gain(params, skip_gain, conv2_gain=uses_conv2_gain(model_cfg))
  fwd = lambda p, s, x: model.apply(p, s, rng, x, True, return_metrics=True)
  if jit:
    fwd = jax.jit(fwd)
  outputs, _ = fwd(params, state, images)
  spp = outputs['spp']
  missing = [k for k in STAT_KEYS if k not in spp]
  if missing:
    raise ValueError(f"model {model_cfg['name']} returned no SPP statistics {missing}")
  return {k: np.asarray(spp[k], np.float64).reshape(-1) for k in STAT_KEYS}


def _first_kernel(params: Mapping[str, Mapping[str, Any]]):
  for module in sorted(params, key=agc.depth_key):
    w = params[module].get('w')
    if w is not None and np.ndim(w) == 4:
      return np.shape(w)
  raise ValueError('no convolution kernel found in the checkpoint params')


def _classes(params: Mapping[str, Mapping[str, Any]]) -> int:
  classes = pretrained.classifier_classes(params)
  if classes is None:
    raise ValueError('cannot find the classifier bias <root>/~/linear/b in the checkpoint')
  return classes


def load_trained(path: str, model_cfg: Optional[Mapping[str, Any]] = None,
                 use_ema: bool = False) -> Dict[str, Any]:
  """A trained model for SPP from any weight source (`nfnet_jax.train.weights`).

  Args:
    path: a training workdir (or its ``checkpoints``/``checkpoints/<step>``
      dir): the model comes from the config saved with the checkpoint; or an
      official ``F*_haiku.npz``-format file: the NFNet variant is inferred
      from its parameter names and shapes unless ``model_cfg`` is given; or
      ``timm:NAME=PATH`` (timm's model config).
    model_cfg: the model config (``config.model`` as a dict) for official
      files of other models; ignored for workdirs.
    use_ema: take the EMA parameters of a workdir checkpoint (when saved).

  Returns:
    ``{'model_cfg', 'params', 'model_state', 'num_classes', 'channels',
    'image_size' (None when unknown), 'label'}``.

  Raises:
    ValueError: an unreadable checkpoint, or a model that cannot be told.
  """
  try:
    w = weights_lib.load_weights(path, use_ema=use_ema)
  except FileNotFoundError as e:
    raise ValueError(str(e)) from None
  image_size = None
  if w.kind == 'ckpt':
    if not w.model_config:
      raise ValueError(f'--checkpoint {path}: the checkpoint holds no config; give an '
                       'official-format file or re-save with nfnet_jax')
    model_cfg = w.model_config
    image_size = w.config.get('data', {}).get('image_size')
    label = f'trained, step {w.step}' + (' (EMA)' if w.tree == 'ema_params' else '')
  else:
    if model_cfg is None:
      model_cfg = w.model_config
      if model_cfg is None:
        raise ValueError(f'--checkpoint {path}: not an official NFNet variant; give the model '
                         'with --model_config FILE.py[:arg]')
      if w.kind == 'official':  # the inferred variant's training resolution
        image_size = NFNET_VARIANTS[model_cfg['variant']]['train_imsize']
    label = os.path.basename(w.path)
  params, state = w.params, w.model_state
  model_cfg = dict(model_cfg)
  # Statistics of the deterministic network (as at init): no stochastic
  # depth or dropout.
  model_cfg.update({k: v for k, v in _NO_NOISE.items() if k in model_cfg})
  for k, v in list(model_cfg.items()):
    if isinstance(v, list):
      model_cfg[k] = tuple(v)
  return {'model_cfg': model_cfg, 'params': params, 'model_state': state,
          'num_classes': _classes(params), 'channels': _first_kernel(params)[2],
          'image_size': image_size, 'label': label}


def expected_variance(is_transition: Sequence[float], alpha: float) -> np.ndarray:
  """Analytic output variance of each NF block: ``1 + k * alpha^2``.

  ``k`` counts the blocks since the last transition, inclusive: a transition
  block's shortcut sees the normalized input ``x / beta`` (variance 1), so its
  output has variance ``1 + alpha^2``; every further block adds ``alpha^2``.
  """
  out, k = [], 0
  for t in is_transition:
    k = 1 if t > 0.5 else k + 1
    out.append(1.0 + k * alpha * alpha)
  return np.asarray(out)


def stage_ends(is_transition: Sequence[float]) -> List[int]:
  """Indices of the last block of every stage."""
  t = list(np.asarray(is_transition) > 0.5)
  return [i for i in range(len(t)) if i == len(t) - 1 or t[i + 1]]


def is_nf_model(model_cfg: Mapping[str, Any]) -> bool:
  return model_cfg['name'] in ('NFResNet', 'NFNet', 'NFRegNet')


def model_alpha(model_cfg: Mapping[str, Any]) -> Optional[float]:
  """The model's alpha (config value or its class default)."""
  if model_cfg.get('alpha') is not None:
    return float(model_cfg['alpha'])
  try:
    p = inspect.signature(models.get_model_class(model_cfg['name']).__init__).parameters
    if 'alpha' in p and p['alpha'].default is not inspect.Parameter.empty:
      return float(p['alpha'].default)
  except Exception:  # pylint: disable=broad-except
    pass
  return 0.2


def write_csv(results: Mapping[str, Mapping[str, np.ndarray]], path: str) -> int:
  """Writes ``model, block, avg_sq_mean, avg_var, res_avg_var`` rows; returns the row count."""
  n = 0
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(CSV_COLUMNS)
    for name, s in results.items():
      for i in range(len(s['avg_var'])):
        w.writerow([name, i] + [f'{float(s[k][i]):.8g}' for k in CSV_COLUMNS[2:]])
        n += 1
  return n


def read_json(path: str):
  """Reads spp.json back: (results, configs, meta), e.g. to re-plot."""
  with open(path) as f:
    blob = json.load(f)
  results = {n: {k: np.asarray([np.nan if v is None else v for v in vals], np.float64)
                 for k, vals in m['stats'].items()} for n, m in blob['models'].items()}
  configs = {n: m['config'] for n, m in blob['models'].items()}
  return results, configs, blob.get('meta', {})


def write_json(results: Mapping[str, Mapping[str, np.ndarray]], configs: Mapping[str, Any],
               path: str, meta: Optional[Dict[str, Any]] = None) -> None:
  """All statistics (incl. expected_var, is_transition) and the model configs as JSON."""
  def clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v
  blob = {'meta': meta or {},
          'models': {n: {'config': configs.get(n),
                         'stats': {k: [clean(float(x)) for x in s[k]] for k in s}}
                     for n, s in results.items()}}
  with open(path, 'w') as f:
    json.dump(blob, f, indent=1, default=str)


def _log_scale(values: List[np.ndarray]) -> bool:
  v = np.concatenate([np.asarray(a, float) for a in values])
  v = v[np.isfinite(v)]
  return v.size > 0 and v.min() > 0 and v.max() / v.min() > 30


def plot_spp(results: Mapping[str, Mapping[str, np.ndarray]], path: str,
             configs: Optional[Mapping[str, Mapping[str, Any]]] = None,
             title: Optional[str] = None) -> None:
  """The paper's three SPP panels, one line per model.

  Transition blocks (first block of each stage) are drawn as hollow markers
  and dotted vertical lines; for NF models the expected variance
  ``1 + k*alpha^2`` is overlaid as a dashed line on the variance panel.
  Panels with values spanning more than 30x use a log scale.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  configs = configs or {}
  panels = (('avg_sq_mean', 'Average Channel Squared Mean'),
            ('avg_var', 'Average Channel Variance'),
            ('res_avg_var', 'Residual Average Channel Variance'))
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  first = next(iter(results.values()))
  for i in np.nonzero(np.asarray(first['is_transition']) > 0.5)[0]:
    for ax in axes:
      ax.axvline(i, color='0.8', ls=':', lw=1, zorder=0)
  for (key, label), ax in zip(panels, axes):
    series = []
    for c, (name, s) in enumerate(results.items()):
      col = colors[c % len(colors)]
      x = np.arange(len(s[key]))
      ax.plot(x, s[key], '-', color=col, lw=1.8, label=name)
      tr = np.asarray(s['is_transition']) > 0.5
      ax.plot(x[tr], np.asarray(s[key])[tr], 'o', mfc='none', color=col, ms=6)
      series.append(s[key])
      cfg = configs.get(name)
      if key == 'avg_var' and cfg is not None and is_nf_model(cfg):
        alpha = model_alpha(cfg)
        exp = expected_variance(s['is_transition'], alpha)
        ax.plot(x, exp, '--', color='k', lw=1.0, alpha=0.8,
                label=f'{name}: expected 1+k*alpha^2 (alpha={alpha:g})')
        series.append(exp)
    if _log_scale(series):
      ax.set_yscale('log')
    ax.set_title(label)
    ax.set_xlabel('residual block (o = transition block)')
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7.5, loc='best')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def summarize(results: Mapping[str, Mapping[str, np.ndarray]],
              configs: Mapping[str, Mapping[str, Any]]) -> str:
  """A short text reading: variance and squared mean at each stage end."""
  lines = []
  for name, s in results.items():
    ends = stage_ends(s['is_transition'])
    cfg = configs.get(name, {})
    parts = [f'{name}: stage-end avg_var ' +
             ', '.join(f'{s["avg_var"][i]:.3g}' for i in ends)]
    if cfg and is_nf_model(cfg):
      exp = expected_variance(s['is_transition'], model_alpha(cfg))
      parts.append('expected ' + ', '.join(f'{exp[i]:.3g}' for i in ends))
    parts.append('avg_sq_mean ' + ', '.join(f'{s["avg_sq_mean"][i]:.3g}' for i in ends))
    parts.append('res_avg_var ' + ', '.join(f'{s["res_avg_var"][i]:.3g}' for i in ends))
    lines.append('; '.join(parts))
  return '\n'.join(lines)
