"""Generated bad inputs: every one ends in one clear line and exit status 2.

The cases are drawn (seeded, ``SEED``) from the space of

* config fields of the Fashion-MNIST tiny config x misspelled names, values
  of the wrong type and values out of range; config files with bad variants
  and syntax errors;
* files where the trainer reads data or weights: truncated / random-byte /
  empty idx files (also idx files holding JPEG, tfrecord, ``.npz`` or
  safetensors bytes), bad ``config.finetune.checkpoint`` files (truncated and
  random ``.npz``, JPEG, tfrecord, safetensors, broken orbax directories), an
  empty data folder, an image-folder class with no images, a data folder that
  is a file; workdirs that hold another model's checkpoint;
* the flags of every ``nfnet-*`` command (from its argparse parser: unknown
  flags, missing required ones, values of the wrong type, bad choices).

Each case must exit with status 2, print at most 3 lines that are not log
lines (``[train] ...``), print no traceback, leave every file that existed
in the workdir byte-identical, and leave no lock behind. Almost all run
in-process (the command's ``main`` with ``SystemExit`` caught); a handful
(``SUBPROCESS_CASES``) run the real scripts. A guard makes any case that
would reach the train step's compilation fail at once.

Failures found by this generator are kept below as named regression tests.
"""
import contextlib
import hashlib
import io
import os
import random
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from conftest import subprocess_env
SEED = 20260
MAX_LINES = 3

# ---------------------------------------------------------------------------
# Fixtures: data, config file, workdirs


def _write_idx_dir(d, n_train=32, n_test=16):
  from nfnet_jax.testing import fake_data  # pylint: disable=g-import-not-at-top
  return fake_data.write_fake_fashion_mnist(d, n_train, n_test)


CONFIG_TEXT = '''
from nfnet_jax.config import load
fm = load.load_config_module({fm!r})
def get_config():
  c = fm.get_config('tiny')
  c.data.data_dir = {data!r}
  c.model.widths = (8, 8, 8, 8)
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.train.total_steps = 2
  c.optimizer.warmup_steps = 1
  c.train.compilation_cache_dir = None
  return c
'''


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  d = tmp_path_factory.mktemp('fuzz')
  data = _write_idx_dir(str(d / 'idx'))
  cfg = d / 'tiny.py'
  cfg.write_text(CONFIG_TEXT.format(
      fm=os.path.join(ROOT, 'configs', 'fashion_mnist.py'), data=data))
  return {'root': d, 'data': data, 'config': str(cfg)}


def _make_workdir(path):
  """A workdir with files a previous run left (all must stay identical)."""
  os.makedirs(os.path.join(path, 'tensorboard'), exist_ok=True)
  with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
    f.write('{"step": 2, "train/loss": 2.3}\n')
  with open(os.path.join(path, 'summary.json'), 'w') as f:
    f.write('{"status": "completed", "step": 2}\n')
  with open(os.path.join(path, 'tensorboard', 'events.out.tfevents.1'), 'wb') as f:
    f.write(bytes(range(256)))
  return path


def _hashes(path):
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      p = os.path.join(root, name)
      with open(p, 'rb') as f:
        out[os.path.relpath(p, path)] = hashlib.sha256(f.read()).hexdigest()
  return out


# ---------------------------------------------------------------------------
# Bad bytes


def _rng(*key):
  return random.Random(f'{SEED}/' + '/'.join(map(str, key)))


def _jpeg_bytes():
  # A JPEG header and a few segments, then nothing: not an idx, npz, ...
  return (b'\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00'
          b'\x00\xff\xdb\x00C\x00' + bytes(range(64)) + b'\xff\xd9')


def _tfrecord_bytes():
  payload = b'\x0a\x04\x0a\x02hi'
  return (struct.pack('<Q', len(payload)) + b'\x00' * 4 + payload + b'\x00' * 4)


