"""Bad configurations and bad data: clear errors, before anything compiles.

* A table of bad configs (one bad field each, starting from the Fashion-MNIST
  quickstart config or the NFNet-F0 recipe): ``validate_config`` raises one
  ``ValueError`` that names the field, shows the bad value and says what is
  allowed, and reports that field only (no cascade of follow-up errors).
* ``train_and_evaluate`` and the command line reject bad configs before any
  XLA compilation (checked with JAX's compile-event monitoring) and before
  writing anything to the workdir; the command line exits with status 2.
* Bad data: undecodable images in a tfds data set are skipped, counted and
  reported in ``summary.json``; labels out of range stop the run with a clear
  error; an unprepared imagenet2012 names each missing manual tar and where
  it belongs; an incompatible fine-tuning checkpoint names the mismatches.
"""
import io
import json
import os
import re
import subprocess
import sys
import time

import dill
import jax
import numpy as np
import pytest

import nfnet_jax.data
import nfnet_jax.models
from nfnet_jax import config as config_lib
from nfnet_jax.data import fashion_mnist
from nfnet_jax.testing import fake_data
from nfnet_jax.data import imagenet
from nfnet_jax.train.validate import validate_config
from nfnet_jax.train import loop
from nfnet_jax.train import state as state_lib

from conftest import ROOT
from conftest import load_repo_config
from conftest import TEST_XLA_FLAGS
MISSING = '/nonexistent/nfnet_jax_test'
# Fields an error message may mention as a remedy besides the bad one.
HINT_FIELDS = {'data.allow_download', 'data.train_split'}


def load_config(arg='local'):
  return load_repo_config('fashion_mnist', arg, 'fashion_mnist_config')


def write_idx(directory, n_train=64, n_test=16, label_offset=0):
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  for split, n in (('train', n_train), ('test', n_test)):
    stems = fashion_mnist.FILES[split]
    fake_data.write_idx(os.path.join(directory, stems[0]), rng.integers(
        0, 256, size=(n, 28, 28), dtype=np.uint8))
    fake_data.write_idx(os.path.join(directory, stems[1]),
                            (np.arange(n) % 10 + label_offset).astype(np.uint8))
  return directory


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  return write_idx(str(tmp_path_factory.mktemp('fmnist_bad_input')))


def fashion(idx_dir):
  c = load_config()
  c.data.data_dir = idx_dir
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  return c


def nfnet(idx_dir):
  """The NFNet-F0 recipe (base config) on the small idx data."""
  c = config_lib.base_config()
  c.data.name = 'fashion_mnist'
  nfnet_jax.data.apply_dataset_defaults(c.data)
  c.data.data_dir = idx_dir
  c.data.image_size = c.data.eval_image_size = 32
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  return c


def _set(section, **kv):
  def mutate(c):
    node = c if section is None else c[section]
    for k, v in kv.items():
      node[k] = v
  return mutate


