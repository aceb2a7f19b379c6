"""nfnet_jax.utils.atomic: a write replaces the file whole or not at all."""
import json
import os
import stat

import pytest

from nfnet_jax.utils import atomic_path
from nfnet_jax.utils import atomic_write


class Crash(Exception):
  pass


def test_a_write_replaces_the_file(tmp_path):
  path = str(tmp_path / 'a.json')
  atomic_write(path, lambda f: json.dump({'v': 1}, f), binary=False)
  atomic_write(path, lambda f: json.dump({'v': 2}, f), binary=False)
  with open(path) as f:
    assert json.load(f) == {'v': 2}
  assert os.listdir(tmp_path) == ['a.json']
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_crash_inside_the_write_leaves_the_old_file_and_no_temp_file(tmp_path):
  path = str(tmp_path / 'w.bin')
  atomic_write(path, lambda f: f.write(b'old'))

  def half_then_crash(f):
    f.write(b'new, half wri')
    f.flush()
    raise Crash('disk gone')

  with pytest.raises(Crash, match='disk gone'):
    atomic_write(path, half_then_crash)
  with open(path, 'rb') as f:
    assert f.read() == b'old'
  assert os.listdir(tmp_path) == ['w.bin']
  # The same through the path form (writers that take a file name).
  with pytest.raises(KeyboardInterrupt):
    with atomic_path(path) as tmp:
      with open(tmp, 'wb') as f:
        f.write(b'x')
      raise KeyboardInterrupt
  with open(path, 'rb') as f:
    assert f.read() == b'old'
  assert os.listdir(tmp_path) == ['w.bin']


def test_a_crash_before_the_first_write_creates_nothing(tmp_path):
  path = str(tmp_path / 'sub' / 'new.bin')
  with pytest.raises(Crash):
    atomic_write(path, lambda f: (_ for _ in ()).throw(Crash()), makedirs=True)
  assert os.listdir(tmp_path / 'sub') == []
  atomic_write(path, lambda f: f.write(b'ok'))
  assert open(path, 'rb').read() == b'ok'
