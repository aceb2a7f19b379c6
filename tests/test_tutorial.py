"""docs/tutorial.ipynb cannot rot: every cell re-executes (tiny setting), and the
committed notebook is the executed output of docs/make_tutorial.py."""
import importlib.util
import os
import time

import pytest

from conftest import ROOT
DOCS = os.path.join(ROOT, 'docs')
nbformat = pytest.importorskip('nbformat')
pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')


def _maker():
  spec = importlib.util.spec_from_file_location('make_tutorial',
                                                os.path.join(DOCS, 'make_tutorial.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_committed_notebook_is_the_executed_generator_output():
  maker = _maker()
  nb = nbformat.read(os.path.join(DOCS, 'tutorial.ipynb'), as_version=4)
  assert [c.source for c in nb.cells] == [src for _, src in maker.CELLS]
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(c.execution_count for c in code), 'commit the executed notebook'
  assert not any(o.output_type == 'error' for c in code for o in c.outputs)
  outputs = ''.join(o.get('text', '') for c in code for o in c.outputs)
  assert 'full setting' in outputs and 'NFNet-F0 parameters: 71,489,284' in outputs
  images = [o for c in code for o in c.outputs if 'image/png' in o.get('data', {})]
  assert len(images) >= 3, 'SPP, loss + AGC and the AGC report figures'


def test_notebook_reexecutes_in_the_tiny_setting(monkeypatch):
  from nfnet_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
  if fashion_mnist.missing_files(fashion_mnist.DEFAULT_DIR):
    pytest.skip('needs Debian dataset-fashion-mnist')
  maker = _maker()
  monkeypatch.setenv('NFNET_TUTORIAL_TINY', '1')
  t0 = time.time()
  nb = maker.execute(maker.build(), DOCS, timeout=600)
  print(f'tutorial re-executed (tiny) in {time.time() - t0:.0f} s')
  outputs = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                    for o in c.outputs)
  assert 'tiny setting' in outputs
  assert 'NFNet-F0 GMACs at 256 px (official count): 12.38' in outputs
  assert 'max |ours - timm|' in outputs and 'steps in' in outputs