# (id, base config, mutation, field, bad value, words of the allowed values)
BAD_CONFIGS = [
    ('model_name', fashion, _set('model', name='NFNett'), 'model.name',
     'NFNett', ['NFNet', 'NFResNet', 'ResNet']),
    ('nfresnet_variant', fashion, _set('model', variant='ResNet27'),
     'model.variant', 'ResNet27', ['ResNet26', 'ResNet50']),
    ('nfnet_variant', nfnet, _set('model', variant='F9'), 'model.variant',
     'F9', ['F0', 'F7+']),
    ('dataset', fashion, _set('data', name='imagenet2013'), 'data.name',
     'imagenet2013', ['imagenet2012', 'fashion_mnist']),
    ('batch_not_divisible', fashion, _set('train', batch_size=30),
     'train.batch_size', 30, ['multiple of the number of devices (4)']),
    ('eval_batch_not_divisible', fashion, _set('train', eval_batch_size=10),
     'train.eval_batch_size', 10, ['multiple of the number of devices (4)']),
    ('clipping_negative', fashion, _set('optimizer', clipping=-0.01),
     'optimizer.clipping', -0.01, ['> 0', 'None']),
    ('clipping_zero', nfnet, _set('optimizer', clipping=0.0),
     'optimizer.clipping', 0.0, ['> 0', 'None']),
    ('alpha_zero', nfnet, _set('model', alpha=0.0), 'model.alpha', 0.0,
     ['> 0']),
    ('alpha_negative', fashion, _set('model', alpha=-0.2), 'model.alpha', -0.2,
     ['> 0']),
    ('activation', nfnet, _set('model', activation='swishy'),
     'model.activation', 'swishy', ['gelu', 'relu', 'silu']),
    ('eval_res_below_min', nfnet, _set('data', eval_image_size=16),
     'data.eval_image_size', 16, ['at least 32']),
    ('train_res_below_min', fashion, _set('data', image_size=8),
     'data.image_size', 8, ['at least 32']),
    ('missing_data_dir', fashion, _set('data', data_dir=MISSING),
     'data.data_dir', MISSING, ['train-images-idx3-ubyte',
                                'dataset-fashion-mnist']),
    ('finetune_missing', fashion,
     _set('finetune', checkpoint=MISSING + '/F0_haiku.npz'),
     'finetune.checkpoint', MISSING + '/F0_haiku.npz', ['existing file']),
    ('nonfinite_policy', fashion, _set('train', nonfinite='ignore'),
     'train.nonfinite', 'ignore', ["'skip'", "'raise'"]),
    ('max_consecutive_nonfinite', fashion,
     _set('train', max_consecutive_nonfinite=0),
     'train.max_consecutive_nonfinite', 0, ['>= 1']),
    ('parallel_mode', fashion, _set('parallel', mode='pjit'), 'parallel.mode',
     'pjit', ["'pmap'", "'shard_map'"]),
    ('num_devices', fashion, _set('parallel', num_devices=16),
     'parallel.num_devices', 16, ['at most 8']),
    ('distributed', fashion, _set('parallel', distributed='yes'),
     'parallel.distributed', 'yes', ["'auto'", "'on'", "'off'"]),
    ('compute_dtype', fashion, _set(None, compute_dtype='float16'),
     'compute_dtype', 'float16', ["'float32'", "'bfloat16'"]),
    ('total_steps', fashion, _set('train', total_steps=0), 'train.total_steps',
     0, ['>= 1']),
    ('checkpoint_every', fashion, _set('train', checkpoint_every=-1),
     'train.checkpoint_every', -1, ['>= 0']),
    ('keep_checkpoints', fashion, _set('train', keep_checkpoints=0),
     'train.keep_checkpoints', 0, ['>= 1']),
    ('log_every', fashion, _set('train', log_every=0), 'train.log_every', 0,
     ['>= 1']),
    ('compilation_cache_dir', fashion, _set('train', compilation_cache_dir=''),
     'train.compilation_cache_dir', '', ['None to disable']),
    ('eval_every', fashion, _set('train', eval_every=-5), 'train.eval_every',
     -5, ['>= 0']),
    ('optimizer_name', fashion, _set('optimizer', name='lamb'),
     'optimizer.name', 'lamb', ["'sgd'", "'adam'", "'adamw'"]),
    ('momentum', fashion, _set('optimizer', momentum=1.5),
     'optimizer.momentum', 1.5, ['[0, 1)']),
    ('base_lr', fashion, _set('optimizer', base_lr=-0.1), 'optimizer.base_lr',
     -0.1, ['>= 0']),
    ('schedule', fashion, _set('optimizer', schedule='linear'),
     'optimizer.schedule', 'linear', ["'cosine'", "'constant'"]),
    ('weight_decay', fashion, _set('optimizer', weight_decay=-1e-5),
     'optimizer.weight_decay', -1e-5, ['>= 0']),
    ('warmup_steps', fashion, _set('optimizer', warmup_steps=-1),
     'optimizer.warmup_steps', -1, ['>= 0']),
    ('accum_steps', fashion, _set('optimizer', accum_steps=0),
     'optimizer.accum_steps', 0, ['>= 1']),
    ('label_smoothing', fashion, _set('optimizer', label_smoothing=1.0),
     'optimizer.label_smoothing', 1.0, ['[0, 1)']),
    ('ema_decay', fashion, _set('optimizer', ema_decay=1.0),
     'optimizer.ema_decay', 1.0, ['[0, 1)', 'None']),
    ('sam_rho', fashion, _set('optimizer', sam_rho=-0.1), 'optimizer.sam_rho',
     -0.1, ['> 0', 'None']),
    ('wd_exclude_regex', fashion, _set('optimizer', wd_exclude='(['),
     'optimizer.wd_exclude', '([', ['regular expression']),
    ('train_crop', fashion, _set('data', train_crop='random'),
     'data.train_crop', 'random', ["'inception'", "'pad_crop'", "'none'"]),
    ('mixup_alpha', fashion, _set('data', mixup_alpha=-1.0),
     'data.mixup_alpha', -1.0, ['>= 0']),
    ('randaugment_layers', fashion, _set('data', randaugment_layers=50),
     'data.randaugment_layers', 50, ['[0, 20]']),
    ('eval_compute_dtype', nfnet, _set('train', eval_compute_dtype='half'),
     'train.eval_compute_dtype', 'half', ["'float32'", "'bfloat16'"]),
    ('randaugment_mode', nfnet, _set('data', randaugment_mode='tpu'),
     'data.randaugment_mode', 'tpu', ["'official'", "'increasing'"]),
    ('resize_method', fashion, _set('data', resize_method='lanczos7'),
     'data.resize_method', 'lanczos7', ["'bicubic'", "'bilinear'"]),
    ('std_zero', fashion, _set('data', std=(0.0,)), 'data.std', (0.0,),
     ['std > 0']),
    ('eval_split', fashion, _set('data', eval_split='validaton'),
     'data.eval_split', 'validaton', ["'train'", "'test'"]),
    ('stochdepth_rate', fashion, _set('model', stochdepth_rate=1.5),
     'model.stochdepth_rate', 1.5, ['[0, 1)']),
    ('drop_rate', nfnet, _set('model', drop_rate=1.0), 'model.drop_rate', 1.0,
     ['[0, 1)']),
    ('se_ratio', fashion, _set('model', se_ratio=-1.0), 'model.se_ratio', -1.0,
     ['>= 0']),
    ('width', fashion, _set('model', width=0.0), 'model.width', 0.0, ['> 0']),
    ('depths', fashion, _set('model', depths=(1, 1, 1)), 'model.depths',
     (1, 1, 1), ['4 positive ints']),
    ('conv_impl', nfnet, _set('model', conv_impl='fast'), 'model.conv_impl',
     'fast', ["'auto'", "'xla'", "'split'"]),
]


