"""Every command line that takes --config accepts the same overrides.

The config file used here has ``data.data_dir = None``: each command line
(train, evaluate, benchmark, spp, sweep) must take the data from
``--config.data.data_dir=...`` (a field whose default is None, which
ml_collections' own config flags refused), and must answer a misspelled
field with one line naming the closest field and exit status 2.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nfnet_jax.testing import fake_data

from conftest import ROOT
from conftest import subprocess_env
from conftest import TEST_XLA_FLAGS
N_TEST = 24
SCRIPTS = ('train', 'evaluate', 'benchmark', 'spp', 'sweep')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """(config file without a data_dir, idx data dir, scratch dir)."""
  d = tmp_path_factory.mktemp('cli')
  data = d / 'fmnist'
  data.mkdir()
  fake_data.write_fake_fashion_mnist(str(data), 32, N_TEST, seed=0, labels='random')
  cfg = d / 'nodir.py'
  cfg.write_text(
      'import os\n'
      'from nfnet_jax.config import load\n'
      f'fm = load.load_config_module({os.path.join(ROOT, "configs", "fashion_mnist.py")!r})\n'
      'def get_config():\n'
      '  c = fm.get_config("tiny")\n'
      '  c.data.data_dir = None          # must come from the command line\n'
      '  c.model.widths = (16, 16, 16, 16)\n'
      '  c.train.batch_size = 16\n'
      '  c.train.eval_batch_size = 8\n'
      '  c.train.total_steps = 2\n'
      '  c.optimizer.warmup_steps = 1\n'
      '  c.train.log_every = 1\n'
      '  c.train.compilation_cache_dir = None\n'
      '  return c\n')
  # An official-format checkpoint of the config's model, for evaluate.py.
  from nfnet_jax import models, pretrained  # pylint: disable=import-outside-toplevel
  from nfnet_jax.config import load  # pylint: disable=import-outside-toplevel
  model = models.create_model(load.load_config(str(cfg)).model, 10)
  params, _ = jax.jit(model.init, static_argnums=2)(
      jax.random.PRNGKey(0), np.zeros((1, 32, 32, 1), np.float32), True)
  pretrained.save_official(params, str(d / 'tiny_haiku.npz'))
  return str(cfg), str(data), d


def _run(script, args, timeout=600):
  env = subprocess_env(XLA_FLAGS=TEST_XLA_FLAGS)
  return subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', f'{script}.py')]
                        + args, capture_output=True, text=True, timeout=timeout,
                        cwd=ROOT, env=env)


def _args(script, cfg, tmp, ckpt):
  """Arguments that run ``script`` quickly (the overrides come after)."""
  return {
      'train': ['--config', cfg, '--workdir', str(tmp / 'work')],
      'evaluate': ['--config', cfg, '--checkpoint', ckpt,
                   '--out', str(tmp / 'eval.json')],
      'benchmark': ['--config', cfg, '--mode', 'data', '--steps', '2', '--warmup', '1',
                    '--nopeak', '--batch', '8'],
      'spp': ['--config', cfg, '--input', 'data', '--batch', '4', '--resolution', '32',
              '--models', 'nf_resnet26:widths=(16,16,16,16);stem_width=8',
              '--out', str(tmp / 'spp')],
      'sweep': ['--config', cfg, '--workdir', str(tmp / 'sweep'), '--sweep',
                'model.alpha=0.2,0.4', '--print_commands'],
  }[script]


@pytest.mark.parametrize('script', SCRIPTS)
def test_none_default_field_override(setup, script):
  cfg, data, tmp = setup
  ckpt = str(tmp / 'tiny_haiku.npz')
  tmp = tmp / script
  proc = _run(script, _args(script, cfg, tmp, ckpt) + [f'--config.data.data_dir={data}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  if script == 'train':
    summary = json.loads((tmp / 'work' / 'summary.json').read_text())
    assert summary['step'] == 2 and summary['final_eval']['count'] == N_TEST
  elif script == 'evaluate':
    result = json.loads((tmp / 'eval.json').read_text())
    assert result['results']['32']['num_examples'] == N_TEST
  elif script == 'benchmark':
    assert 'data fashion_mnist b8@32' in proc.stdout, proc.stdout
  elif script == 'spp':
    assert (tmp / 'spp' / 'spp.csv').exists()
  else:
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all(f'--config.data.data_dir={data}' in l for l in lines)


@pytest.mark.parametrize('script', SCRIPTS)
def test_misspelled_field_is_one_line_and_exit_2(setup, script):
  cfg, data, tmp = setup
  proc = _run(script, _args(script, cfg, tmp / 'bad' / script,
                                 str(tmp / 'tiny_haiku.npz')) + [
      f'--config.data.data_dir={data}', '--config.optimizer.clipingg=0.1'], timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip() == ('error: config.optimizer.clipingg is not a field of this '
                                 'config; did you mean config.optimizer.clipping?')
  assert 'Traceback' not in proc.stdout + proc.stderr
