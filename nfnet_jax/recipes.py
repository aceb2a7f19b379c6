"""The training recipe a config resolves to, next to the official one.

`recipe_table(config)` lists the settings that decide a reproduction (batch,
steps, warm-up, LR, weight decay and its mask, AGC and its exclusions, EMA,
label smoothing, augmentation, compute dtype) as our config resolves them,
with the value DeepMind's experiment file uses where one exists, so that one
glance shows whether ``configs/nfnet.py:F0`` is the paper's recipe.
``scripts/show_recipe.py CONFIG`` prints it.

The official values are written out here from the experiment files of the
``nfnets/`` folder of google-deepmind/deepmind-research, independently of our
configs (which must not be compared with themselves):

  experiment_nfnets.py     NFNet-F*: batch 4096, 360 epochs, LR 0.1 * B / 256,
                           SGD_AGC (Nesterov 0.9, wd 2e-5, clipping 0.01, eps
                           1e-3), EMA 0.99999, smoothing 0.1, bfloat16
                           training (evaluation in float32),
                           'cutmix_mixup_randaugment_4MM' with MM 05/10/10/15+
                           and ``augment_before_mix=False``.
  experiment_nf_regnets.py NF-RegNet-B*: batch 1024, 360 epochs, LR 0.4 (not
                           scaled by batch), cosine to 0.001, SGD (Nesterov
                           0.9, no AGC), wd 5e-5 + 1e-5 * level (B0-B5),
                           EMA 0.99999, smoothing 0.1, 'mixup_cutmix', float32.
  experiment.py            the BN-ResNet baseline: batch 1024, 90 epochs, LR
                           0.1 * B / 256, SGD (Nesterov 0.9, wd 1e-4), no EMA,
                           smoothing 0.1, no augmentation, float32.

All three compute ``training_steps = (1281167 * epochs) // batch`` and a
warm-up of ``5 * 1281167 / batch`` steps (a float), and exclude from weight
decay every parameter named ``b``, ``scale`` or ``offset`` or whose name
contains ``gain`` or ``bias``; the NFNet experiment also leaves the
classifier weight (module ``linear`` outside squeeze-excite) unclipped.
"""
import math
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from nfnet_jax import config as config_lib
from nfnet_jax.utils import get_dotted

# An official value the experiment file does not define for this variant.
NOT_DEFINED = 'not defined'
N_TRAIN = config_lib.IMAGENET_TRAIN_EXAMPLES

# experiment_nfnets.py: augment = {'F0': '405', 'F1': '410', ...}
NFNET_RA_MAGNITUDE = {'F0': 5, 'F1': 10, 'F2': 10, 'F3': 15, 'F4': 15,
                      'F5': 15, 'F6': 15, 'F7': 15}
# experiment_nf_regnets.py: weight decay 5e-5 + 1e-5 * level (none for B6+).
NF_REGNET_WEIGHT_DECAY = {'B0': 5e-5, 'B1': 6e-5, 'B2': 7e-5, 'B3': 8e-5,
                          'B4': 9e-5, 'B5': 1e-4}

# Representative parameter paths ('module/param') and their short labels:
# the weight-decay and AGC masks are shown (and compared) by which of these
# they exclude.
SAMPLE_PARAMS = (
    ('Net/~/stem_conv0/w', 'conv w'),
    ('Net/~/stem_conv0/gain', 'gain'),
    ('Net/~/stem_conv0/bias', 'bias'),
    ('Net/~/nf_block/skip_gain', 'skip_gain'),
    ('Net/~/nf_block/~/squeeze_excite/~/linear/w', 'SE linear w'),
    ('Net/~/nf_block/~/squeeze_excite/~/linear/b', 'SE linear b'),
    ('Net/~/batchnorm/scale', 'norm scale'),
    ('Net/~/batchnorm/offset', 'norm offset'),
    ('Net/~/linear/w', 'classifier w'),
    ('Net/~/linear/b', 'classifier b'),
)


def _split(path: str):
  module, _, name = path.rpartition('/')
  return module, name


def official_no_weight_decay(path: str) -> bool:
  """The official ``pred_gb`` rule (experiment.py / experiment_nfnets.py)."""
  name = _split(path)[1]
  return name in ('scale', 'offset', 'b') or 'gain' in name or 'bias' in name


def official_no_clipping(path: str) -> bool:
  """experiment_nfnets.py's ``pred_fc`` group, taken after ``pred_gb``."""
  module = _split(path)[0]
  return (not official_no_weight_decay(path) and 'linear' in module
          and 'squeeze_excite' not in module)


def _excluded(pred: Callable[[str], bool]) -> frozenset:
  return frozenset(label for path, label in SAMPLE_PARAMS if pred(path))


def _regex_excluded(regex: Optional[str]) -> frozenset:
  if regex is None:
    return frozenset()
  pattern = re.compile(regex)
  return _excluded(lambda p: pattern.search(p) is not None)


class Row(NamedTuple):
  """One recipe setting: ours, the official value (None: no official one)."""
  setting: str
  ours: Any
  official: Any
  has_official: bool