def test_table_is_large_enough():
  assert len(BAD_CONFIGS) >= 25
  assert len({case[0] for case in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize('name,base,mutate,field,value,allowed', BAD_CONFIGS,
                         ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_is_one_clear_error(idx_dir, name, base, mutate, field,
                                       value, allowed):
  del name
  config = base(idx_dir)
  validate_config(config, num_devices=4, process_count=1)  # the base is fine
  mutate(config)
  with pytest.raises(ValueError) as e:
    validate_config(config, num_devices=4, process_count=1)
  msg = str(e.value)
  assert f'config.{field}' in msg, msg
  assert repr(value) in msg, msg
  for word in allowed:
    assert word in msg, f'{word!r} not in: {msg}'
  # One problem, one report: no "N config errors" list, no other field
  # blamed (a hint may point at a related switch).
  assert 'config errors' not in msg, msg
  mentioned = set(re.findall(r'config\.([a-z_]+(?:\.[a-z_0-9]+)?)', msg))
  assert mentioned <= {field} | HINT_FIELDS, (mentioned, msg)


# ---------------------------------------------------------------------------
# Nothing compiles, nothing is written, before the config is checked.


@pytest.fixture
def compile_events():
  events = []
  recording = [True]

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if recording[0] and 'compile' in event:
      events.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  yield events
  recording[0] = False


def test_compile_events_are_observable(compile_events):
  # The probe works: a fresh jitted function does record a compile event.
  jax.jit(lambda x: x * 3.5 + 1.25)(np.arange(7.0)).block_until_ready()
  assert compile_events


@pytest.mark.parametrize('case', ['batch_not_divisible', 'eval_res_below_min',
                                  'missing_data_dir', 'nfnet_variant',
                                  'clipping_zero'])
def test_train_and_evaluate_fails_before_compiling(idx_dir, tmp_path,
                                                   compile_events, case):
  _, base, mutate, field, _, _ = next(c for c in BAD_CONFIGS if c[0] == case)
  config = base(idx_dir)
  config.parallel.num_devices = 4
  mutate(config)
  workdir = tmp_path / 'work'
  t0 = time.time()
  with pytest.raises(ValueError, match=rf'config\.{field}'):
    loop.train_and_evaluate(config, str(workdir))
  assert not compile_events, compile_events
  assert not workdir.exists()
  assert time.time() - t0 < 30


def test_command_line_bad_config_exits_2_without_compiling(idx_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4 ' + TEST_XLA_FLAGS,
             TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
  workdir = tmp_path / 'work'
  cmd = [sys.executable, os.path.join(ROOT, 'scripts', 'train.py'),
         '--config', os.path.join(ROOT, 'configs', 'fashion_mnist.py:local'),
         '--workdir', str(workdir), f'--config.data.data_dir={idx_dir}',
         '--config.train.batch_size=30', '--config.model.alpha=-1.0',
         '--config.optimizer.clipping=0.0']
  env['JAX_LOG_COMPILES'] = '1'   # any compile would be logged on stderr
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                        timeout=300, cwd=ROOT)
  assert proc.returncode == 2, proc.stderr[-3000:]
  err = proc.stderr
  assert 'error: 3 config errors' in err, err[-3000:]
  for line in ('config.train.batch_size=30', 'config.model.alpha=-1.0',
               'config.optimizer.clipping=0.0'):
    assert line in err, err[-3000:]
  assert 'Compiling' not in err and 'Finished XLA compilation' not in err
  assert not workdir.exists()


# ---------------------------------------------------------------------------
# Bad data


def _toy_model(num_classes):
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def forward(images, is_training, return_metrics=False):
    del is_training, return_metrics
    x = hk.Conv2D(4, 3, stride=4, name='conv')(images)
    x = jnp.mean(jax.nn.relu(x), axis=(1, 2))
    return {'logits': hk.Linear(num_classes, name='linear')(x)}
  return hk.transform_with_state(forward)


@pytest.fixture
def toy_model(monkeypatch):
  monkeypatch.setattr(nfnet_jax.models, 'create_model',
                      lambda model_config, num_classes: _toy_model(num_classes))


def _small_run(config):
  config.parallel.num_devices = 2
  config.train.total_steps = 3
  config.train.checkpoint_every = 0
  config.train.log_every = 1
  config.train.eval_every = 0
  config.optimizer.warmup_steps = 1
  return config


def test_labels_out_of_range_stop_with_a_clear_error(tmp_path, toy_model):
  data_dir = write_idx(str(tmp_path / 'bad_labels'), label_offset=3)
  config = _small_run(fashion(data_dir))
  with pytest.raises(ValueError, match=r'labels in .*bad_labels.* out of '
                                       r'range \[0, 10\): min 3, max 12'):
    loop.train_and_evaluate(config, str(tmp_path / 'work'))
  assert not os.path.exists(tmp_path / 'work' / 'checkpoints' / '1')


def _bad_images_builder():
  """A tiny tfds image data set (JPEG) where every 8th image is broken."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class NfnetTestBadImages(tfds.core.GeneratorBasedBuilder):
    """64 train / 16 test 20x20 JPEGs, 4 classes; 1 in 8 undecodable."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=tfds.features.FeaturesDict({
              'image': tfds.features.Image(shape=(None, None, 3),
                                           encoding_format='jpeg'),
              'label': tfds.features.ClassLabel(num_classes=4)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(64, 0),
              'test': self._generate_examples(16, 1)}

    def _generate_examples(self, n, seed):
      rng = np.random.default_rng(seed)
      for i in range(n):
        img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        payload = tf.io.encode_jpeg(img).numpy()
        if i % 8 == 5:
          payload = b'\xff\xd8\xff\xe0 a truncated JPEG'
        yield i, {'image': io.BytesIO(payload), 'label': i % 4}

  return NfnetTestBadImages


def test_undecodable_images_are_skipped_and_reported(tmp_path, toy_model,
                                                     capsys):
  builder_cls = _bad_images_builder()
  data_dir = str(tmp_path / 'tfds')
  builder_cls(data_dir=data_dir).download_and_prepare()
  config = _small_run(config_lib.base_config())
  config.data.name = builder_cls.name
  config.data.data_dir = data_dir
  config.data.train_split, config.data.eval_split = 'train', 'test'
  config.data.image_size = config.data.eval_image_size = 32
  config.data.eval_crop_padding = 0
  config.data.train_crop = 'pad_crop'
  config.data.randaugment_layers = 0
  config.data.mixup_alpha = 0.0
  config.data.cutmix = False
  config.data.shuffle_buffer = 64
  config.model.variant = 'F0'
  config.train.batch_size = 16
  config.train.eval_batch_size = 8
  # 8 of the 64 train images are broken: the reader (which runs ahead of
  # the 3 steps, into the next epoch) has met at least one, at most 2 epochs'.
  summary = loop.train_and_evaluate(config, str(tmp_path / 'work'))
  capsys.readouterr()
  assert summary['status'] == 'completed'
  by_split = summary['decode_errors_by_split']
  assert by_split['eval'] == 2          # test images 5 and 13
  assert 1 <= by_split['train'] <= 16
  assert summary['decode_errors'] == by_split['train'] + by_split['eval']
  assert summary['final_eval']['count'] == 14
  with open(tmp_path / 'work' / 'summary.json') as f:
    assert json.load(f)['decode_errors_by_split'] == by_split


def test_missing_imagenet_manual_files_are_listed(tmp_path):
  config = config_lib.base_config()
  config.data.data_dir = str(tmp_path / 'tfds')
  manual = os.path.join(str(tmp_path / 'tfds'), 'downloads', 'manual')
  os.makedirs(manual)
  with open(os.path.join(manual, imagenet.VAL_TAR), 'wb'):
    pass   # the validation tar is there, the train tar is not
  with pytest.raises(ValueError) as e:
    validate_config(config, num_devices=1, process_count=1)
  msg = str(e.value)
  assert 'config.data.data_dir' in msg
  assert (f'missing {imagenet.TRAIN_TAR}: expected at '
          f'{os.path.join(manual, imagenet.TRAIN_TAR)}') in msg, msg
  assert f'missing {imagenet.VAL_TAR}' not in msg
  assert 'prepare_data.py' in msg


def test_incompatible_finetune_checkpoint_names_the_mismatch(idx_dir,
                                                             tmp_path):
  import haiku as hk  # pylint: disable=g-import-not-at-top
  config = fashion(idx_dir)
  model = nfnet_jax.models.create_model(config.model, 10)
  # Shapes only (eval_shape: no compile, no eager convolutions).
  shapes, _ = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0),
                         np.zeros((1, 32, 32, 1), np.float32),
                         is_training=True))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                        hk.data_structures.to_mutable_dict(shapes))
  # Another width for the first block's conv0, and one missing module.
  ckpt = {m: dict(p) for m, p in params.items()}
  block = next(m for m in ckpt if m.endswith('/conv0'))
  ckpt[block]['w'] = np.zeros(ckpt[block]['w'].shape[:-1] + (3,), np.float32)
  dropped = next(m for m in ckpt if m.endswith('/conv2'))
  del ckpt[dropped]
  path = str(tmp_path / 'F0_haiku.npz')
  with open(path, 'wb') as f:
    dill.dump(ckpt, f)
  config.finetune.checkpoint = path
  validate_config(config, num_devices=1, process_count=1)
  with pytest.raises(ValueError) as e:
    state_lib.load_finetune_params(config, params, log=lambda *a: None)
  msg = str(e.value)
  assert f'config.finetune.checkpoint={path!r}' in msg
  assert f'{block}/w: checkpoint' in msg, msg
  assert f'{dropped}/w' in msg, msg
  assert 'config.model.variant' in msg


