"""timm <-> nfnet_jax weights: logits against timm itself, round trips, errors.

Needs torch + timm (the `timm` extra, part of `.[test]`); skipped cleanly
when torch is absent. Logits are compared for each covered family (F-series
dm_ and timm's own, NF-ResNet plain / SE / ECA, light NFNet SE / ECA,
NF-RegNet) at reduced depth and width (timm's `create_model(name,
depths=..., channels=...)` overrides, ours through `overrides=`) and for
full-size dm_nfnet_f0; the tensor names and shapes of every covered name
are compared with timm's (meta-device models: no memory, no compute).
"""
import builtins
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nfnet_jax.interop import timm as timm_lib

# Other test modules of this process have loaded TensorFlow by now.
timm_lib.avoid_triton_after_tensorflow()
torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

from nfnet_jax import pretrained  # pylint: disable=g-import-not-at-top
from nfnet_jax.models import create_model  # pylint: disable=g-import-not-at-top

NUM_CLASSES = 7
# Reduced sizes per family: (timm create_model kwargs, our config overrides).
# NFNet: timm computes num_features from the default channels before the
# override, so it is set as well (ours: 2 x the last width).
_NFNET_TINY = (dict(depths=(1, 1, 1, 1), channels=(256, 256, 256, 256), num_features=512),
               dict(depths=(1, 1, 1, 1), widths=(256, 256, 256, 256)))
# NF-ResNet widths whose C/16 (timm's SE width) is a multiple of 8.
_RESNET_TINY = (dict(depths=(1, 1, 1, 1), channels=(128, 128, 256, 256)),
                dict(depths=(1, 1, 1, 1), widths=(128, 128, 256, 256)))
# The light NFNets: final conv 1.5x the last width.
_LIGHT_TINY = (dict(depths=(1, 1, 1, 1), channels=(256, 256, 256, 256), num_features=384),
               dict(depths=(1, 1, 1, 1), widths=(256, 256, 256, 256)))
# NF-RegNet at its own widths (already small), one block per stage.
_REGNET_TINY = (dict(depths=(1, 1, 1, 1)), dict(depths=(1, 1, 1, 1)))
TINY = {'dm_nfnet_f0': _NFNET_TINY, 'nfnet_f0': _NFNET_TINY,
        'nf_resnet26': _RESNET_TINY, 'nf_seresnet26': _RESNET_TINY,
        'nf_ecaresnet26': _RESNET_TINY, 'nfnet_l0': _LIGHT_TINY,
        'eca_nfnet_l0': _LIGHT_TINY, 'nf_regnet_b0': _REGNET_TINY}


def _randomized_timm(name, **kwargs):
  """A timm model with random weights AND random gains, biases, skip gains.

  timm initialises gains to 1 (0 for the last conv of timm's own blocks),
  biases and skip gains to 0, which would hide mapping errors in them.
  """
  torch.manual_seed(0)
  model = timm.create_model(name, num_classes=NUM_CLASSES, **kwargs).eval()
  with torch.no_grad():
    for key, v in model.state_dict().items():
      if key.endswith(('.gain', '.skipinit_gain')):
        v.copy_(1.0 + 0.3 * torch.randn_like(v))
      elif key.endswith('.bias'):
        v.copy_(0.1 * torch.randn_like(v))
  return model


def _timm_logits(model, x_nhwc):
  with torch.no_grad():
    return model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()


def _our_logits(model_config, params, x_nhwc):
  model = create_model(model_config, NUM_CLASSES)
  fn = jax.jit(lambda p, x: model.apply(p, {}, None, x, False)[0]['logits'])
  return np.asarray(fn(params, x_nhwc))