def _npz_bytes(truncate=None):
  buf = io.BytesIO()
  np.savez(buf, w=np.ones((4, 4), np.float32))
  data = buf.getvalue()
  return data[:truncate] if truncate is not None else data


def _safetensors_bytes(truncate=None):
  header = b'{"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}'
  data = struct.pack('<Q', len(header)) + header + b'\x00' * 64
  return data[:truncate] if truncate is not None else data


BAD_BYTES = {
    'empty': lambda r: b'',
    'random': lambda r: bytes(r.randrange(256) for _ in range(r.randrange(1, 600))),
    'jpeg': lambda r: _jpeg_bytes(),
    'tfrecord': lambda r: _tfrecord_bytes(),
    'npz': lambda r: _npz_bytes(),
    'npz_truncated': lambda r: _npz_bytes(r.randrange(10, 100)),
    'safetensors': lambda r: _safetensors_bytes(),
    'safetensors_truncated': lambda r: _safetensors_bytes(r.randrange(4, 40)),
    'gzip_garbage': lambda r: b'\x1f\x8b\x08\x00' + bytes(r.randrange(256) for _ in range(50)),
}


def _truncated_idx(path, r):
  with open(path, 'rb') as f:
    data = f.read()
  return data[:r.randrange(0, len(data) - 1)]


# ---------------------------------------------------------------------------
# Case generation


def _base_config():
  from nfnet_jax.config import load  # pylint: disable=g-import-not-at-top
  return load.load_config(os.path.join(ROOT, 'configs', 'fashion_mnist.py:tiny'))


def _leaves(config, prefix=''):
  out = []
  for key in config.keys():
    v = config[key]
    name = f'{prefix}{key}'
    if hasattr(v, 'keys') and not isinstance(v, dict):
      out += _leaves(v, name + '.')
    else:
      out.append((name, v))
  return out


def _misspell(name, r, existing):
  head, _, last = name.rpartition('.')
  for _ in range(20):
    chars = list(last)
    op = r.randrange(3)
    i = r.randrange(len(chars))
    if op == 0 and len(chars) > 2:
      del chars[i]
    elif op == 1:
      chars.insert(i, r.choice('xqz'))
    elif len(chars) > 1:
      j = min(i + 1, len(chars) - 1)
      chars[i], chars[j] = chars[j], chars[i]
    cand = (head + '.' if head else '') + ''.join(chars)
    if cand not in existing:
      return cand
  return name + 'x'


# Values the validators must reject (field, command-line text).
OUT_OF_RANGE = [
    ('train.batch_size', '0'), ('train.batch_size', '-16'),
    ('train.batch_size', '30'), ('train.total_steps', '0'),
    ('train.total_steps', '-5'), ('train.eval_batch_size', '0'),
    ('train.eval_batch_size', '12'), ('train.eval_every', '-1'),
    ('train.log_every', '0'), ('train.checkpoint_every', '-1'),
    ('train.keep_checkpoints', '0'), ('train.max_consecutive_nonfinite', '0'),
    ('train.nonfinite', 'ignore'), ('train.async_checkpoints', 'maybe'),
    ('train.profile_steps', '5,2'), ('train.profile_steps', 'a,b'),
    ('train.lock_stale_after_s', '0.0'), ('train.lock_stale_after_s', '-3.0'),
    ('train.lost_host_timeout_s', '0.5'), ('train.lost_host_timeout_s', '-1.0'),
    ('train.eval_compute_dtype', 'float16'), ('compute_dtype', 'float8'),
    ('optimizer.clipping', '0.0'), ('optimizer.clipping', '-0.01'),
    ('optimizer.warmup_steps', '-1'), ('optimizer.warmup_steps', '1000'),
    ('optimizer.label_smoothing', '-0.1'), ('optimizer.label_smoothing', '1.5'),
    ('optimizer.ema_decay', '1.5'), ('optimizer.ema_decay', '-0.1'),
    ('optimizer.weight_decay', '-1.0'), ('optimizer.schedule', 'triangle'),
    ('optimizer.base_lr', '-0.1'),
    ('model.alpha', '0.0'), ('model.alpha', '-0.2'), ('model.width', '0.0'),
    ('model.width', '-1.0'), ('model.depths', '(1,1,1)'),
    ('model.depths', '(0,1,1,1)'), ('model.activation', 'swishy'),
    ('model.name', 'NFNett'), ('model.variant', 'ResNet27'),
    ('model.stem', 'giant'), ('model.se_ratio', '-0.5'),
    ('model.stochdepth_rate', '1.5'), ('model.stochdepth_rate', '-0.1'),
    ('model.drop_rate', '-0.1'), ('model.conv_impl', 'fast'),
    ('model.widths', '(8,8,8)'), ('model.stem_width', '0'),
    ('data.name', 'imagenet2013'), ('data.image_size', '0'),
    ('data.image_size', '-32'), ('data.eval_image_size', '-1'),
    ('data.data_dir', '/nonexistent/fuzz_data'), ('data.shuffle_buffer', '-1'),
    ('data.pad_crop_padding', '-1'), ('parallel.mode', 'spmd'),
    ('parallel.num_devices', '-1'), ('parallel.distributed', 'maybe'),
    ('finetune.checkpoint', '/nonexistent/fuzz_weights.npz'),
    ('seed', '1.5'),
]

