"""benchmarks/input_vs_timm.py: its image writer (the data every side reads)."""
import os

import numpy as np
from PIL import Image

from conftest import load_repo_module


def test_write_images_writes_decodable_jpegs_by_class_once(tmp_path):
  bench = load_repo_module('input_vs_timm_bench', 'benchmarks', 'input_vs_timm.py')
  root = str(tmp_path)
  assert bench.write_images(root, 5, classes=2, hw=(40, 50)) == root
  files = sorted(os.path.relpath(os.path.join(d, f), root)
                 for d, _, fs in os.walk(os.path.join(root, 'train')) for f in fs)
  assert files == [os.path.join('train', f'class{i % 2:03d}', f'img{i:05d}.JPEG')
                   for i in (0, 2, 4, 1, 3)]
  first = np.asarray(Image.open(os.path.join(root, files[0])))
  assert first.shape == (40, 50, 3) and first.std() > 0   # a real image, not a flat one
  # A second call finds the marker and writes nothing.
  os.remove(os.path.join(root, files[0]))
  bench.write_images(root, 5, classes=2, hw=(40, 50))
  assert not os.path.exists(os.path.join(root, files[0]))


def test_child_environment_preloads_tcmalloc_only_when_asked():
  bench = load_repo_module('input_vs_timm_bench', 'benchmarks', 'input_vs_timm.py')
  base = {'LD_PRELOAD': 'libother.so', 'HOME': '/h'}
  system = bench.child_environment(base, 'system', find=lambda: 'libtc.so')
  assert system['LD_PRELOAD'] == 'libother.so' and system['PYTHONPATH'] == bench.ROOT
  tc = bench.child_environment(base, 'tcmalloc', find=lambda: 'libtc.so')
  assert tc['LD_PRELOAD'] == 'libtc.so libother.so' and tc['HOME'] == '/h'
  try:
    bench.child_environment(base, 'tcmalloc', find=lambda: None)
  except SystemExit as e:
    assert 'libtcmalloc-minimal4' in str(e)
  else:
    raise AssertionError('a missing tcmalloc must stop the benchmark')
