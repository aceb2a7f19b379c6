"""Experiment configs, their validation, and the command-line overrides."""
import os
import subprocess
import sys

import pytest

from nfnet_jax import config as base_lib
from nfnet_jax.analysis.sweeps import grid as sweep_grid
from nfnet_jax.config import load as config_load
from nfnet_jax.train.validate import validate_config

from conftest import ROOT
from conftest import subprocess_env
FASHION_DIR = '/usr/share/datasets/fashion-mnist'
have_fashion = pytest.mark.skipif(
    not os.path.exists(os.path.join(FASHION_DIR, 'train-images-idx3-ubyte.gz')),
    reason='Debian dataset-fashion-mnist not installed')


def load(name):
  return config_load.load_config_module(os.path.join(ROOT, 'configs', f'{name}.py'))


# ---------------------------------------------------------------------------
# The paper's values


@pytest.mark.parametrize('variant,train,test,drop,mag', [
    ('F0', 192, 256, 0.2, 5), ('F1', 224, 320, 0.3, 10),
    ('F2', 256, 352, 0.4, 10), ('F3', 320, 416, 0.4, 15),
    ('F4', 384, 512, 0.5, 15), ('F5', 416, 544, 0.5, 15),
    ('F6', 448, 576, 0.5, 15), ('F7', 480, 608, 0.5, 15)])
def test_nfnet_variants_follow_the_paper(variant, train, test, drop, mag):
  c = load('nfnet').get_config(variant)
  assert c.model.name == 'NFNet' and c.model.variant == variant
  assert (c.data.image_size, c.data.eval_image_size) == (train, test)
  assert c.model.drop_rate == drop
  assert c.data.randaugment_magnitude == mag
  assert c.data.randaugment_layers == 4
  assert c.train.batch_size == 4096
  # experiment_nfnets.py: (1281167 * 360) // 4096 and 5 * 1281167 / 4096.
  assert c.train.total_steps == 112602
  assert c.optimizer.warmup_steps == pytest.approx(1563.9245605)
  assert c.compute_dtype == 'bfloat16'
  assert c.data.randaugment_mode == 'official'
  assert c.optimizer.base_lr * 4096 / c.optimizer.lr_batch_base == \
      pytest.approx(1.6)
  assert (c.optimizer.clipping, c.optimizer.weight_decay,
          c.optimizer.label_smoothing, c.optimizer.ema_decay) == \
      (0.01, 2e-5, 0.1, 0.99999)
  assert c.model.stochdepth_rate == 0.25
  assert c.data.mixup_alpha == 0.2 and c.data.cutmix


def test_plus_variant_and_modifiers():
  c = load('nfnet').get_config('F3+,bf16')
  assert c.model.variant == 'F3+' and c.compute_dtype == 'bfloat16'
  assert c.data.image_size == 320
  with pytest.raises(ValueError, match='F9'):
    load('nfnet').get_config('F9')


def test_resnet_baseline_recipe():
  c = load('resnet').get_config('50')
  assert c.model.name == 'ResNet' and c.model.norm == 'batchnorm'
  assert c.train.batch_size == 1024
  assert c.train.total_steps == (base_lib.IMAGENET_TRAIN_EXAMPLES * 90) // 1024
  assert c.optimizer.base_lr * 1024 / c.optimizer.lr_batch_base == \
      pytest.approx(0.4)
  assert c.optimizer.weight_decay == 1e-4
  assert c.optimizer.label_smoothing == 0.1
  assert c.optimizer.clipping is None
  assert load('resnet').get_config('101,gn').model.norm == 'groupnorm'


@pytest.mark.parametrize('depth', [26, 50, 101, 152, 200])
def test_nf_resnet_depths(depth):
  c = load('nf_resnet').get_config(str(depth))
  assert c.model.name == 'NFResNet' and c.model.variant == f'ResNet{depth}'
  assert c.optimizer.clipping == 0.01 and c.data.image_size == 224
  b = load('nf_resnet').get_config(f'{depth},baseline')
  assert b.train.batch_size == 1024 and b.optimizer.clipping is None