BAD_VARIANTS = ['nfnet.py:F9', 'nfnet.py:F0,huge', 'fashion_mnist.py:huge',
                'nf_resnet.py:ResNet27', 'nf_regnet.py:B9', 'resnet.py:ResNet7',
                'nfnet_light.py:l9', 'nfnet.py:']


def config_cases():
  config = _base_config()
  leaves = _leaves(config)
  names = {n for n, _ in leaves}
  sections = {n.split('.')[0] for n in names if '.' in n}
  cases = []
  r = _rng('misspell')
  for name, _ in leaves:
    cases.append((f'unknown:{name}', [f'--config.{_misspell(name, r, names)}=1']))
  for s in sorted(sections):
    cases.append((f'unknown_section:{s}', [f'--config.{s}x.width=1']))
  r = _rng('types')
  for name, v in leaves:
    if isinstance(v, bool):
      bad = r.choice(['maybe', '2', '0.5', '(1,2)'])
    elif isinstance(v, (int, float)):
      bad = r.choice(['abc', 'True', '(1,2)', '[3]', 'x1'])
    elif isinstance(v, tuple):
      bad = r.choice(['abc', '3.5'])
    else:
      continue
    cases.append((f'type:{name}={bad}', [f'--config.{name}={bad}']))
  for name, value in OUT_OF_RANGE:
    cases.append((f'range:{name}={value}', [f'--config.{name}={value}']))
  cases.append(('override_without_value', ['--config.model.width']))
  return cases


def _commands():
  from nfnet_jax.commands import entry  # pylint: disable=g-import-not-at-top
  return sorted(set(entry.COMMANDS.values()))


def flag_cases():
  import argparse  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  cases = []
  for cmd in _commands():
    module = importlib.import_module(f'nfnet_jax.commands.{cmd}')
    p = module.parser()
    required = [a for a in p._actions if a.required and a.option_strings]  # pylint: disable=protected-access
    positional = [a for a in p._actions if not a.option_strings and  # pylint: disable=protected-access
                  not isinstance(a, argparse._HelpAction)]  # pylint: disable=protected-access
    cases.append((f'{cmd}:unknown_flag', cmd, ['--no_such_flag=1']))
    if required or positional:
      cases.append((f'{cmd}:no_arguments', cmd, []))
    for a in p._actions:  # pylint: disable=protected-access
      if not a.option_strings or isinstance(a, argparse._HelpAction):  # pylint: disable=protected-access
        continue
      flag = a.option_strings[0]
      if a.choices:
        cases.append((f'{cmd}:{flag}=bad_choice', cmd, [flag, 'no-such-choice']))
      elif a.type in (int, float) or getattr(a.type, '__name__', '') == 'int_list':
        cases.append((f'{cmd}:{flag}=abc', cmd, [flag, 'abc']))
  return cases