def test_incompatible_finetune_checkpoint_fails_before_compiling(idx_dir, tmp_path,
                                                                  compile_events):
  # A checkpoint of another model (a conv with other shapes): the loop must
  # name the mismatch from abstract shapes, before compiling the model's init.
  config = fashion(idx_dir)
  config.parallel.num_devices = 1
  model = nfnet_jax.models.create_model(config.model, 10)
  shapes, _ = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 1), np.float32),
                         is_training=True))
  ckpt = {m: {n: np.zeros(s.shape, s.dtype) for n, s in p.items()}
          for m, p in shapes.items()}
  conv = next(m for m in ckpt if m.endswith('/conv1'))
  ckpt[conv]['w'] = np.zeros(ckpt[conv]['w'].shape[:-1] + (5,), np.float32)
  path = str(tmp_path / 'other_model.npz')
  with open(path, 'wb') as f:
    dill.dump(ckpt, f)
  config.finetune.checkpoint = path
  compile_events.clear()
  with pytest.raises(ValueError, match=rf'{conv}/w: checkpoint'):
    loop.train_and_evaluate(config, str(tmp_path / 'work'))
  backend_compiles = [e for e in compile_events if 'backend_compile' in e]
  assert not backend_compiles, compile_events


def test_compatible_finetune_checkpoint_is_loaded_with_a_fresh_classifier(idx_dir, tmp_path):
  # The good path: every parameter but the classifier comes from the file.
  config = fashion(idx_dir)
  config.parallel.num_devices = 1
  config.train.total_steps = 1
  config.optimizer.warmup_steps = 0
  model = nfnet_jax.models.create_model(config.model, 10)
  shapes, _ = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 1), np.float32),
                         is_training=True))
  rng = np.random.RandomState(0)
  ckpt = {m: {n: np.asarray(rng.randn(*s.shape), np.float32) for n, s in p.items()}
          for m, p in shapes.items()}
  path = str(tmp_path / 'pretrained.npz')
  with open(path, 'wb') as f:
    dill.dump(ckpt, f)
  config.finetune.checkpoint = path
  captured = {}
  real = state_lib.host_state_from

  def spy(params, *args, **kwargs):
    captured['params'] = params
    return real(params, *args, **kwargs)
  state_lib.host_state_from = spy
  try:
    loop.train_and_evaluate(config, str(tmp_path / 'work'))
  finally:
    state_lib.host_state_from = real
  params = captured['params']
  for module, sub in ckpt.items():
    for name, value in sub.items():
      if state_lib.is_classifier(module):
        assert not np.array_equal(params[module][name], value)   # fresh init
      else:
        np.testing.assert_array_equal(params[module][name], value)