@have_fashion
@pytest.mark.parametrize('name,arg', [
    ('nfnet', 'F0,local'), ('nfnet', 'F1,local'), ('nf_resnet', '50,local'),
    ('resnet', '50,local'), ('resnet', '26,gn,local'),
    ('fashion_mnist', ''), ('fashion_mnist', 'long'),
    ('fashion_mnist', 'local')])
def test_local_configs_validate(name, arg):
  validate_config(load(name).get_config(arg))


def test_imagenet_configs_pass_model_and_optimizer_validators():
  from nfnet_jax import models, optim  # pylint: disable=g-import-not-at-top
  for name, arg in [('nfnet', v) for v in ('F0', 'F3', 'F7', 'F1+')] + [
      ('nf_resnet', '50'), ('nf_resnet', '200,se'), ('resnet', '101')]:
    c = load(name).get_config(arg)
    models.validate_model_config(c.model, num_classes=1000)
    optim.validate_optimizer_config(c.optimizer)
    assert c.data.eval_image_size >= models.model_min_resolution(c.model)


# ---------------------------------------------------------------------------
# Validation table: each bad field gives one error naming field and value.


def _base():
  return load('fashion_mnist').get_config('local')


def _set(c, dotted, value):
  parent, _, name = dotted.rpartition('.')
  node = c
  for p in parent.split('.') if parent else []:
    node = node[p]
  with node.ignore_type():
    node[name] = value
  return c


class _null:  # pylint: disable=invalid-name
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


BAD = [
    # (field, value, substring expected in the message besides the field)
    ('train.batch_size', 12, 'multiple of the number of devices'),
    ('train.batch_size', 0, 'integer >= 1'),
    ('train.batch_size', 64.0, 'integer'),
    ('train.eval_batch_size', 1001, 'multiple'),
    ('train.total_steps', 0, 'integer >= 1'),
    ('train.total_steps', -5, 'integer >= 1'),
    ('train.checkpoint_every', -1, '>= 0'),
    ('train.eval_every', -2, '>= 0'),
    ('train.log_every', 0, '>= 1'),
    ('train.keep_checkpoints', 0, '>= 1'),
    ('train.nonfinite', 'ignore', 'skip'),
    ('train.max_consecutive_nonfinite', 0, '>= 1'),
    ('train.eval_with_ema', 'yes', 'True or False'),
    ('train.eval_flip_tta', 'yes', 'True or False'),
    ('data.random_erase', 1.5, '[0, 1]'),
    ('data.random_erase', 'half', '[0, 1]'),
    ('data.random_erase_area', (0.4, 0.02), 'lo <= hi'),
    ('data.random_erase_area', (0.02, 1.0), 'hi < 1'),
    ('data.random_erase_min_aspect', 0, '(0, 1]'),
    ('data.random_erase_min_aspect', 3.0, '(0, 1]'),
    ('parallel.mode', 'pjit', 'shard_map'),
    ('parallel.distributed', 'maybe', 'auto'),
    ('parallel.num_devices', 64, 'at most'),
    ('parallel.num_devices', -1, '>= 0'),
    ('compute_dtype', 'float16', 'bfloat16'),
    ('seed', 'zero', 'integer'),
    ('optimizer.label_smoothing', 1.0, ''),
    ('optimizer.ema_decay', 1.5, ''),
    ('optimizer.sam_rho', -0.1, ''),
    ('optimizer.clipping', -0.01, ''),
    ('optimizer.clipping', 0.0, ''),
    ('optimizer.base_lr', -1.0, ''),
    ('optimizer.name', 'lamb', ''),
    ('model.name', 'VGG', 'NFNet'),
    ('model.variant', 'ResNet51', 'ResNet50'),
    ('model.alpha', 0.0, '> 0'),
    ('model.alpha', -0.2, '> 0'),
    ('model.activation', 'swishy', 'relu'),
    ('model.stochdepth_rate', 1.5, '[0, 1)'),
    ('data.eval_image_size', 16, '32'),
    ('data.image_size', 8, '32'),
    ('data.name', 'no_such_dataset_xyz', ''),
    ('data.data_dir', '/nonexistent/fmnist', 'missing'),
    ('data.train_crop', 'random', 'inception'),
    ('finetune.checkpoint', '/nonexistent/F0_haiku.npz', 'not found'),
    ('finetune.reset_classifier', 'no', 'True or False'),
]