# Where the trainer reads files: (id, what is replaced, kind of bad bytes).
IDX_TARGETS = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
               't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']


def file_cases():
  cases = []
  for target in IDX_TARGETS:
    for kind in ('truncated', 'empty', 'random', 'jpeg', 'tfrecord', 'npz',
                 'safetensors'):
      cases.append((f'idx:{target}:{kind}', 'idx', (target, kind)))
    cases.append((f'idx:{target}:missing', 'idx', (target, 'missing')))
  for kind in ('npz', 'npz_truncated', 'random', 'jpeg', 'tfrecord', 'empty',
               'safetensors', 'safetensors_truncated', 'gzip_garbage'):
    cases.append((f'finetune_file:{kind}', 'finetune', kind))
  for kind in ('safetensors', 'safetensors_truncated', 'random'):
    cases.append((f'finetune_timm:{kind}', 'finetune_timm', kind))
  for kind in ('empty_dir', 'empty_checkpoints', 'step_without_files',
               'garbage_step'):
    cases.append((f'finetune_orbax:{kind}', 'finetune_orbax', kind))
  for kind in ('empty', 'class_without_images', 'is_a_file', 'no_split'):
    cases.append((f'folder:{kind}', 'folder', kind))
  cases.append(('data_dir:empty', 'data_dir', 'empty'))
  cases.append(('data_dir:is_a_file', 'data_dir', 'file'))
  cases.append(('workdir:below_a_file', 'workdir', 'below_file'))
  cases.append(('workdir:other_model', 'workdir', 'other_model'))
  return cases


CONFIG_CASES = config_cases()
FLAG_CASES = flag_cases()
FILE_CASES = file_cases()


def test_case_count():
  n = len(CONFIG_CASES) + len(FLAG_CASES) + len(FILE_CASES)
  assert n >= 200, n
  ids = [c[0] for c in CONFIG_CASES + FLAG_CASES + FILE_CASES]
  assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------
# Running a case


class _ReachedCompile(AssertionError):
  pass


@pytest.fixture
def no_compile(monkeypatch):
  """Any case that gets as far as building the train step fails at once."""
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top

  def guard(*args, **kwargs):
    raise _ReachedCompile('the bad input was accepted: training would start')
  monkeypatch.setattr(loop, 'compile_steps', guard)


def _is_log(line):
  return line.startswith('[') or not line.strip() or '%|' in line


def run_command(cmd, argv):
  """``nfnet_jax.commands.<cmd>.main(argv)`` in-process: (status, output)."""
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'nfnet_jax.commands.{cmd}')
  out, err = io.StringIO(), io.StringIO()
  code = 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      code = module.main(argv) or 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  return code, out.getvalue() + err.getvalue()


def check(code, output, workdir=None, before=None):
  lines = [l for l in output.splitlines() if not _is_log(l)]
  assert 'Traceback' not in output, output[-3000:]
  assert code == 2, (code, output[-3000:])
  assert 1 <= len(lines) <= MAX_LINES, lines
  assert lines[0].startswith(('error:', 'usage:')) or 'error' in lines[0], lines
  if workdir is not None:
    after = _hashes(workdir)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, changed
    assert not os.path.exists(os.path.join(workdir, 'train.lock'))


def _train(env, tmp_path, extra, config=None, workdir=None):
  workdir = workdir or _make_workdir(str(tmp_path / 'work'))
  before = _hashes(workdir) if os.path.isdir(workdir) else {}
  code, out = run_command('train', ['--config', config or env['config'],
                                    '--workdir', workdir] + list(extra))
  return code, out, workdir, before


