"""NF-ResNet's small-image stem option (3x3/1 conv, no pool)."""
import jax
import numpy as np
import pytest

from nfnet_jax import models

TINY = dict(name='NFResNet', variant='ResNet26', depths=(1, 1, 1, 1),
            widths=(8, 8, 8, 8), stem_width=4, bottleneck_ratio=0.5)


def _shapes(stem):
  model = models.create_model(dict(TINY, stem=stem), num_classes=3)
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), np.float32)
  params, state = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x.shape and
                                                    np.zeros(x.shape, np.float32), True))
  return params


def test_small_stem_is_3x3_and_keeps_resolution():
  params = _shapes('small')
  assert params['NF_ResNet/~/initial_conv']['w'].shape == (3, 3, 1, 4)
  assert _shapes('imagenet')['NF_ResNet/~/initial_conv']['w'].shape == (7, 7, 1, 4)
  model = models.create_model(dict(TINY, stem='small'), num_classes=3)
  x = np.random.RandomState(0).randn(2, 28, 28, 1).astype(np.float32)
  params, state = model.init(jax.random.PRNGKey(0), x, True)
  out, _ = model.apply(params, state, None, x, False, return_metrics=True)
  assert out['logits'].shape == (2, 3)
  assert np.all(np.isfinite(out['logits']))


def test_min_resolution_and_validation():
  assert models.model_min_resolution(dict(TINY, stem='small')) == 8
  assert models.model_min_resolution(dict(TINY)) == 32
  with pytest.raises(ValueError, match=r'config\.model\.stem'):
    models.validate_model_config(dict(TINY, stem='tiny'))
