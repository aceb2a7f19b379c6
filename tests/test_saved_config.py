"""The config saved with a checkpoint: read back, compared, used by readers."""
import io
import os
from contextlib import redirect_stderr

import numpy as np
import pytest

from nfnet_jax import errors
from nfnet_jax.config import load
from nfnet_jax.train import checkpoint as ckpt_lib

from conftest import ROOT
FASHION = os.path.join(ROOT, 'configs', 'fashion_mnist.py:tiny')


@pytest.fixture
def workdir(tmp_path):
  """A workdir whose checkpoint carries the tiny Fashion-MNIST config."""
  config = load.load_config(FASHION)
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'))
  ck.save(3, {'params': {'linear': {'w': np.ones((2, 2), np.float32)}}},
          meta={'config': config.to_json()})
  ck.close()
  return str(tmp_path), config


def test_saved_config_round_trips_with_tuples(workdir):
  path, config = workdir
  saved, step = ckpt_lib.saved_config(path)
  assert step == 3
  assert saved.to_dict() == config.to_dict()
  assert isinstance(saved.model.depths, tuple)
  assert ckpt_lib.config_differences(saved, config) == []


def test_config_differences_lists_model_fields_first(workdir):
  _, config = workdir
  other = load.load_config(FASHION, [('train.total_steps', '7'),
                                     ('model.width', '0.5')])
  diff = ckpt_lib.config_differences(config, other)
  assert diff[0] == ('model.width', 0.25, 0.5)
  assert ('train.total_steps', 30, 7) in diff
  assert ckpt_lib.contradicting_fields(config, other) == [('model.width', 0.25, 0.5)]


def test_reader_uses_the_saved_config_and_refuses_a_contradicting_one(workdir):
  path, config = workdir
  used = ckpt_lib.config_for_checkpoint(path, None, None,
                                        [('data.data_dir', '/elsewhere')])
  assert used.model.to_dict() == config.model.to_dict()
  assert used.data.data_dir == '/elsewhere'
  # Another data_dir or step count is no contradiction.
  fine = load.load_config(FASHION, [('data.data_dir', '/x'),
                                    ('train.total_steps', '9')])
  assert ckpt_lib.config_for_checkpoint(path, fine, 'f.py') is fine
  nfnet = load.load_config(os.path.join(ROOT, 'configs', 'nfnet.py:F0'))
  with pytest.raises(errors.BadInputError) as e:
    ckpt_lib.config_for_checkpoint(path, nfnet, 'configs/nfnet.py:F0')
  msg = str(e.value)
  assert msg.startswith(f'--config configs/nfnet.py:F0 contradicts the config '
                        f"{path} was trained with: config.model.name='NFNet' "
                        "(trained with 'NFResNet')"), msg
  assert e.value.hint.startswith('leave out --config')
  with pytest.raises(errors.BadInputError, match='--config is required'):
    ckpt_lib.config_for_checkpoint(os.path.join(path, 'nothing'), None)


def test_evaluate_command_with_a_contradicting_config_is_one_line(workdir):
  """The issue's case: nfnet-evaluate --config nfnet.py:F0 on a Fashion workdir."""
  from nfnet_jax.commands import evaluate  # pylint: disable=g-import-not-at-top
  path, _ = workdir
  err = io.StringIO()
  with redirect_stderr(err), pytest.raises(SystemExit) as e:
    evaluate.main(['--config', os.path.join(ROOT, 'configs', 'nfnet.py:F0'),
                   '--checkpoint', path])
  assert e.value.code == 2
  lines = err.getvalue().strip().splitlines()
  assert len(lines) == 2 and 'contradicts the config' in lines[0], lines