@pytest.mark.parametrize('case', CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_field(env, tmp_path, no_compile, case):
  _, extra = case
  code, out, workdir, before = _train(env, tmp_path, extra)
  check(code, out, workdir, before)


@pytest.mark.parametrize('variant', BAD_VARIANTS)
def test_bad_config_variant(env, tmp_path, no_compile, variant):
  code, out, workdir, before = _train(
      env, tmp_path, [], config=os.path.join(ROOT, 'configs', variant))
  check(code, out, workdir, before)


@pytest.mark.parametrize('case', FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_bad_command_flag(env, tmp_path, no_compile, case):
  _, cmd, argv = case
  code, out = run_command(cmd, argv)
  check(code, out)


def _bad_file(path, kind, r):
  with open(path, 'wb') as f:
    f.write(BAD_BYTES[kind](r))
  return path


def _orbax_dir(base, kind):
  d = os.path.join(base, 'weights')
  os.makedirs(d)
  if kind == 'empty_checkpoints':
    os.makedirs(os.path.join(d, 'checkpoints'))
  elif kind == 'step_without_files':
    os.makedirs(os.path.join(d, 'checkpoints', '5', 'state'))
  elif kind == 'garbage_step':
    os.makedirs(os.path.join(d, 'checkpoints', '5', 'state'))
    with open(os.path.join(d, 'checkpoints', '5', '_CHECKPOINT_METADATA'), 'w') as f:
      f.write('{"item_handlers": tru')
    with open(os.path.join(d, 'checkpoints', '5', 'state', 'manifest.ocdbt'), 'wb') as f:
      f.write(b'\x00garbage')
  return d


def _other_model_checkpoint(workdir):
  """A checkpoint of a different state in ``workdir`` (resume must refuse)."""
  from nfnet_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  ck.save(1, {'params': {'linear': {'w': np.ones((3, 3), np.float32)}}})
  ck.close()


def _image_folder(base, kind):
  d = os.path.join(base, 'folder')
  if kind == 'is_a_file':
    with open(d, 'w') as f:
      f.write('not a folder')
    return d
  os.makedirs(d)
  if kind == 'class_without_images':
    for split in ('train', 'val'):
      os.makedirs(os.path.join(d, split, 'cat'))
      os.makedirs(os.path.join(d, split, 'dog'))
      with open(os.path.join(d, split, 'cat', 'a.jpg'), 'wb') as f:
        f.write(_jpeg_bytes())
      with open(os.path.join(d, split, 'dog', 'notes.txt'), 'w') as f:
        f.write('no images here')
  elif kind == 'no_split':
    os.makedirs(os.path.join(d, 'train', 'cat'))
    with open(os.path.join(d, 'train', 'cat', 'a.jpg'), 'wb') as f:
      f.write(_jpeg_bytes())
  return d


@pytest.mark.parametrize('case', FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_file(env, tmp_path, no_compile, case):
  name, where, what = case
  r = _rng(name)
  extra = []
  workdir = None
  if where == 'idx':
    import shutil  # pylint: disable=g-import-not-at-top
    data = shutil.copytree(env['data'], str(tmp_path / 'idx'))
    target, kind = what
    path = os.path.join(data, target)
    if kind == 'missing':
      os.remove(path)
    elif kind == 'truncated':
      content = _truncated_idx(path, r)
      with open(path, 'wb') as f:
        f.write(content)
    else:
      _bad_file(path, kind, r)
    extra = [f'--config.data.data_dir={data}']
  elif where == 'finetune':
    path = _bad_file(str(tmp_path / 'weights.npz'), what, r)
    extra = [f'--config.finetune.checkpoint={path}']
  elif where == 'finetune_timm':
    path = _bad_file(str(tmp_path / 'weights.safetensors'), what, r)
    extra = [f'--config.finetune.checkpoint={path}',
             '--config.finetune.format=timm',
             '--config.finetune.timm_name=nf_resnet26']
  elif where == 'finetune_orbax':
    extra = [f'--config.finetune.checkpoint={_orbax_dir(str(tmp_path), what)}']
  elif where == 'folder':
    extra = ['--config.data.name=image_folder',
             f'--config.data.data_dir={_image_folder(str(tmp_path), what)}']
  elif where == 'data_dir':
    d = str(tmp_path / 'd')
    if what == 'empty':
      os.makedirs(d)
    else:
      with open(d, 'w') as f:
        f.write('x')
    extra = [f'--config.data.data_dir={d}']
  elif where == 'workdir':
    if what == 'below_file':
      with open(tmp_path / 'afile', 'w') as f:
        f.write('x')
      workdir = str(tmp_path / 'afile' / 'work')
    else:
      workdir = _make_workdir(str(tmp_path / 'work'))
      _other_model_checkpoint(workdir)
  code, out, workdir, before = _train(env, tmp_path, extra, workdir=workdir)
  check(code, out, workdir if os.path.isdir(workdir) else None, before)


# ---------------------------------------------------------------------------
# A handful through the real scripts (a fresh process: entry point, absl and
# TensorFlow start-up included).

SUBPROCESS_CASES = [
    ('train_bad_variant', 'train', ['--config', 'configs/nfnet.py:F9', '--workdir', '{tmp}/w']),
    ('train_unknown_field', 'train', ['--config', '{cfg}', '--workdir', '{tmp}/w',
                                      '--config.model.widht=1']),
    ('train_truncated_idx', 'train', ['--config', '{cfg}', '--workdir', '{tmp}/w',
                                      '--config.data.data_dir={tmp}/idx']),
    ('evaluate_missing_checkpoint', 'evaluate', ['--config', '{cfg}', '--checkpoint',
                                                 '{tmp}/nothing']),
    ('convert_unknown_flag', 'convert', ['--bogus']),
]


@pytest.mark.parametrize('case', SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_bad_input_in_a_fresh_process(env, tmp_path, case):
  import shutil  # pylint: disable=g-import-not-at-top
  _, script, argv = case
  data = shutil.copytree(env['data'], str(tmp_path / 'idx'))
  path = os.path.join(data, IDX_TARGETS[0])
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(content[:len(content) // 2])
  argv = [a.format(tmp=tmp_path, cfg=env['config']) for a in argv]
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', f'{script}.py')] + argv,
      capture_output=True, text=True, timeout=300, cwd=ROOT,
      env=subprocess_env(JAX_LOG_COMPILES='1'))
  check(proc.returncode, proc.stdout + proc.stderr)
  assert 'Compiling' not in proc.stderr


# ---------------------------------------------------------------------------
# Regression tests: the failures this generator found, shrunk.


def test_regression_bool_for_a_number_field_is_one_line(env, tmp_path, no_compile):
  """Found: ``--config.optimizer.base_lr=True`` was taken (bool is an int to
  ConfigDict) and failed later in the optimizer with a traceback."""
  for field in ('optimizer.base_lr', 'data.mixup_alpha', 'train.log_every'):
    code, out, workdir, before = _train(env, tmp_path, [f'--config.{field}=True'])
    check(code, out, workdir, before)
    assert f'config.{field}=True (bool) does not fit' in out, out


def test_regression_warmup_longer_than_the_run_is_a_config_error(
    env, tmp_path, no_compile):
  """Found: warmup_steps > total_steps passed validate_config and raised a
  multi-line ValueError (traceback) when the optimizer was built."""
  code, out, workdir, before = _train(env, tmp_path,
                                      ['--config.optimizer.warmup_steps=1000'])
  check(code, out, workdir, before)
  assert 'config.optimizer.warmup_steps=1000.0 is invalid: must be <= ' \
      'config.train.total_steps (2)' in out, out
