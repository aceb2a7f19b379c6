"""nfnet_jax.train.weights: the one weight loader (spec parsing, kinds, errors).

The numerics of each kind are checked where the kinds are used
(test_evaluate, test_spp, test_pretrained, test_timm_interop, test_export,
test_predict, the fine-tune tests of test_bad_input).
"""
import jax
import numpy as np
import pytest

from nfnet_jax import errors
from nfnet_jax import pretrained
from nfnet_jax.analysis import convert
from nfnet_jax.train import weights as weights_lib

PARAMS = {'Net/~/linear': {'w': np.ones((4, 3), np.float32), 'b': np.zeros(3, np.float32)}}


def test_spec_kinds(tmp_path):
  d = str(tmp_path)
  f = str(tmp_path / 'weights.dill')
  open(f, 'wb').close()
  parse = weights_lib.parse_spec
  assert parse('timm:dm_nfnet_f0=a=b.pth') == ('timm', 'a=b.pth', 'dm_nfnet_f0')
  assert parse('official:x.bin') == ('official', 'x.bin', None)
  assert parse(f'ckpt:{d}') == ('ckpt', d, None)
  assert parse(d) == ('ckpt', d, None)
  assert parse('w.safetensors') == ('timm', 'w.safetensors', None)
  assert parse('F0_haiku.npz') == ('official', 'F0_haiku.npz', None)
  assert parse(f) == ('official', f, None)           # any other existing file
  assert parse('nowhere/run') == ('ckpt', 'nowhere/run', None)
  spec = weights_lib.WeightSpec('official', f)
  assert parse(spec) is spec
  with pytest.raises(ValueError, match='write timm:NAME=PATH'):
    parse('timm:dm_nfnet_f0')


def test_official_file(tmp_path):
  path = str(tmp_path / 'w.npz')
  pretrained.save_official(PARAMS, path)
  w = weights_lib.load_weights(path)
  assert (w.kind, w.path, w.step, w.tree) == ('official', path, None, 'params')
  assert w.model_state == {} and w.model_config is None and w.preprocessing is None
  np.testing.assert_array_equal(w.params['Net/~/linear']['w'], PARAMS['Net/~/linear']['w'])
  cfg = {'name': 'NFNet', 'variant': 'F0'}
  assert weights_lib.load_weights(f'official:{path}', model_config=cfg).model_config == cfg
  expected = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), PARAMS)
  assert weights_lib.load_weights(path, expected_params=expected).kind == 'official'
  expected['Net/~/linear']['b'] = jax.ShapeDtypeStruct((5,), np.float32)
  with pytest.raises(ValueError, match=r'does not match the model.*mis-shaped'):
    weights_lib.load_weights(path, expected_params=expected)


def test_one_line_errors(tmp_path):
  with pytest.raises(errors.NotFoundError, match='does not exist'):
    weights_lib.load_weights(str(tmp_path / 'nope.npz'))
  with pytest.raises(errors.NotFoundError, match=r"'ckpt:/no/such': /no/such does not exist"):
    weights_lib.load_weights('ckpt:/no/such')
  timm_file = str(tmp_path / 'w.pth')
  open(timm_file, 'wb').close()
  with pytest.raises(ValueError, match='needs its model name: timm:NAME='):
    weights_lib.load_weights(timm_file)
  junk = str(tmp_path / 'junk.npz')
  with open(junk, 'wb') as f:
    f.write(b'not a pickle')
  with pytest.raises(ValueError, match='not a readable official checkpoint'):
    weights_lib.load_weights(junk)
  # Empty directory: the checkpoint reader's message.
  with pytest.raises(FileNotFoundError, match='no finished checkpoint'):
    weights_lib.load_weights(str(tmp_path))


def test_convert_never_overwrites_a_file_of_another_kind(tmp_path):
  other = tmp_path / 'notes.txt'
  other.write_text('keep me')
  with pytest.raises(ValueError, match='not a weight destination'):
    convert.write_weights(str(other), PARAMS, None)
  assert other.read_text() == 'keep me'
  out = str(tmp_path / 'w.npz')
  assert convert.write_weights(out, PARAMS, None).startswith('official-format params')
  cfg, params = convert.read_weights(out)
  assert cfg is None and set(params) == set(PARAMS)
