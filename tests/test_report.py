"""Seeds as a sweep axis, their aggregation and the study reports.

nfnet_jax/analysis/report/, scripts/report.py, ``--repeats`` in
scripts/sweep.py and the study configs in configs/studies/. The sweep-runner
tests use an instant fake training command (as tests/test_sweep.py does);
the study configs' ``local`` forms train for real, in-process.
"""
import csv
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nfnet_jax.analysis import report as report_lib
from nfnet_jax.analysis import sweeps as sweep_lib
from conftest import load_repo_module

from conftest import ROOT
FASHION_DIR = '/usr/share/datasets/fashion-mnist'
have_fashion = pytest.mark.skipif(
    not os.path.exists(os.path.join(FASHION_DIR, 'train-images-idx3-ubyte.gz')),
    reason='Debian dataset-fashion-mnist not installed')
STUDIES = ('regularization', 'normalizers', 'clipping_batch')


def _load_script(name):
  return load_repo_module(f'{name}_script', 'scripts', f'{name}.py').main


def _load_study(name):
  return load_repo_module(f'study_test_{name}', 'configs', 'studies', f'{name}.py')


# ---------------------------------------------------------------------------
# Aggregation against numpy


def _fake_rows(rng):
  """2 lambdas x 2 alphas x 4 seeds; runs diverged, not learning, failed, missing."""
  rows = []
  for lam in (None, 0.01):
    for alpha in (0.2, 0.5):
      for seed in range(4):
        top1 = float(rng.uniform(0.6, 0.9))
        row = {'optimizer.clipping': lam, 'model.alpha': alpha, 'seed': seed,
               'run_name': f'{lam}-{alpha}-{seed}', 'outcome': 'completed',
               'initial_train_loss': 2.3,
               'final_train_loss': float(rng.uniform(0.2, 1.0)), 'eval_top1': top1,
               'wall_time_s': 10.0 + seed, 'detail': ''}
        if (lam, alpha, seed) == (None, 0.5, 1):
          row.update(outcome='diverged', final_train_loss=float('nan'), eval_top1=0.1)
        if (lam, alpha, seed) == (None, 0.5, 2):
          row.update(outcome='failed', final_train_loss=None, eval_top1=None,
                     detail='exit status 1')
        if (lam, alpha, seed) == (0.01, 0.5, 0):  # finished, loss not below the first
          row.update(outcome='not learning', final_train_loss=2.4, eval_top1=0.125)
        if (lam, alpha, seed) == (0.01, 0.2, 3):
          row.update(outcome='missing', final_train_loss=None, eval_top1=None,
                     wall_time_s=None)
        rows.append(row)
  return rows


