"""Recipe fidelity: official step counts, fractional warm-up, show_recipe."""
import math
import os

import numpy as np
import pytest

from nfnet_jax import recipes
from nfnet_jax.optim import builder
from nfnet_jax.optim import validate_optimizer_config

from conftest import ROOT
from conftest import load_repo_module
N = 1281167


def _module(path):
  module = load_repo_module('recipe_test_' + os.path.basename(path)[:-3], path)
  return module


def _config(name, arg):
  return _module(f'configs/{name}.py').get_config(arg)


# ---------------------------------------------------------------------------
# Resolved configs carry the official experiments' numbers


@pytest.mark.parametrize('name,arg,batch,epochs', [
    ('nfnet', 'F0', 4096, 360),            # experiment_nfnets.py
    ('nfnet', 'F5+', 4096, 360),
    ('nfnet_light', 'eca_nfnet_l0', 4096, 360),   # the NFNet recipe, stated
    ('nf_resnet', '50', 4096, 360),        # experiment_nfnets.py settings
    ('nf_resnet', '101,baseline', 1024, 90),   # experiment.py
    ('resnet', '50', 1024, 90),            # experiment.py
])
def test_official_step_and_warmup_numbers(name, arg, batch, epochs):
  c = _config(name, arg)
  assert c.train.batch_size == batch
  assert c.train.total_steps == (N * epochs) // batch
  assert c.optimizer.warmup_steps == pytest.approx(5 * N / batch, rel=1e-9)


def test_nf_regnet_official_numbers():
  # experiment_nf_regnets.py: batch 1024, 360 epochs, LR 0.4 unscaled,
  # float32; shown by show_recipe against the same official values.
  c = _config('nf_regnet', 'B0')
  assert c.train.batch_size == 1024
  assert c.train.total_steps == (N * 360) // 1024 == 450410
  assert c.optimizer.warmup_steps == pytest.approx(5 * N / 1024, rel=1e-9)
  rows = {r.setting: r for r in recipes.recipe_rows(c)}
  for setting in ('global batch', 'training steps', 'warm-up steps',
                  'peak LR', 'compute dtype'):
    assert recipes.same(rows[setting].ours, rows[setting].official), setting


def test_f0_numbers_written_out():
  c = _config('nfnet', 'F0')
  assert c.train.total_steps == 112602          # not 360 * 312 = 112320
  assert round(c.optimizer.warmup_steps, 2) == 1563.92   # not 1560
  assert _config('nf_resnet', '50,baseline').train.total_steps == 112602
  assert round(_config('resnet', '50').optimizer.warmup_steps, 2) == 6255.70


def test_nfnet_bf16_by_default_f32_modifier_local_stays_f32():
  assert _config('nfnet', 'F0').compute_dtype == 'bfloat16'
  assert _config('nfnet', 'F0,bf16').compute_dtype == 'bfloat16'
  assert _config('nfnet', 'F1,f32').compute_dtype == 'float32'
  assert _config('nfnet', 'F0,local').compute_dtype == 'float32'
  with pytest.raises(ValueError, match='contradict'):
    _config('nfnet', 'F0,bf16,f32')
  # Evaluation stays float32, as in the official experiment.
  assert _config('nfnet', 'F0').train.eval_compute_dtype == 'float32'


def test_imagenet_configs_default_to_the_official_randaugment_mapping():
  for name, arg in (('nfnet', 'F0'), ('nf_resnet', '50')):
    assert _config(name, arg).data.randaugment_mode == 'official'


# ---------------------------------------------------------------------------
# The LR schedule at a fractional warm-up


def _official_warmup_cosine(itr, peak, warmup, total):
  """numpy transcription of nfnets/optim.py's WarmupCosineDecay (start 0,
  min 0): the ramp while itr <= warmup, the cosine after."""
  warm = peak * itr / warmup
  cos = 0.5 * peak * (1 + np.cos(np.pi * (itr - warmup) / (total - warmup)))
  return warm if not warmup < itr else cos