_get = get_dotted


def _official_experiment(source: str, batch: int, epochs: int,
                         **settings) -> Dict[str, Any]:
  """What DeepMind's three experiments share, plus each one's own ``settings``.

  All three: ``epochs`` epochs with 5 of linear warm-up, SGD with Nesterov
  momentum 0.9, no weight decay on gains and biases, label smoothing 0.1,
  float32 evaluation.
  """
  return dict(
      source=source,
      batch=batch,
      total_steps=config_lib.official_train_steps(epochs, batch),
      warmup_steps=config_lib.official_warmup_steps(5, batch),
      optimizer=('sgd', 0.9, True),
      wd_exclude=_excluded(official_no_weight_decay),
      label_smoothing=0.1,
      eval_dtype='float32',
      **settings)


def _official_nfnet(variant: str) -> Dict[str, Any]:
  batch = 4096
  return _official_experiment(
      'experiment_nfnets.py', batch, 360,
      peak_lr=0.1 * batch / 256,
      schedule=('cosine', 0.0),
      weight_decay=2e-5,
      agc=(0.01, 1e-3),
      agc_exclude=_excluded(official_no_clipping),
      ema=0.99999,
      randaugment=((4, NFNET_RA_MAGNITUDE[variant.rstrip('+')], 'official')
                   if variant.rstrip('+') in NFNET_RA_MAGNITUDE
                   else NOT_DEFINED),
      mixing=(0.2, True),
      augment_order='after mixing',
      dtype='bfloat16')


def _official_nf_regnet(variant: str) -> Dict[str, Any]:
  return _official_experiment(
      'experiment_nf_regnets.py', 1024, 360,
      peak_lr=0.4,
      schedule=('cosine', 0.001),
      weight_decay=NF_REGNET_WEIGHT_DECAY.get(variant, NOT_DEFINED),
      agc=None,
      agc_exclude=None,
      ema=0.99999,
      randaugment=None,
      mixing=(0.2, True),
      augment_order=None,
      dtype='float32')


def _official_resnet_baseline() -> Dict[str, Any]:
  batch = 1024
  return _official_experiment(
      'experiment.py', batch, 90,
      peak_lr=0.1 * batch / 256,
      schedule=('cosine', 0.0),
      weight_decay=1e-4,
      agc=None,
      agc_exclude=None,
      ema=None,
      randaugment=None,
      mixing=None,
      augment_order=None,
      dtype='float32')


# Official experiments by name, for configs that say which one they follow
# (configs/nf_resnet.py follows two, by variant).
EXPERIMENTS = {
    'experiment_nfnets.py': _official_nfnet,
    'experiment_nf_regnets.py': _official_nf_regnet,
    'experiment.py': lambda variant: _official_resnet_baseline(),
}
# The experiment a model family is trained with when the config does not say.
_BY_MODEL = {'NFNet': 'experiment_nfnets.py',
             'NF_RegNet': 'experiment_nf_regnets.py',
             'NFRegNet': 'experiment_nf_regnets.py',
             'ResNet': 'experiment.py'}


def official_recipe(config, experiment: Optional[str] = None
                    ) -> Optional[Dict[str, Any]]:
  """The official values for `config`'s model, or None if there are none.

  Args:
    config: the experiment ConfigDict (its model name and variant pick the
      official experiment and its per-variant values).
    experiment: an official experiment file name (a key of `EXPERIMENTS`)
      overriding the choice by model name; config modules name it with an
      ``official_experiment(arg)`` function.
  """
  experiment = experiment or _BY_MODEL.get(_get(config, 'model.name'))
  if experiment is None:
    return None
  if experiment not in EXPERIMENTS:
    raise ValueError(f'unknown official experiment {experiment!r}; one of '
                     f'{sorted(EXPERIMENTS)}')
  return EXPERIMENTS[experiment](str(_get(config, 'model.variant', '')))


def _ours(config) -> Dict[str, Any]:
  opt = lambda f, d=None: _get(config, f'optimizer.{f}', d)
  batch = _get(config, 'train.batch_size')
  accum = opt('accum_steps', 1) or 1
  peak = opt('base_lr') * batch * accum / opt('lr_batch_base', 256)
  floor = opt('min_lr', 0.0) or 0.0     # the cosine's floor, if the schema has one
  clipping = opt('clipping')
  layers = _get(config, 'data.randaugment_layers', 0) or 0
  mixup = _get(config, 'data.mixup_alpha', 0.0) or 0.0
  cutmix = bool(_get(config, 'data.cutmix', False))
  mixing = (mixup, cutmix) if (mixup > 0 or cutmix) else None
  return dict(
      batch=batch,
      total_steps=_get(config, 'train.total_steps'),
      warmup_steps=opt('warmup_steps'),
      peak_lr=peak,
      schedule=(opt('schedule'), floor),
      optimizer=(opt('name'), opt('momentum'), opt('nesterov')),
      weight_decay=opt('weight_decay') or None,
      wd_exclude=_regex_excluded(opt('wd_exclude')),
      agc=None if clipping is None else (clipping, opt('clip_eps')),
      agc_exclude=(None if clipping is None
                   else _regex_excluded(opt('clip_exclude'))),
      ema=opt('ema_decay'),
      label_smoothing=opt('label_smoothing'),
      randaugment=(None if layers == 0 else
                   (layers, _get(config, 'data.randaugment_magnitude'),
                    _get(config, 'data.randaugment_mode', 'official'))),
      mixing=mixing,
      augment_order=(None if not (layers and mixing) else
                     'before mixing' if _get(config, 'data.augment_before_mix', False)
                     else 'after mixing'),
      dtype=_get(config, 'compute_dtype', 'float32'),
      eval_dtype=_get(config, 'train.eval_compute_dtype', 'float32'),
  )


