"""benchmarks/timm_compare.py's timm twins compute our small NF-ResNets' function.

The config shapes (`quickstart_train`, `study_train`) time our network
against "the same network built with timm's NormFreeNet machinery". Here
that claim is checked: our weights copied into the twin (OIHW kernels, and
timm's convention of folding the ReLU gamma into every conv instead of the
activation: the stem conv, which reads the image, and the classifier, which
reads the un-gammaed pooled features, absorb that factor) give the same
logits as our model in timm's numerics (eps added to the WS variance,
PyTorch's symmetric padding). Both the 'imagenet' (/4) and the 'small'
(stride-1 3x3) stems, strided 1x1 shortcuts and SkipInit scalars are
covered, as is the parameter count of both config shapes.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet_jax.interop import timm as timm_lib
from conftest import load_repo_module

timm_lib.avoid_triton_after_tensorflow()
torch = pytest.importorskip('torch')
pytest.importorskip('timm')

from nfnet_jax import models  # pylint: disable=g-import-not-at-top

tc = load_repo_module('timm_compare_script', 'benchmarks', 'timm_compare.py')
TIMM_RELU_GAMMA = 1.7139588594436646  # timm/models/nfnet.py _nonlin_gamma['relu']


def _copy_into_twin(params, twin, gamma):
  """Our Haiku params -> the timm twin's tensors (in place)."""
  root = 'NF_ResNet/~/'
  to_t = lambda a: torch.from_numpy(np.array(a, np.float32))

  def conv(ours, mod, scale=1.0):
    p = params[root + ours]
    mod.weight.data = to_t(np.transpose(p['w'], (3, 2, 0, 1)))
    mod.gain.data = to_t(np.asarray(p['gain']).reshape(-1, 1, 1, 1) * scale)
    mod.bias.data = to_t(p['bias'])

  conv('initial_conv', twin.stem.conv, 1.0 / gamma)
  blocks = [b for stage in twin.stages for b in stage]
  for k, block in enumerate(blocks):
    name = 'nf_res_block' + (f'_{k}' if k else '')
    for ours, theirs in (('conv0', block.conv1), ('conv1', block.conv2),
                         ('conv2', block.conv3)):
      conv(f'{name}/~/{ours}', theirs)
    if block.downsample is not None:
      conv(f'{name}/~/conv_shortcut', block.downsample.conv)
    block.skipinit_gain.data = to_t(np.float32(params[root + name]['skip_gain']))
  fc = params[root + 'linear']
  twin.head.fc.weight.data = to_t(np.asarray(fc['w']).T * gamma)
  twin.head.fc.bias.data = to_t(fc['b'])


@pytest.mark.parametrize('stem,res', [('imagenet', 32), ('small', 16)])
def test_twin_computes_our_function(stem, res):
  cfg = dict(name='NFResNet', variant='ResNet26', depths=(1, 2, 1, 1),
             widths=(16, 32, 32, 48), stem_width=8, bottleneck_ratio=0.5, stem=stem,
             activation='relu', alpha=0.2, stochdepth_rate=0.0, drop_rate=0.0,
             se_ratio=0.0)
  timm_numerics = dict(cfg, conv_padding='symmetric', ws_eps_form='add', ws_eps=1e-5)
  net = models.create_model(timm_numerics, 5)
  x = np.random.default_rng(0).standard_normal((3, res, res, 1)).astype(np.float32)
  params, state = net.init(jax.random.PRNGKey(0), jnp.asarray(x), is_training=True)
  # Non-trivial gains, biases and skip gains (their init values hide mapping errors).
  keys = iter(jax.random.split(jax.random.PRNGKey(1), 200))
  params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(next(keys), a.shape), params)
  ours, _ = net.apply(params, state, None, jnp.asarray(x), is_training=False)

  twin = tc.timm_twin(torch, None, cfg, 5, 1).eval()
  assert sum(p.numel() for p in twin.parameters()) == sum(
      a.size for a in jax.tree.leaves(params))
  _copy_into_twin(params, twin, TIMM_RELU_GAMMA)
  with torch.no_grad():
    theirs = twin(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)))).numpy()
  np.testing.assert_allclose(theirs, np.asarray(ours['logits']), rtol=2e-4, atol=2e-4)


def test_twin_rejects_what_it_does_not_reproduce():
  with pytest.raises(ValueError, match='se_ratio'):
    tc.timm_twin(torch, None, dict(name='NFResNet', depths=(1, 1, 1, 1), se_ratio=0.25),
                 5, 1)


@pytest.mark.parametrize('key', sorted(tc.CONFIG_SHAPES))
def test_config_shapes_have_equal_parameter_counts(key):
  cfg, batch, res, chans, classes = tc.config_shape(key)
  assert chans == 1 and classes == 10
  twin = tc.timm_twin(torch, None, cfg.model, classes, chans)
  net = models.create_model(cfg.model, classes)
  shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0),
                                           jnp.zeros((1, res, res, chans)), is_training=True))
  ours = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes[0]))
  assert ours == sum(p.numel() for p in twin.parameters())
  assert batch == {'quickstart_train': 256, 'study_train': 64}[key]
