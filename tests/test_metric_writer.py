"""MetricWriter: metrics.jsonl and TensorBoard get the same scalars; no torch import for it."""
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from conftest import subprocess_env

WRITE = '''
import json, sys
from nfnet_jax.train.logs import writer
w = writer.MetricWriter(sys.argv[1], total_steps=3, start_step=0, images_per_step=4,
                        enabled=True, progress=False)
w.write(1, 'train', {'train/loss': 0.5, 'train/top1': 0.25})
w.write(2, 'train', {'train/loss': 0.375, 'train/top1': 0.5})
w.write(2, 'eval', {'eval/top1': 0.75})
w.close()
torch_loaded = 'torch' in sys.modules
try:
  import torch  # the writer's import guard leaves torch importable
  importable = True
except ImportError:
  importable = False
print(json.dumps({'torch_loaded': torch_loaded, 'torch_importable': importable}))
'''


def _tensorboard_scalars(tb_dir):
  tf = pytest.importorskip('tensorflow')
  out = {}
  for path in glob.glob(os.path.join(tb_dir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        out[(v.tag, event.step)] = v.simple_value
  return out


def test_jsonl_and_tensorboard_hold_the_same_scalars_and_torch_is_not_imported(tmp_path):
  proc = subprocess.run([sys.executable, '-c', WRITE, str(tmp_path)], capture_output=True,
                        text=True, env=subprocess_env(), cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr
  flags = json.loads(proc.stdout.strip().splitlines()[-1])
  assert flags == {'torch_loaded': False,
                   'torch_importable': flags['torch_importable']}
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    assert flags['torch_importable']   # installed here, so the guard must not hide it
  except ImportError:
    pass
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  want = {}
  for r in rows:
    for k, v in r.items():
      if k not in ('step', 'split'):
        want[(k, r['step'])] = v
  assert len(want) == 5
  got = _tensorboard_scalars(str(tmp_path / 'tensorboard'))
  assert got == pytest.approx(want)