@have_fashion
@pytest.mark.parametrize('field,value,expected', BAD,
                         ids=[f'{f}={v!r}' for f, v, _ in BAD])
def test_validation_table(field, value, expected):
  c = _set(_base(), field, value)
  with pytest.raises(ValueError) as info:
    validate_config(c, num_devices=8, process_count=1)
  msg = str(info.value)
  assert f'config.{field}' in msg, msg
  assert repr(value) in msg or str(value) in msg, msg
  assert expected in msg, msg


@have_fashion
def test_several_errors_are_reported_together():
  c = _base()
  c.train.total_steps = 0
  c.parallel.mode = 'xmap'
  with pytest.raises(ValueError, match=r'\d config errors') as info:
    validate_config(c, num_devices=8, process_count=1)
  assert 'config.train.total_steps' in str(info.value)
  assert 'config.parallel.mode' in str(info.value)


@have_fashion
def test_unknown_train_field_is_rejected():
  c = _base()
  with c.train.unlocked() if hasattr(c.train, 'unlocked') else _null():
    c.train.batchsize = 64
  with pytest.raises(ValueError, match=r'config\.train\.batchsize'):
    validate_config(c, num_devices=8, process_count=1)


# ---------------------------------------------------------------------------
# Command-line overrides: the one loader and parser (nfnet_jax/config/load.py)


def test_cli_overrides_to_none_and_of_none_fields():
  argv = ['train.py', '--config', os.path.join(ROOT, 'configs/nfnet.py:F0'),
          '--workdir', 'w', '--config.optimizer.clipping=None',
          '--config.optimizer.sam_rho=0.05',
          '--config.finetune.checkpoint=/ckpt/F0_haiku.npz',
          '--config.data.data_dir=/data/tfds',
          '--config.train.batch_size=256']
  rest, extra = config_load.split_overrides(argv)
  assert rest == argv[:5]
  assert dict(extra) == {'optimizer.clipping': 'None', 'optimizer.sam_rho': '0.05',
                         'finetune.checkpoint': '/ckpt/F0_haiku.npz',
                         'data.data_dir': '/data/tfds', 'train.batch_size': '256'}
  c = load('nfnet').get_config('F0')
  c.lock()
  config_load.apply_overrides(c, extra)
  assert c.optimizer.clipping is None and c.optimizer.sam_rho == 0.05
  assert c.finetune.checkpoint == '/ckpt/F0_haiku.npz'
  assert c.data.data_dir == '/data/tfds'
  assert c.train.batch_size == 256 and isinstance(c.train.batch_size, int)


def test_override_values_take_the_field_type():
  c = config_load.load_config(os.path.join(ROOT, 'configs/nfnet.py:F0'), [
      ('model.alpha', '1'), ('model.variant', '50'), ('data.random_flip', 'false'),
      ('data.mean', '(1, 2, 3)'), ('optimizer.wd_exclude', 'gain')])
  assert c.model.alpha == 1.0 and isinstance(c.model.alpha, float)
  assert c.model.variant == '50'          # a string field keeps the text
  assert c.data.random_flip is False
  assert c.data.mean == (1, 2, 3)
  assert c.optimizer.wd_exclude == 'gain'
  with pytest.raises(config_load.ConfigError,
                     match=r"config\.train\.batch_size='abc' \(str\) does not fit"):
    config_load.apply_override(c, 'train.batch_size', 'abc')


def test_the_choice_none_and_quoted_strings():
  """``--config.data.train_crop=none`` is the choice 'none' (it used to become
  None, which the field refused, and ``model.attention=none`` silently became
  None = the variant's default attention); None / null clear a field; quotes
  keep any text a string."""
  c = config_load.load_config(os.path.join(ROOT, 'configs/nfnet.py:F0'), [
      ('data.train_crop', 'none'), ('model.attention', 'none'),
      ('train.compilation_cache_dir', 'None'), ('optimizer.clipping', 'null'),
      ('data.eval_split', "'1'")])
  assert c.data.train_crop == 'none' and c.model.attention == 'none'
  assert c.train.compilation_cache_dir is None and c.optimizer.clipping is None
  assert c.data.eval_split == '1'
  assert config_load.parse_value('"none"') == 'none'
  assert config_load.parse_value(' None ') is None
  with pytest.raises(config_load.ConfigError, match=r"config\.optimizer\.weight_decay='none'"):
    config_load.apply_override(c, 'optimizer.weight_decay', 'none')


