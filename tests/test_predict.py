"""Preprocessing recorded with the weights, and nfnet-predict on real Fashion-MNIST images.

A tiny run trains on the first real Fashion-MNIST images (Debian's
dataset-fashion-mnist); its checkpoint carries the eval preprocessing record.
The first test images are written as PNG files; nfnet-predict on them (from
the workdir and from an nfnet-export directory) must reproduce the eval
pipeline's inputs and nfnet-evaluate's top-1 on the same images.
"""
import json
import os

import numpy as np
import pytest

from nfnet_jax.data import fashion_mnist
from nfnet_jax.testing import fake_data
from nfnet_jax.data import inference

from conftest import ROOT
N_TRAIN, N_TEST = 128, 40

pytestmark = pytest.mark.skipif(
    bool(fashion_mnist.missing_files(fashion_mnist.DEFAULT_DIR)),
    reason='needs Debian dataset-fashion-mnist (scripts/setup_env.sh installs it)')


def _config(data_dir):
  from nfnet_jax.config import load  # pylint: disable=g-import-not-at-top
  return load.load_config(os.path.join(ROOT, 'configs', 'fashion_mnist.py:local'), [
      ('data.data_dir', data_dir), ('train.total_steps', '12'),
      ('train.eval_batch_size', '16'), ('train.batch_size', '32'),
      ('train.checkpoint_every', '0'), ('train.compilation_cache_dir', 'None'),
      ('optimizer.warmup_steps', '2')])


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(config, workdir, PNG paths, labels) of a tiny real run."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp('predict')
  data = tmp / 'fmnist'
  data.mkdir()
  pngs, labels = [], None
  for split, n in (('train', N_TRAIN), ('test', N_TEST)):
    images, lbl = fashion_mnist.load_split(fashion_mnist.DEFAULT_DIR, split)
    img_name, lbl_name = fashion_mnist.FILES[split]
    fake_data.write_idx(str(data / img_name), images[:n].reshape(n, 28, 28))
    fake_data.write_idx(str(data / lbl_name), lbl[:n].astype(np.uint8))
    if split == 'test':
      labels = lbl[:n].astype(int)
      (tmp / 'png').mkdir()
      for i in range(n):
        path = str(tmp / 'png' / f'{i:03d}.png')
        Image.fromarray(images[i].reshape(28, 28)).save(path)
        pngs.append(path)
  config = _config(str(data))
  workdir = str(tmp / 'work')
  loop.train_and_evaluate(config, workdir)
  return config, workdir, pngs, labels


def test_checkpoint_records_the_eval_preprocessing(run):
  config, workdir, _, _ = run
  from nfnet_jax.analysis import convert  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  meta, _ = ckpt_lib.read_meta(workdir)
  rec = json.loads(meta['preprocessing'])
  # configs/fashion_mnist.py:local: 28 px grey images resized to 32 px, no crop.
  assert rec['input_size'] == [32, 32, 1] and rec['source_channels'] == 1
  assert rec['resize'] == 'squash' and rec['crop_padding'] == 0 and rec['crop_pct'] == 1.0
  assert rec['interpolation'] == 'bicubic'
  assert rec['mean'] == list(fashion_mnist.MEAN) and rec['std'] == list(fashion_mnist.STD)
  assert rec['num_classes'] == 10 and rec['class_names'][9] == 'Ankle boot'
  assert convert.read_preprocessing(workdir) == rec


def test_png_files_preprocess_to_the_eval_pipelines_inputs(run):
  config, workdir, pngs, labels = run
  from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import convert  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import predict as predict_lib  # pylint: disable=g-import-not-at-top
  rec = convert.read_preprocessing(workdir)
  got = inference.preprocess([predict_lib.read_image(p) for p in pngs], rec)
  want, want_labels = [], []
  for batch in data_lib.eval_iterator(config, layout='host'):
    keep = np.asarray(batch['mask']) > 0
    want.append(np.asarray(batch['images'])[keep])
    want_labels.append(np.asarray(batch['labels'])[keep])
  want = np.concatenate(want)
  assert got.shape == want.shape == (N_TEST, 32, 32, 1)
  np.testing.assert_array_equal(np.concatenate(want_labels), labels)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_predict_matches_evaluate_top1_from_workdir_and_export(run, tmp_path, capsys):
  config, workdir, pngs, labels = run
  from nfnet_jax.analysis import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.commands import export as export_cmd  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import predict as predict_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.commands import predict  # pylint: disable=g-import-not-at-top
  result = eval_lib.evaluate(config, workdir)
  (res,) = result['results'].values()
  assert res['num_examples'] == N_TEST
  ours = predict_lib.predict(workdir, pngs, top=5)
  top1 = np.mean([r['class_ids'][0] == y for r, y in zip(ours, labels)])
  assert abs(top1 - res['top1']) < 1e-9, (top1, res['top1'])
  top5 = np.mean([y in r['class_ids'] for r, y in zip(ours, labels)])
  assert abs(top5 - res['top5']) < 1e-9, (top5, res['top5'])
  for r in ours:   # five labels per image, by name, probabilities falling
    probs = [p for _, p in r['top']]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert r['top'][0][0] in inference.CLASS_NAMES['fashion_mnist']

  # The same from an nfnet-export directory (model.json carries the record).
  out = str(tmp_path / 'export')
  assert export_cmd.main(['--from', f'ckpt:{workdir}', '--image_size', '32', '--channels', '1',
                          '--formats', 'stablehlo', '--out', out]) == 0
  meta = json.load(open(os.path.join(out, 'model.json')))
  assert meta['preprocessing']['input_size'] == [32, 32, 1]
  exported = predict_lib.predict(out, pngs)
  assert [r['class_ids'][0] for r in exported] == [r['class_ids'][0] for r in ours]

  # The command line: a folder of images, one line per image.
  capsys.readouterr()
  assert predict.main(['--from', workdir, os.path.dirname(pngs[0]), '--top', '3']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == N_TEST and lines[0].startswith(pngs[0] + ': ')
  assert predict.main(['--from', workdir, str(tmp_path / 'nope.png')]) == 2
  assert 'no such file' in capsys.readouterr().err


def test_official_and_timm_records():
  rec = inference.imagenet(256)
  assert rec['input_size'] == [256, 256, 3] and rec['crop_padding'] == 32
  assert rec['crop_pct'] == round(256 / 288, 4) and rec['mean'][0] == pytest.approx(123.675)
  timm_cfg = {'input_size': (3, 224, 224), 'test_input_size': (3, 256, 256), 'crop_pct': 0.9,
              'interpolation': 'bicubic', 'mean': (0.485, 0.456, 0.406),
              'std': (0.229, 0.224, 0.225), 'num_classes': 1000}
  rec = inference.from_timm_cfg(timm_cfg)
  assert rec['input_size'] == [256, 256, 3] and rec['crop_padding'] == round(256 / 0.9) - 256
  assert rec['resize'] == 'aspect' and rec['std'][2] == pytest.approx(0.225 * 255)
  with pytest.raises(ValueError, match='resize'):
    inference.record((32, 32, 1), source_channels=1, resize='stretch')