def _rel(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _images(size, seed=0):
  return np.random.RandomState(seed).randn(2, size, size, 3).astype(np.float32)


@pytest.mark.parametrize('name', sorted(TINY))
def test_logits_equal_timm_and_round_trip(name, tmp_path):
  """timm -> load_timm -> same logits; save_timm -> strict timm load -> same logits."""
  timm_kw, ours_kw = TINY[name]
  ref_model = _randomized_timm(name, **timm_kw)
  # An odd size exercises the padding differences (SAME vs symmetric, the
  # ceil-mode average pool of timm's shortcuts).
  x = _images(35)
  ref = _timm_logits(ref_model, x)
  config, params = timm_lib.load_timm(ref_model.state_dict(), name, overrides=ours_kw)
  ours = _our_logits(config, params, x)
  assert _rel(ours, ref) < 1e-4

  suffix = '.pth' if 'resnet' in name else '.safetensors'
  path = str(tmp_path / f'w{suffix}')
  assert timm_lib.save_timm(params, config, path, name=name) == name
  back = timm.create_model(name, num_classes=NUM_CLASSES, **timm_kw).eval()
  sd = (torch.load(path, weights_only=True) if suffix == '.pth'
        else __import__('safetensors.torch', fromlist=['_']).load_file(path))
  back.load_state_dict(sd, strict=True)
  assert _rel(_timm_logits(back, x), ours) < 1e-4


def test_full_size_dm_nfnet_f0_logits_and_inverse():
  """The real dm_nfnet_f0 (233 tensors): logits, and the exact inverse map."""
  ref_model = _randomized_timm('dm_nfnet_f0')
  x = _images(32)
  ref = _timm_logits(ref_model, x)
  sd = ref_model.state_dict()
  config, params = timm_lib.load_timm(sd, 'dm_nfnet_f0')
  assert sum(len(d) for d in params.values()) == 233
  assert _rel(_our_logits(config, params, x), ref) < 1e-4
  # The name is inferred from the config here (no name=); dm_ models need no
  # rescaling, so the way back is exact.
  back = timm_lib.to_timm_state_dict(params, config)
  assert sorted(back) == sorted(sd)
  for key, v in back.items():
    np.testing.assert_array_equal(v, sd[key].numpy(), err_msg=key)


@pytest.mark.parametrize('name', timm_lib.supported_names())
def test_tensor_names_and_shapes_equal_timm(name):
  with torch.device('meta'):
    model = timm.create_model(name)
  theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  ours = timm_lib.expected_state_dict_shapes(name)
  assert pretrained.flat_shapes_report(theirs, ours) == []


def test_official_numerics_differ_from_timm_numerics():
  """The same dm_ weights under each numerics option: timm's reproduces timm;
  switching either option to the official form moves the logits by more
  than the tolerance (so both options matter) but stays close (the weights
  mean the same)."""
  timm_kw, ours_kw = _NFNET_TINY
  ref_model = _randomized_timm('dm_nfnet_f0', **timm_kw)
  x = _images(32)
  ref = _timm_logits(ref_model, x)
  config, params = timm_lib.load_timm(ref_model.state_dict(), 'dm_nfnet_f0', overrides=ours_kw)
  assert _rel(_our_logits(config, params, x), ref) < 1e-4
  for official in (dict(gelu_form='tanh'), dict(ws_eps_form='floor', ws_eps=None)):
    err = _rel(_our_logits(dict(config, **official), params, x), ref)
    assert 1e-4 < err < 0.05, (official, err)


def test_ws_add_form_equals_timm_scaled_std_conv():
  """WSConv2D(eps_form='add', padding='symmetric') against timm's layer itself."""
  import haiku as hk  # pylint: disable=g-import-not-at-top
  from timm.layers import ScaledStdConv2d  # pylint: disable=g-import-not-at-top
  from nfnet_jax import nn as nfnn  # pylint: disable=g-import-not-at-top
  torch.manual_seed(1)
  conv = ScaledStdConv2d(6, 10, 3, stride=2, eps=1e-5)
  with torch.no_grad():
    conv.weight.mul_(0.01)  # var ~ eps: the eps form matters
    conv.gain.copy_(torch.rand_like(conv.gain) + 0.5)
    conv.bias.copy_(torch.randn_like(conv.bias))
  x = _images(9)[..., :3].repeat(2, axis=-1)
  with torch.no_grad():
    ref = conv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  fwd = hk.without_apply_rng(hk.transform(lambda x: nfnn.WSConv2D(
      10, 3, stride=2, padding='symmetric', eps=1e-5, eps_form='add', name='c')(x)))
  params = {'c': {'w': conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                  'gain': conv.gain.detach().numpy().reshape(-1),
                  'bias': conv.bias.detach().numpy()}}
  np.testing.assert_allclose(np.asarray(fwd.apply(params, x)), ref, rtol=1e-4, atol=1e-5)


def test_gelu_forms_equal_torch():
  from nfnet_jax import nn as nfnn  # pylint: disable=g-import-not-at-top
  x = np.linspace(-6, 6, 1001).astype(np.float32)
  gamma = nfnn.ACTIVATIONS['gelu'][1]
  tx = torch.from_numpy(x)
  for form, approximate in (('erf', 'none'), ('tanh', 'tanh')):
    ref = torch.nn.functional.gelu(tx, approximate=approximate).numpy() * gamma
    np.testing.assert_allclose(np.asarray(nfnn.get_activation('gelu', gelu_form=form)(x)), ref,
                               rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(np.asarray(nfnn.get_activation('gelu', gelu_form='erf')(x))
                       - np.asarray(nfnn.get_activation('gelu')(x)))) > 1e-4


# ---------------------------------------------------------------------------
# Bad input: one clear error each


def _tiny_resnet_state_dict():
  return _randomized_timm('nf_resnet26', **_RESNET_TINY[0]).state_dict()


def test_wrong_name_is_one_clear_error():
  with pytest.raises(ValueError, match=r"'nf_resnet27' is not covered; covered: \["):
    timm_lib.load_timm({}, 'nf_resnet27')


def test_wrong_shapes_list_every_difference():
  sd = dict(_tiny_resnet_state_dict())
  sd['stages.0.0.conv1.weight'] = sd['stages.0.0.conv1.weight'][:, :5]
  del sd['stages.1.0.conv2.gain']
  sd['extra.weight'] = torch.zeros(3)
  with pytest.raises(ValueError) as e:
    timm_lib.load_timm(sd, 'nf_resnet26', overrides=_RESNET_TINY[1])
  msg = str(e.value)
  assert '1 missing' in msg and 'stages.1.0.conv2.gain' in msg
  assert '1 unexpected' in msg and 'extra.weight' in msg
  assert '1 mis-shaped' in msg and 'stages.0.0.conv1.weight: file (32, 5, 1, 1) vs model (32, 64, 1, 1)' in msg
  # A full-size name for the tiny file: the sizes differ, one message.
  with pytest.raises(ValueError, match='does not match the model: .*mis-shaped'):
    timm_lib.load_timm(sd, 'nf_resnet50')


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_truncated_file_is_one_clear_error(suffix, tmp_path):
  sd = _tiny_resnet_state_dict()
  path = str(tmp_path / f'w{suffix}')
  if suffix == '.pth':
    torch.save(sd, path)
  else:
    __import__('safetensors.torch', fromlist=['_']).save_file(sd, path)
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError, match='is not a readable timm weight file'):
    timm_lib.load_timm(path, 'nf_resnet26', overrides=_RESNET_TINY[1])
  with pytest.raises(FileNotFoundError, match='does not exist'):
    timm_lib.load_timm(str(tmp_path / 'nope.pth'), 'nf_resnet26')