@pytest.mark.parametrize('value', [None, 'none', 'None', '1', 'True', 'relu', 'a,b', 0.1, 3,
                                   True, (1, 2), ('x',), (0.5, None)])
def test_override_text_reads_back_as_the_value(value):
  """A sweep's grid value reaches its run through this text (both launchers)."""
  text = config_load.override_text(value)
  assert config_load.parse_value(text) == value
  assert sweep_grid.override_flags({'data.train_crop': value}) == [
      f'--config.data.train_crop={text}']


@pytest.mark.parametrize('field,closest', [
    ('optimizer.clipingg', 'optimizer.clipping'),
    ('optimzer.clipping', 'optimizer.clipping'),
    ('data.datadir', 'data.data_dir'),
    ('sed', 'seed')])
def test_misspelled_override_names_the_closest_field(field, closest):
  c = load('nfnet').get_config('F0')
  with pytest.raises(config_load.ConfigError) as e:
    config_load.apply_override(c, field, '0.1')
  msg = str(e.value)
  assert '\n' not in msg
  assert msg.startswith(f'config.{field} is not a field')
  assert msg.endswith(f'did you mean config.{closest}?')


def test_unknown_field_in_a_config_file_names_the_closest_field():
  c = load('nfnet').get_config('F0')
  with c.train.unlocked() if hasattr(c.train, 'unlocked') else _null():
    c.train.log_evry = 5
  with pytest.raises(ValueError, match=r'config\.train\.log_evry is not a field.*'
                     r'did you mean config\.train\.log_every\?'):
    validate_config(c, check_devices=False)


def test_misspelled_override_exits_2_with_one_line():
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'train.py'),
       '--config', os.path.join(ROOT, 'configs', 'nfnet.py:F0'), '--workdir', 'unused',
       '--config.optimizer.clipingg=0.1'],
      capture_output=True, text=True, timeout=120, cwd=ROOT,
      env=subprocess_env())
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip() == ('error: config.optimizer.clipingg is not a field of '
                                 'this config; did you mean config.optimizer.clipping?')
  assert not os.path.exists(os.path.join(ROOT, 'unused'))


def test_quickstart_agc_excludes_exactly_the_classifier_and_the_skip_gains():
  """A renamed parameter must not slip into (or out of) the quickstart's AGC.

  The skip gains start at 0, where AGC's eps floor would hold them (see
  configs/fashion_mnist.py); every other parameter, the classifier bias
  included, is clipped.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from nfnet_jax import models  # pylint: disable=g-import-not-at-top
  from nfnet_jax.optim import masks  # pylint: disable=g-import-not-at-top
  from conftest import load_repo_config  # pylint: disable=g-import-not-at-top
  cfg = load_repo_config('fashion_mnist', '')
  assert cfg.optimizer.clipping == 0.04
  net = models.create_model(cfg.model, 10)
  shapes = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x, True),
                          jax.ShapeDtypeStruct((2, 48, 48, 1), 'float32'))[0]
  paths = masks.param_paths(shapes)
  excluded = masks.compile_selector(cfg.optimizer.clip_exclude)
  skipped = sorted(p for p in paths if excluded(p, None))
  skip_gains = sorted(p for p in paths if p.endswith('/skip_gain'))
  assert len(skip_gains) == 4                   # one block per stage
  assert skipped == sorted(skip_gains + ['NF_ResNet/~/linear/w']), skipped
  assert 'NF_ResNet/~/linear/b' in paths and 'NF_ResNet/~/linear/b' not in skipped
  for name in ('wide', 'best'):                # measured without AGC
    assert load_repo_config('fashion_mnist', name).optimizer.clipping is None