def test_aggregate_matches_numpy_through_results_csv(tmp_path):
  rows = _fake_rows(np.random.default_rng(0))
  path = str(tmp_path / 'results.csv')
  sweep_lib.write_results_csv(rows, path)
  cells = report_lib.aggregate(report_lib.read_results_csv(path))
  assert len(cells) == 4
  for cell in cells:
    runs = [r for r in rows if r['optimizer.clipping'] == cell['optimizer.clipping']
            and r['model.alpha'] == cell['model.alpha']]
    ok = [r for r in runs if r['outcome'] in ('completed', 'not learning')]
    # results.csv keeps 6 significant digits.
    top1 = np.array([float(f"{r['eval_top1']:.6g}") for r in ok])
    loss = np.array([float(f"{r['final_train_loss']:.6g}") for r in ok])
    assert cell['top1']['n'] == len(ok) == (cell['counts']['completed']
                                            + cell['counts']['not learning'])
    np.testing.assert_allclose(cell['top1']['mean'], top1.mean(), rtol=1e-12)
    np.testing.assert_allclose(cell['top1']['std'], top1.std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(cell['loss']['mean'], loss.mean(), rtol=1e-12)
    np.testing.assert_allclose(cell['loss']['std'], loss.std(ddof=1), rtol=1e-12)
    assert cell['runs'] == 4
  by = {(c['optimizer.clipping'], c['model.alpha']): c for c in cells}
  zero = dict.fromkeys(report_lib.OUTCOMES, 0)
  assert by[(None, 0.5)]['counts'] == dict(zero, completed=2, diverged=1, failed=1)
  assert by[(0.01, 0.2)]['counts'] == dict(zero, completed=3, missing=1)
  assert by[(0.01, 0.5)]['counts'] == dict(zero, completed=3, **{'not learning': 1})
  assert 0.125 in by[(0.01, 0.5)]['top1_values']
  assert [s for s, in by[(None, 0.2)]['seeds']] == [0, 1, 2, 3]


def test_mean_std_edge_cases():
  assert report_lib.mean_std([]) == {'mean': None, 'std': None, 'n': 0}
  assert report_lib.mean_std([0.5]) == {'mean': 0.5, 'std': None, 'n': 1}
  out = report_lib.mean_std([0.5, None, float('nan'), 0.7])
  assert out['n'] == 2 and math.isclose(out['std'], np.std([0.5, 0.7], ddof=1))


def test_display_keys_drop_keys_that_move_together():
  cells = [{'model.name': n, 'train.batch_size': b, 'train.total_steps': 60000 // b,
            'optimizer.clipping': lam}
           for n in ('a', 'b') for b in (8, 512) for lam in (None, 0.01)]
  keys = ['model.name', 'train.batch_size', 'train.total_steps', 'optimizer.clipping']
  assert report_lib.display_keys(cells, keys) == ['model.name', 'train.batch_size',
                                                  'optimizer.clipping']


# ---------------------------------------------------------------------------
# Reports of a sweep workdir with missing and diverged runs


def _write_run(workdir, point, top1=None, loss=None, diverged=False):
  rdir = os.path.join(workdir, sweep_lib.run_name(point))
  os.makedirs(rdir, exist_ok=True)
  if diverged:  # train.py's exit status for a run stopped as diverged
    from nfnet_jax.train import cli  # pylint: disable=g-import-not-at-top
    with open(os.path.join(rdir, sweep_lib.RUN_RECORD), 'w') as f:
      json.dump({'returncode': cli.EXIT_DIVERGED, 'wall_time_s': 3.0}, f)
    return
  with open(os.path.join(rdir, 'summary.json'), 'w') as f:
    json.dump({'status': 'completed', 'final_eval': {'top1': top1},
               'final_train': {'loss': loss}}, f)
  with open(os.path.join(rdir, sweep_lib.RUN_RECORD), 'w') as f:
    json.dump({'returncode': 0, 'wall_time_s': 5.0}, f)


def test_report_renders_missing_and_diverged_runs(tmp_path):
  wd = str(tmp_path / 'sweep')
  grid = [{'model.name': n, 'model.norm': norm, 'seed': s}
          for n, norm in (('ResNet', 'batchnorm'), ('NFResNet', None), ('ResNet', 'groupnorm'))
          for s in (0, 1, 2)]
  os.makedirs(wd)
  with open(os.path.join(wd, 'sweep.json'), 'w') as f:
    json.dump({'config': 'none.py', 'grid': grid}, f)
  _write_run(wd, grid[0], 0.80, 0.5)
  _write_run(wd, grid[1], 0.84, 0.4)
  _write_run(wd, grid[2], diverged=True)            # BN seed 2: stopped as diverged
  _write_run(wd, grid[3], 0.05, float('nan'))       # NF seed 0: finished, NaN loss
  _write_run(wd, grid[4], 0.70, 0.6)                # NF seed 1; seed 2 missing
  # GroupNorm: every run missing.
  main = _load_script('report')
  assert main([wd, '--out', str(tmp_path / 'out' / 'study')]) == 0
  text = (tmp_path / 'out' / 'study.md').read_text()
  assert (tmp_path / 'out' / 'study.png').stat().st_size > 1000
  lines = {ln.split(' | ')[0].strip('| '): ln for ln in text.splitlines() if ln.startswith('| ')}
  assert '82.00 ± 2.83' in lines['ResNet (batchnorm)']       # mean/std of 80 and 84
  assert '2 completed, 1 diverged' in lines['ResNet (batchnorm)']
  assert '| 70.00 | 1 |' in lines['NFResNet']               # n=1: no std
  assert '1 completed, 1 diverged, 1 missing' in lines['NFResNet']
  assert '| - | 0 |' in lines['ResNet (groupnorm)'] and '3 missing' in lines['ResNet (groupnorm)']
  # The report read back the results.csv it wrote.
  with open(os.path.join(wd, 'results.csv')) as f:
    assert len(list(csv.DictReader(f))) == 9


def test_report_cli_rejects_a_non_sweep_dir(tmp_path, capsys):
  main = _load_script('report')
  assert main([str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'sweep.json' in err[0]
  assert main([str(tmp_path / 'nope')]) == 2


# ---------------------------------------------------------------------------
# --repeats in scripts/sweep.py

FAKE_TRAIN = textwrap.dedent('''
  import json, os, sys
  args = sys.argv[1:]
  wd = args[args.index('--workdir') + 1]
  ov = dict(a[len('--config.'):].split('=', 1) for a in args if a.startswith('--config.'))
  os.makedirs(wd, exist_ok=True)
  top1 = 0.5 + float(ov['model.alpha']) + 0.01 * int(ov['seed'])
  with open(os.path.join(wd, 'summary.json'), 'w') as f:
    json.dump({'status': 'completed', 'final_eval': {'top1': top1},
               'final_train': {'loss': 1.0}}, f)
''')


def test_repeats_flag_sweeps_seeds_and_aggregates(tmp_path):
  fake = tmp_path / 'fake_train.py'
  fake.write_text(FAKE_TRAIN)
  cfg = tmp_path / 'cfg.py'
  cfg.write_text('def get_config(arg=None):\n  return None\n')
  wd = str(tmp_path / 'w')
  main = _load_script('sweep')
  rc = main(['--config', str(cfg), '--workdir', wd, '--sweep', 'model.alpha=0.1,0.2',
             '--repeats', '3', '--train_cmd', f'{sys.executable} {fake}'])
  assert rc == 0
  with open(os.path.join(wd, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [(r['model.alpha'], r['seed']) for r in rows] == [
      (a, s) for a in ('0.1', '0.2') for s in ('0', '1', '2')]
  text = open(os.path.join(wd, 'report.md')).read()
  assert '| 0.1 | 61.00 ± 1.00 | 3 |' in text and '| 0.2 | 71.00 ± 1.00 | 3 |' in text
  assert os.path.exists(os.path.join(wd, 'report.png'))


def test_repeats_from_config_and_double_seed_axes(tmp_path):
  cfg = tmp_path / 'cfg.py'
  cfg.write_text('REPEATS = 2\ndef get_config(arg=None):\n  return None\n')
  assert sweep_lib.repeat_axis(None, str(cfg)) == [('seed', [0, 1])]
  assert sweep_lib.repeat_axis(4, str(cfg)) == [('seed', [0, 1, 2, 3])]
  with pytest.raises(ValueError, match='seeds are swept twice'):
    sweep_lib.repeat_axis(2, None, axes=[('seed', [0, 1])])
  with pytest.raises(ValueError, match='>= 1'):
    sweep_lib.repeat_axis(0)
  r = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'sweep.py'), '--config',
                      str(cfg), '--workdir', str(tmp_path / 'w'), '--sweep', 'seed=0,1',
                      '--print_commands'], capture_output=True, text=True, check=False)
  assert r.returncode == 2 and 'seeds are swept twice' in r.stderr


# ---------------------------------------------------------------------------
# The study configs


@pytest.mark.parametrize('name', STUDIES)
def test_study_grids_validate(name):
  """Every point of the full study grid is a valid config (nothing trained)."""
  from nfnet_jax import models  # pylint: disable=g-import-not-at-top
  from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train.validate import validate_config  # pylint: disable=g-import-not-at-top
  study = _load_study(name)
  path = os.path.join(ROOT, 'configs', 'studies', f'{name}.py')
  grid = study.get_sweep()
  seeds = {p['seed'] for p in grid}
  assert len(seeds) >= 3
  cells = {tuple(sorted((k, str(v)) for k, v in p.items() if k != 'seed')) for p in grid}
  assert len(grid) == len(cells) * len(seeds)
  for point in grid:
    c = config_load.load_config(path, point.items())
    validate_config(c, num_devices=1, process_count=1)
    models.validate_model_config(c.model, num_classes=10)
  with pytest.raises(ValueError, match='unknown variant'):
    study.get_config('lcoal')


def test_normalizers_pilot_grid():
  """``:pilot``: every arm at 32 per device on each training subset, for each
  budget of images seen (epochs = seen / subset), fitted-ness measured on the
  subset itself; all valid configs."""
  from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train.validate import validate_config  # pylint: disable=g-import-not-at-top
  study = _load_study('normalizers')
  grid = study.get_sweep('pilot')
  assert len(grid) == len(study.ARMS) * len(study.PILOT_SUBSETS) * len(study.PILOT_SEEN)
  assert {p['train.batch_size'] for p in grid} == {256} and {p['seed'] for p in grid} == {0}
  for n in study.PILOT_SUBSETS:
    points = [p for p in grid if p['data.train_split'] == f'train[:{n}]']
    assert all(p['data.train_eval_split'] == f'train[:{n}]' for p in points)
    assert all(p['data.shuffle_buffer'] == n for p in points)
    # 128,000 images seen of 2,000 at batch 256: 64 epochs of 7.8 steps = 500 steps.
    assert sorted({p['train.total_steps'] for p in points}) == [
        round(seen / 256) for seen in study.PILOT_SEEN]
  path = os.path.join(ROOT, 'configs', 'studies', 'normalizers.py:pilot')
  for point in grid[::len(study.ARMS)]:
    validate_config(config_load.load_config(path, point.items()), num_devices=8,
                    process_count=1)


def test_normalizers_cells_see_the_same_images():
  """Every cell draws IMAGES_SEEN images of the same unaugmented subset: steps
  x global batch is the same at 2, 4, 8 and 32 images per device."""
  from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top
  study = _load_study('normalizers')
  grid = study.get_sweep('')
  assert len(grid) == len(study.ARMS) * len(study.PER_DEVICE) * len(study.SEEDS) == 100
  assert {p['train.total_steps'] * p['train.batch_size'] for p in grid} == {64_000}
  assert {p['train.batch_size'] for p in grid} == {16, 32, 64, 256}
  assert {p['data.train_split'] for p in grid} == {'train[:2000]'}
  c = config_load.load_config(os.path.join(ROOT, 'configs', 'studies', 'normalizers.py'),
                              grid[0].items())
  assert (c.data.train_crop, c.data.random_flip) == ('none', False)
  assert c.train.total_steps == 4000 and c.optimizer.warmup_steps == 800


def test_normalizers_nf_agc_is_the_nf_cell_at_32_per_device_with_agc():
  """``:nf_agc`` trains exactly the study's NF cell at 32 per device (same
  images, steps, LR, seeds), only with AGC on every weight but the classifier's
  and the skip gains."""
  from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top
  study = _load_study('normalizers')
  grid = study.get_sweep('nf_agc')
  cells = [p for p in study.get_sweep('') if p['model.name'] == 'NFResNet'
           and p['train.batch_size'] == 256]
  assert grid == cells and len(grid) == len(study.SEEDS) == 5
  path = os.path.join(ROOT, 'configs', 'studies', 'normalizers.py')
  with_agc = config_load.load_config(path + ':nf_agc', grid[0].items())
  without = config_load.load_config(path, grid[0].items())
  assert with_agc.optimizer.clipping == 0.16 and without.optimizer.clipping is None
  assert with_agc.optimizer.clip_exclude == r'(^[^/]+/~/linear/w$)|(skip_gain$)'
  with_agc.optimizer.clipping, with_agc.optimizer.clip_exclude = (
      without.optimizer.clipping, without.optimizer.clip_exclude)
  assert with_agc.to_json() == without.to_json()


@have_fashion
@pytest.mark.parametrize('name', STUDIES)
def test_study_local_form_end_to_end(name, tmp_path):
  """The ``local`` grid trains (in-process, 3 steps) and the report reads it."""
  from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import loop  # pylint: disable=g-import-not-at-top
  spec = os.path.join(ROOT, 'configs', 'studies', f'{name}.py:local')
  grid = sweep_lib.sweep_from_config(spec)
  wd = str(tmp_path / name)
  for point in grid:
    c = config_load.load_config(spec, point.items())
    loop.train_and_evaluate(c, os.path.join(wd, sweep_lib.run_name(point)))
  with open(os.path.join(wd, 'sweep.json'), 'w') as f:
    json.dump({'config': f'configs/studies/{name}.py:local', 'grid': grid}, f)
  out = report_lib.write_report(wd)
  rows = report_lib.read_results_csv(os.path.join(wd, 'results.csv'))
  cells = report_lib.aggregate(rows)
  # 3 steps: a run may end at chance ('not learning'); either way it is counted and averaged.
  assert len(cells) == 2 and all(c['top1']['n'] == 1 and c['runs'] == 1 for c in cells)
  assert out['table'].count('| 1 |') == 2
  assert len(rows) == len(grid)
  assert all(report_lib.run_outcome(r) in ('completed', 'not learning') for r in rows)
  assert all(r['eval_top1'] is not None for r in rows)


def test_run_outcome_reads_an_outcome_column_or_derives_one():
  assert report_lib.run_outcome({'outcome': 'completed'}) == 'completed'
  assert report_lib.run_outcome({'outcome': 'not learning'}) == 'not learning'
  assert report_lib.run_outcome({'outcome': 'diverged'}) == 'diverged'
  assert report_lib.run_outcome({'outcome': 'preempted'}) == 'preempted'
  assert report_lib.run_outcome({'outcome': 'failed'}) == 'failed'
  # Results of earlier sweeps: status + diverged flag.
  assert report_lib.run_outcome({'status': 'ok', 'diverged': 'no'}) == 'completed'
  assert report_lib.run_outcome({'status': 'ok', 'diverged': 'yes',
                                 'final_train_loss': float('nan')}) == 'diverged'
  assert report_lib.run_outcome({'status': 'ok', 'diverged': 'yes',
                                 'final_train_loss': 2.3}) == 'not learning'
  assert report_lib.run_outcome({'status': 'diverged (rc=1)'}) == 'diverged'
  assert report_lib.run_outcome({'status': 'missing'}) == 'missing'