def test_save_refuses_architectures_timm_lacks(tmp_path):
  """Official NF-ResNet (strided-conv shortcut, SAME padding): no timm model."""
  config = {'name': 'NFResNet', 'variant': 'ResNet26'}
  with pytest.raises(ValueError, match=r"closest, nf_resnet26, differs in: "
                     r"config.model.conv_padding='SAME' \(timm nf_resnet26: 'symmetric'\); "
                     r"config.model.shortcut='conv'"):
    timm_lib.save_timm({}, config, str(tmp_path / 'x.pth'))
  with pytest.raises(ValueError, match='must end in .safetensors'):
    timm_lib.save_timm({}, config, str(tmp_path / 'x.npz'))
  assert not os.listdir(tmp_path)


def test_missing_torch_names_the_extra(monkeypatch, tmp_path):
  path = str(tmp_path / 'w.pth')
  open(path, 'wb').close()
  real_import = builtins.__import__

  def no_torch(name, *a, **k):
    if name == 'torch' or name.startswith('torch.'):
      raise ImportError('No module named torch')
    return real_import(name, *a, **k)

  monkeypatch.setattr(builtins, '__import__', no_torch)
  monkeypatch.delitem(sys.modules, 'torch')
  with pytest.raises(ImportError, match=r'pip install -e \.\[timm\]'):
    timm_lib.read_state_dict(path)


# ---------------------------------------------------------------------------
# Fine-tuning from a timm file (config.finetune.format='timm')


def _finetune_config(path, model):
  """A valid config on a tiny Fashion-MNIST-format data set next to `path`."""
  from nfnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
  from nfnet_jax.testing import fake_data  # pylint: disable=g-import-not-at-top
  directory = os.path.join(os.path.dirname(path), 'idx')
  os.makedirs(directory, exist_ok=True)
  for split in ('train', 'test'):
    images, labels = fashion_mnist.FILES[split]
    fake_data.write_idx(os.path.join(directory, images), np.zeros((16, 28, 28), np.uint8))
    fake_data.write_idx(os.path.join(directory, labels), np.arange(16, dtype=np.uint8) % 10)
  c = config_lib.base_config()
  c.data.name = 'fashion_mnist'
  data_lib.apply_dataset_defaults(c.data)
  c.data.data_dir = directory
  c.train.batch_size = c.train.eval_batch_size = 16
  c.data.image_size = c.data.eval_image_size = 32
  c.model = model
  c.finetune.checkpoint = path
  c.finetune.format = 'timm'
  c.finetune.timm_name = 'nf_resnet26'
  return c