SETTINGS = (
    ('batch', 'global batch'),
    ('total_steps', 'training steps'),
    ('warmup_steps', 'warm-up steps'),
    ('peak_lr', 'peak LR'),
    ('schedule', 'LR schedule'),
    ('optimizer', 'optimizer'),
    ('weight_decay', 'weight decay'),
    ('wd_exclude', 'no weight decay on'),
    ('agc', 'AGC lambda'),
    ('agc_exclude', 'AGC not on'),
    ('ema', 'EMA decay'),
    ('label_smoothing', 'label smoothing'),
    ('randaugment', 'RandAugment'),
    ('mixing', 'MixUp / CutMix'),
    ('augment_order', 'RandAugment vs mixing'),
    ('dtype', 'compute dtype'),
    ('eval_dtype', 'eval compute dtype'),
)


def recipe_rows(config, experiment: Optional[str] = None) -> List[Row]:
  """The recipe settings of `config`, each with the official value."""
  ours = _ours(config)
  official = official_recipe(config, experiment)
  return [Row(label, ours[key], None if official is None else official[key],
              official is not None)
          for key, label in SETTINGS]


def _fmt_number(v) -> str:
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return str(v)
  if isinstance(v, int) or float(v).is_integer():
    return f'{int(v)}'
  return f'{v:.6g}' if abs(v) >= 1e-3 else f'{v:g}'


def format_value(setting: str, v) -> str:
  """One cell of the table."""
  if isinstance(v, str) and v == NOT_DEFINED:
    return '- (not defined for this variant)'
  if v is None:
    return 'off' if setting in ('AGC lambda', 'EMA decay', 'weight decay',
                                'RandAugment', 'MixUp / CutMix') else '-'
  if setting == 'LR schedule':
    kind, floor = v
    return ('constant after warm-up' if kind == 'constant'
            else f'{kind} to {_fmt_number(floor)}')
  if setting == 'optimizer':
    name, momentum, nesterov = v
    if name != 'sgd':
      return name
    return f'SGD, {"Nesterov " if nesterov else ""}momentum {momentum:g}'
  if setting == 'AGC lambda':
    return f'{_fmt_number(v[0])} (eps {v[1]:g})'
  if setting in ('no weight decay on', 'AGC not on'):
    order = [label for _, label in SAMPLE_PARAMS]
    return ', '.join(sorted(v, key=order.index)) or 'nothing'
  if setting == 'RandAugment':
    layers, magnitude, mode = v
    return f'{layers} layers x magnitude {_fmt_number(magnitude)} ({mode})'
  if setting == 'MixUp / CutMix':
    alpha, cutmix = v
    parts = [f'MixUp Beta({alpha:g}, {alpha:g})'] if alpha else []
    parts += ['CutMix'] if cutmix else []
    return ' + '.join(parts) + (' (half each)' if len(parts) == 2 else '')
  if setting == 'warm-up steps' and isinstance(v, float) and \
      not v.is_integer():
    return f'{v:.2f}'
  return _fmt_number(v)


def same(a, b) -> bool:
  """Whether two setting values agree (numbers to 1e-9 relative)."""
  if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
  numeric = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  if numeric(a) and numeric(b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
  return a == b


def recipe_table(config, experiment: Optional[str] = None,
                 title: Optional[str] = None) -> str:
  """A Markdown table: setting | ours | official | agrees."""
  rows = recipe_rows(config, experiment)
  official = official_recipe(config, experiment)
  head = (f'official ({official["source"]})' if official
          else 'official (none for this model)')
  lines = []
  if title:
    lines += [f'Recipe of {title}', '']
  lines += [f'| setting | ours | {head} | agrees |', '|---|---|---|---|']
  for row in rows:
    ours = format_value(row.setting, row.ours)
    if not row.has_official or (isinstance(row.official, str)
                                and row.official == NOT_DEFINED):
      official_cell = ('' if not row.has_official
                       else format_value(row.setting, row.official))
      lines.append(f'| {row.setting} | {ours} | {official_cell} |  |')
      continue
    mark = 'yes' if same(row.ours, row.official) else '**no**'
    lines.append(f'| {row.setting} | {ours} | '
                 f'{format_value(row.setting, row.official)} | {mark} |')
  return '\n'.join(lines)