def test_schedule_at_fractional_warmup_end():
  c = _config('nfnet', 'F0')
  _, lr = builder.build_optimizer(c.optimizer, c.train.batch_size,
                                  c.train.total_steps)
  peak, warmup, total = 1.6, 5 * N / 4096, (N * 360) // 4096
  for step in (0, 1, 781, 1562, 1563, 1564, 1565, 50000, 112601, 112602):
    want = _official_warmup_cosine(step, peak, warmup, total)
    assert float(lr(step)) == pytest.approx(want, rel=2e-6, abs=1e-7), step
  # Step 1563 is still on the ramp, 0.92 of a step short of the peak ...
  assert float(lr(1563)) == pytest.approx(1.6 * 1563 / 1563.9245605, rel=1e-6)
  assert float(lr(1563)) < 1.6 * 0.9995
  # ... and step 1564 already on the cosine, 0.075 steps past its top.
  past = (1564 - warmup) / (total - warmup)
  assert float(lr(1564)) == pytest.approx(0.8 * (1 + math.cos(math.pi * past)),
                                          rel=1e-6)
  assert float(lr(1563)) < float(lr(1564)) <= float(np.float32(1.6))


def test_schedule_clamps_at_zero_after_total_steps():
  # The official cosine rises again past total_steps; ours stays at 0.
  sched = builder.warmup_cosine_schedule(1.6, 1563.92, 112602)
  for step in (112602, 113000, 150000):
    assert float(sched(step)) == 0.0
  assert _official_warmup_cosine(150000, 1.6, 1563.92, 112602) > 0.1


def test_fractional_warmup_is_validated():
  validate_optimizer_config({'warmup_steps': 1563.92}, total_steps=112602)
  for bad in (-1.0, float('nan'), float('inf'), '1563'):
    with pytest.raises(ValueError, match=r'config\.optimizer\.warmup_steps'):
      validate_optimizer_config({'warmup_steps': bad}, total_steps=112602)


# ---------------------------------------------------------------------------
# The recipe table


def _show(*argv):
  return _module('scripts/show_recipe.py').main(list(argv))


def _row(out, setting):
  line = next(l for l in out.splitlines() if l.startswith(f'| {setting} |'))
  return [cell.strip() for cell in line.strip('|').split('|')]


def test_show_recipe_f0_agrees_with_the_official_experiment(capsys):
  assert _show('configs/nfnet.py:F0') == 0
  out = capsys.readouterr().out
  assert 'official (experiment_nfnets.py)' in out
  assert _row(out, 'training steps') == ['training steps', '112602', '112602',
                                         'yes']
  assert _row(out, 'warm-up steps')[1:] == ['1563.92', '1563.92', 'yes']
  assert _row(out, 'compute dtype')[1:] == ['bfloat16', 'bfloat16', 'yes']
  assert _row(out, 'RandAugment')[1:] == [
      '4 layers x magnitude 5 (official)'] * 2 + ['yes']
  assert _row(out, 'AGC not on')[1:] == ['classifier w', 'classifier w', 'yes']


def test_show_recipe_flags_a_difference_and_bad_input(capsys):
  assert _show('configs/nfnet.py:F1', '--config.train.total_steps=112320',
               '--config.data.randaugment_mode=increasing') == 0
  out = capsys.readouterr().out
  assert _row(out, 'training steps')[1:] == ['112320', '112602', '**no**']
  assert _row(out, 'RandAugment')[3] == '**no**'
  assert _show('configs/nfnet.py:F9') == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'F9' in err
  assert _show('configs/missing.py') == 2


def test_official_masks_match_our_default_regexes():
  c = _config('nfnet', 'F0')
  rows = {r.setting: r for r in recipes.recipe_rows(c)}
  assert rows['no weight decay on'].ours == rows['no weight decay on'].official
  assert 'classifier w' not in rows['no weight decay on'].ours
  assert rows['AGC not on'].ours == frozenset({'classifier w'})


def test_recipes_page_holds_the_generated_f0_table():
  table = recipes.recipe_table(_config('nfnet', 'F0'),
                               title='configs/nfnet.py:F0')
  with open(os.path.join(ROOT, 'docs', 'recipes.md')) as f:
    assert table in f.read(), ('docs/recipes.md F0 recipe table is stale; '
                               'regenerate: python scripts/show_recipe.py '
                               'configs/nfnet.py:F0')
