"""Checkpointer: round trip, atomicity, corrupt-latest fallback, refusals."""
import collections
import os

import jax
import numpy as np
import pytest

from nfnet_jax.train import checkpoint as ckpt_lib

State = collections.namedtuple('State', ['step', 'params', 'opt'])


def _state(step, scale=1.0):
  return State(
      step=np.asarray(step, np.int32),
      params={'net/~/linear': {'w': np.full((3, 2), scale, np.float32),
                               'b': np.arange(2, dtype=np.float32) * scale}},
      opt=(np.asarray([scale, -scale], np.float32), {}))


def _template():
  return _state(0, 0.0)


def _assert_state_equal(a, b):
  assert int(a.step) == int(b.step)
  np.testing.assert_array_equal(a.params['net/~/linear']['w'],
                                b.params['net/~/linear']['w'])
  np.testing.assert_array_equal(a.params['net/~/linear']['b'],
                                b.params['net/~/linear']['b'])
  np.testing.assert_array_equal(a.opt[0], b.opt[0])


def test_round_trip_and_keep_last_k(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'ckpt'), keep=2, log=lambda m: None)
  for step in (1, 2, 3):
    assert ck.save(step, _state(step, float(step)), {'note': step})
  assert ck.steps() == [2, 3]                       # oldest dropped
  state, meta, step = ck.restore_latest(_template())
  assert step == 3 and meta['note'] == 3
  assert isinstance(state, State)                   # structure rebuilt
  _assert_state_equal(state, _state(3, 3.0))
  flat, meta = ck.restore_flat(2)
  np.testing.assert_array_equal(flat[".params['net/~/linear']['w']"],
                                np.full((3, 2), 2.0, np.float32))
  ck.close()


def test_unfinalized_checkpoint_is_never_loaded(tmp_path):
  d = tmp_path / 'ckpt'
  ck = ckpt_lib.Checkpointer(str(d), keep=3, log=lambda m: None)
  ck.save(2, _state(2, 2.0))
  ck.close()
  # A save killed half-way leaves orbax's temporary directory behind.
  tmp = d / '5.orbax-checkpoint-tmp-1234'
  (tmp / 'state').mkdir(parents=True)
  (tmp / 'state' / 'garbage').write_bytes(b'\x00' * 10)
  ck = ckpt_lib.Checkpointer(str(d), keep=3, log=lambda m: None)
  assert ck.steps() == [2]
  _, _, step = ck.restore_latest(_template())
  assert step == 2
  ck.close()


@pytest.mark.parametrize('damage', ['truncate', 'delete_state', 'empty_dir'])
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, damage):
  d = tmp_path / 'ckpt'
  logs = []
  ck = ckpt_lib.Checkpointer(str(d), keep=3, log=logs.append)
  ck.save(3, _state(3, 3.0))
  ck.save(6, _state(6, 6.0))
  ck.close()
  step_dir = d / '6'
  if damage == 'truncate':
    for root, _, files in os.walk(step_dir / 'state'):
      for f in files:
        p = os.path.join(root, f)
        with open(p, 'r+b') as fh:
          fh.truncate(max(os.path.getsize(p) // 3, 0))
  elif damage == 'delete_state':
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(step_dir / 'state')
  else:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(step_dir)
    step_dir.mkdir()                    # a bare directory named like a step
  ck = ckpt_lib.Checkpointer(str(d), keep=3, log=logs.append)
  state, _, step = ck.restore_latest(_template())
  assert step == 3
  _assert_state_equal(state, _state(3, 3.0))
  assert any('checkpoint' in m and '/6' in m and 'unreadable' in m
             for m in logs), logs
  # Moved aside for inspection, out of the way of new saves.
  assert not step_dir.exists()
  assert os.listdir(tmp_path / 'corrupt_checkpoints')
  assert ck.save(6, _state(6, 7.0))
  ck.close()


def test_nonfinite_state_is_not_saved(tmp_path):
  logs = []
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'ckpt'), log=logs.append)
  bad = _state(4, 1.0)
  bad.params['net/~/linear']['w'][0, 0] = np.nan
  assert not ck.save(4, bad)
  assert ck.steps() == []
  assert any('non-finite' in m for m in logs)
  ck.close()


def test_structure_mismatch_is_a_clear_error(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'ckpt'), log=lambda m: None)
  ck.save(1, _state(1))
  other = _template()._replace(
      params={'net/~/linear': {'w': np.zeros((4, 2), np.float32),
                               'b': np.zeros(2, np.float32)}})
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r'shape'):
    ck.restore_latest(other)
  renamed = _template()._replace(params={'other': {'w': np.zeros((3, 2))}})
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='fresh --workdir'):
    ck.restore_latest(renamed)
  assert ck.steps() == [1]             # a mismatch is not "corrupt"
  ck.close()


def test_empty_directory_restores_nothing(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'ckpt'), log=lambda m: None)
  assert ck.restore_latest(_template()) is None
  ck.close()


# ---------------------------------------------------------------------------
# Reading without a template (moved from test_evaluate.py with the reader)


def test_parse_keystr_round_trip():
  State = collections.namedtuple('State', 'step params ema_params opt_state')  # pylint: disable=invalid-name
  tree = State(step=np.zeros(()),
               params={'NF_ResNet/~/linear': {'w': np.ones((2, 3)), 'b': np.zeros(3)},
                       "odd'name": {'x': np.ones(1)}},
               ema_params={'NF_ResNet/~/linear': {'w': 2 * np.ones((2, 3))}},
               opt_state=(({'NF_ResNet/~/linear': {'w': np.ones((2, 3))}},), [np.ones(2)]))
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  paths = [jax.tree_util.keystr(p) for p, _ in leaves]
  values = [v for _, v in leaves]
  assert ckpt_lib.parse_keystr(".params['NF_ResNet/~/linear']['w']") == [
      'params', 'NF_ResNet/~/linear', 'w']
  assert ckpt_lib.parse_keystr('.opt_state[0][1]') == ['opt_state', 0, 1]
  params = ckpt_lib.subtree_from_paths(paths, values, 'params')
  assert set(params) == {'NF_ResNet/~/linear', "odd'name"}
  np.testing.assert_array_equal(params['NF_ResNet/~/linear']['w'], np.ones((2, 3)))
  ema = ckpt_lib.subtree_from_paths(paths, values, 'ema_params')
  np.testing.assert_array_equal(ema['NF_ResNet/~/linear']['w'], 2 * np.ones((2, 3)))
  assert ckpt_lib.subtree_from_paths(paths, values, 'model_state') is None
  with pytest.raises(ValueError, match='cannot parse'):
    ckpt_lib.parse_keystr('params/w')
