"""Official checkpoint format: round trip, corrupt files, name/shape mismatches."""
import pickle

import dill
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax import pretrained

TINY = dict(name='NFNet', depths=(1, 1, 1, 1), widths=(16, 32, 64, 64),
            stem_widths=(4, 8, 8, 8), group_width=8)


@pytest.fixture(scope='module')
def tiny_params():
  shapes = pretrained.expected_param_shapes(TINY, 7)
  rng = np.random.default_rng(0)
  return {m: {n: rng.standard_normal(s).astype(np.float32) for n, s in d.items()}
          for m, d in shapes.items()}


def _assert_same(a, b):
  assert set(a) == set(b)
  for m in a:
    assert set(a[m]) == set(b[m]), m
    for n in a[m]:
      np.testing.assert_array_equal(np.asarray(a[m][n]), np.asarray(b[m][n]))


def test_round_trip(tiny_params, tmp_path):
  path = str(tmp_path / 'tiny_haiku.npz')
  pretrained.save_official(jax.tree.map(jnp.asarray, tiny_params), path)
  # The file is the official format: a dill pickle of nested dicts of numpy arrays.
  with open(path, 'rb') as f:
    raw = dill.load(f)
  assert type(raw) is dict and all(type(v) is dict for v in raw.values())
  assert isinstance(raw['NFNet/~/linear']['w'], np.ndarray)
  loaded = pretrained.load_official(path, TINY)  # num_classes from linear/b
  _assert_same(loaded, tiny_params)
  assert isinstance(loaded['NFNet/~/linear']['w'], jax.Array)
  # The same against an explicit expected tree.
  _assert_same(pretrained.load_official(path, expected_params=tiny_params), tiny_params)


def test_plain_pickle_loads(tiny_params, tmp_path):
  path = tmp_path / 'plain.npz'
  with open(path, 'wb') as f:
    pickle.dump(tiny_params, f)
  _assert_same(pretrained.load_official(str(path), TINY, num_classes=7), tiny_params)


def test_truncated_and_garbage_files(tiny_params, tmp_path):
  good = tmp_path / 'good.npz'
  pretrained.save_official(tiny_params, str(good))
  data = good.read_bytes()
  bad = tmp_path / 'truncated.npz'
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match='not a readable official checkpoint') as info:
    pretrained.load_official(str(bad), TINY)
  assert str(bad) in str(info.value)
  garbage = tmp_path / 'garbage.npz'
  garbage.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(ValueError, match='not a readable official checkpoint'):
    pretrained.load_official(str(garbage), TINY)
  # A real npz archive (zip) is not the official format either.
  npz = tmp_path / 'real.npz'
  np.savez(npz, a=np.zeros(3))
  with pytest.raises(ValueError, match='not a readable official checkpoint'):
    pretrained.load_official(str(npz), TINY)
  wrong = tmp_path / 'wrong_structure.npz'
  with open(wrong, 'wb') as f:
    pickle.dump({'NFNet/~/linear': np.zeros(3)}, f)
  with pytest.raises(ValueError, match='not a module name mapping'):
    pretrained.load_official(str(wrong), TINY)


def test_mismatch_lists_missing_unexpected_and_misshaped(tiny_params, tmp_path):
  params = {m: dict(d) for m, d in tiny_params.items()}
  del params['NFNet/~/nf_block_2/~/conv1b']
  params['NFNet/~/extra_module'] = {'w': np.zeros(2, np.float32)}
  params['NFNet/~/stem_conv0']['w'] = np.zeros((3, 3, 3, 5), np.float32)
  path = tmp_path / 'mismatch.npz'
  with open(path, 'wb') as f:
    dill.dump(params, f)
  with pytest.raises(ValueError) as info:
    pretrained.load_official(str(path), TINY, num_classes=7)
  msg = str(info.value)
  assert str(path) in msg
  assert '3 missing' in msg and 'NFNet/~/nf_block_2/~/conv1b/w' in msg
  assert '1 unexpected' in msg and 'NFNet/~/extra_module/w' in msg
  assert '1 mis-shaped' in msg and 'file (3, 3, 3, 5) vs model (3, 3, 3, 4)' in msg
  # Wrong variant for a correct file: the shapes differ, one clear message.
  good = tmp_path / 'good.npz'
  pretrained.save_official(tiny_params, str(good))
  with pytest.raises(ValueError, match='mis-shaped'):
    pretrained.load_official(str(good), dict(TINY, widths=(16, 32, 64, 128)))


def test_infer_official_variant_from_names():
  """F*_haiku.npz files carry no config; the variant follows from the tree."""
  def fake(variant):
    shapes = pretrained.expected_param_shapes({'name': 'NFNet', 'variant': variant}, 1000)
    # Only names matter, plus the stem's output width; keep arrays tiny.
    tree = {m: {n: np.zeros(1) for n in d} for m, d in shapes.items()}
    tree['NFNet/~/stem_conv3']['w'] = np.zeros(shapes['NFNet/~/stem_conv3']['w'])
    return tree

  assert pretrained.infer_nfnet_config(fake('F0')) == {'name': 'NFNet', 'variant': 'F0'}
  assert pretrained.infer_nfnet_config(fake('F2')) == {'name': 'NFNet', 'variant': 'F2'}
  assert pretrained.infer_nfnet_config(fake('F1+')) == {'name': 'NFNet', 'variant': 'F1+'}
  assert pretrained.infer_nfnet_config({'NF_ResNet/~/linear': {}}) is None


def test_official_f0_shapes_accepted(tmp_path):
  """The check accepts the full official F0 tree (94 modules) and flags a bad shape.

  Done on ShapeDtypeStructs through `check_params` (the function
  `load_official` uses) instead of writing a 286 MB file.
  """
  shapes = pretrained.expected_param_shapes({'name': 'NFNet', 'variant': 'F0'}, 1000)
  assert len(shapes) == 94
  structs = {m: {n: jax.ShapeDtypeStruct(s, jnp.float32) for n, s in d.items()}
             for m, d in shapes.items()}
  pretrained.check_params(structs, shapes)
  structs['NFNet/~/linear']['w'] = jax.ShapeDtypeStruct((3072, 10), jnp.float32)
  with pytest.raises(ValueError, match=r'NFNet/~/linear/w: file \(3072, 10\)'):
    pretrained.check_params(structs, shapes)


def test_read_official_checks_format_only(tiny_params, tmp_path):
  # A checkpoint of a model that does not match TINY (extra module, other
  # classifier size) still reads: only the structure is checked.
  other = dict(tiny_params)
  other['Extra/~/conv'] = {'w': np.ones((3, 3, 1, 2), np.float32)}
  path = tmp_path / 'other.npz'
  pretrained.save_official(other, str(path))
  _assert_same(pretrained.read_official(str(path)), other)
  flat = tmp_path / 'flat.npz'
  with open(flat, 'wb') as f:
    pickle.dump({'w': np.ones(3)}, f)
  with pytest.raises(ValueError, match="entry 'w' is not a module name"):
    pretrained.read_official(str(flat))