def test_finetune_from_timm_file(tmp_path):
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train.validate import validate_config  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'w.safetensors')
  __import__('safetensors.torch', fromlist=['_']).save_file(_tiny_resnet_state_dict(), path)
  model_cfg = timm_lib.timm_model_config('nf_resnet26', _RESNET_TINY[1])
  model_cfg.update(ws_eps_form='floor', ws_eps=None)  # numerics may differ: a note
  config = _finetune_config(path, ml_collections.ConfigDict(model_cfg))
  validate_config(config, check_devices=False)
  model = create_model(config.model, 3)  # 3 classes, the file has 7
  shapes, _ = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32), is_training=True))
  fresh = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype),
                       hk.data_structures.to_mutable_dict(shapes))
  notes = []
  out = state_lib.load_finetune_params(config, fresh, log=notes.append)
  _, ref = timm_lib.load_timm(path, 'nf_resnet26', overrides=_RESNET_TINY[1])
  assert any('numerics differ' in n and 'ws_eps_form' in n for n in notes)
  for m, d in out.items():
    for n, v in d.items():
      expect = fresh[m][n] if m == 'NF_ResNet/~/linear' else ref[m][n]
      np.testing.assert_array_equal(np.asarray(v), np.asarray(expect), err_msg=f'{m}/{n}')

  # An architecture timm's file does not have: one error naming the fields.
  official = _finetune_config(path, ml_collections.ConfigDict(
      dict(name='NFResNet', variant='ResNet26', **_RESNET_TINY[1])))
  with pytest.raises(ValueError, match=r"holds timm nf_resnet26 weights, but config.model builds "
                     r"another network: config.model.conv_padding='SAME'"):
    state_lib.load_finetune_params(official, fresh, log=lambda *a: None)
  config.finetune.timm_name = 'nf_resnet27'
  with pytest.raises(ValueError, match="config.finetune.timm_name='nf_resnet27' is invalid"):
    validate_config(config, check_devices=False)


def test_convert_script_timm_to_npz_and_back(tmp_path, capsys):
  from conftest import load_repo_module  # pylint: disable=g-import-not-at-top
  script = load_repo_module('convert_script', 'scripts', 'convert.py')
  sd = _randomized_timm('nf_resnet26').state_dict()
  src = str(tmp_path / 'r26.safetensors')
  __import__('safetensors.torch', fromlist=['_']).save_file(sd, src)
  npz = str(tmp_path / 'r26.npz')
  assert script.main(['--from', f'timm:nf_resnet26={src}', '--to', npz]) == 0
  _, expected = timm_lib.load_timm(src, 'nf_resnet26')
  got = pretrained.read_official(npz)
  for m, d in expected.items():
    for n, v in d.items():
      np.testing.assert_array_equal(got[m][n], np.asarray(v))
  back = str(tmp_path / 'back.pth')
  assert script.main(['--from', npz, '--to', f'timm:nf_resnet26={back}']) == 0
  model = timm.create_model('nf_resnet26', num_classes=NUM_CLASSES)
  model.load_state_dict(torch.load(back, weights_only=True), strict=True)
  for key, v in model.state_dict().items():  # gamma moved and back: float rounding only
    np.testing.assert_allclose(v.numpy(), sd[key].numpy(), rtol=1e-6, atol=1e-7, err_msg=key)
  capsys.readouterr()
  assert script.main(['--from', f'timm:nf_resnet50={src}', '--to', npz]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'does not match the model' in err[0]
  assert script.main(['--from', 'timm:nf_resnet26', '--to', npz]) == 2
  assert 'timm:NAME=PATH' in capsys.readouterr().err


def test_timm_loads_in_a_process_that_has_tensorflow():
  # Without the guard, triton's native module segfaults the process when it
  # loads after TensorFlow's (tensorflow-cpu 2.21, triton 3.8): a training or
  # evaluation run that reads timm weights has TensorFlow loaded already.
  code = ('import tensorflow\n'
          'from nfnet_jax.interop import timm as timm_lib\n'
          'timm_lib._import("timm")\n'
          'print("imported")\n')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'imported' in proc.stdout
