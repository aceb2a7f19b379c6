"""Tests for the sweep machinery (nfnet_jax/analysis/sweeps/, scripts/sweep.py).

The tests drive the runner with a fake, instant training command that writes
the files the real loop writes (summary.json, metrics.jsonl, its "training
diverged" error), so they test the sweep logic and not the training (a real
scripts/train.py run costs a minute of compilation and evaluation here; the
real sweep is docs/sweep_results.md).
"""
import csv
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from nfnet_jax.analysis import sweeps as sweep_lib

from conftest import ROOT
from conftest import load_repo_module

SWEEP_SCRIPT = os.path.join(ROOT, 'scripts', 'sweep.py')

# A stand-in for scripts/train.py: parses --workdir and --config.a.b=v, appends
# one line to calls.txt next to the sweep workdir (to count launches), and
# writes summary.json/metrics.jsonl in the training loop's format.
# top-1 = 0.5 + alpha (+0.1 when clipping is set). alpha = 0.3 crashes
# (rc 5, no summary: failed, retried on a re-run); alpha = 0.5 without
# clipping exits with train.py's divergence status 3 (not retried); alpha =
# 0.5 with clipping finishes with a NaN loss (diverged); alpha = 0.2 without
# clipping finishes with a loss above its first one (not learning); alpha =
# 0.1 with clipping 0.01 takes at least 0.3 s.
FAKE_TRAIN = textwrap.dedent('''
  import json, math, os, sys, time
  args = sys.argv[1:]
  wd = args[args.index('--workdir') + 1]
  ov = dict(a[len('--config.'):].split('=', 1) for a in args if a.startswith('--config.'))
  with open(os.path.join(os.path.dirname(wd), 'calls.txt'), 'a') as f:
    f.write(os.path.basename(wd) + '\\n')
  alpha = float(ov.get('model.alpha', 0.2))
  clip = ov.get('optimizer.clipping', 'None')
  if alpha == 0.1 and clip == '0.01':
    time.sleep(0.3)   # a wall time the sweep must measure
  if alpha == 0.3:
    print('Traceback (most recent call last):')
    print('ValueError: boom at alpha 0.3')
    sys.exit(5)
  if alpha == 0.5 and clip == 'None':
    print('error: training diverged: 20 consecutive non-finite steps')
    sys.exit(3)
  os.makedirs(wd, exist_ok=True)
  diverged = alpha == 0.5
  loss = float('nan') if diverged else 1.0 - alpha
  if alpha == 0.2 and clip == 'None':
    loss = 9.5
  top1 = 0.1 if diverged else 0.5 + alpha + (0.1 if clip != 'None' else 0.0)
  with open(os.path.join(wd, 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps({'step': 1, 'split': 'train', 'train/loss': 9.0}) + '\\n')
    f.write(json.dumps({'step': 2, 'split': 'train', 'train/loss': loss}) + '\\n')
    f.write(json.dumps({'step': 2, 'split': 'eval', 'eval/top1': top1, 'eval/loss': 7.0}) + '\\n')
  with open(os.path.join(wd, 'summary.json'), 'w') as f:
    json.dump({'status': 'completed', 'final_eval': {'top1': top1, 'loss': 7.0},
               'best_eval': {'top1': 0.99}, 'wall_time_s': 1.0,
               'extra': ov.get('train.total_steps')}, f)
''')


# A config with the fields the tests sweep (validated by scripts/sweep.py).
CONFIG_TEXT = textwrap.dedent('''
  import ml_collections
  def get_config(arg=None):
    return ml_collections.ConfigDict({
        'model': {'alpha': 0.2}, 'optimizer': {'clipping': 0.01},
        'train': {'total_steps': 10}, 'seed': 0})
''')


def _sweep_main():
  return load_repo_module('sweep_script', os.path.relpath(SWEEP_SCRIPT, ROOT)).main


@pytest.fixture
def fake_train(tmp_path):
  path = tmp_path / 'fake_train.py'
  path.write_text(FAKE_TRAIN)
  return [sys.executable, str(path)]


@pytest.fixture
def config_file(tmp_path):
  path = tmp_path / 'cfg.py'
  path.write_text(CONFIG_TEXT)
  return str(path)


def test_parse_sweep_flag_values():
  key, vals = sweep_lib.parse_sweep_flag('model.alpha=0.1,0.2,1')
  assert key == 'model.alpha' and vals == [0.1, 0.2, 1]
  assert isinstance(vals[2], int)
  key, vals = sweep_lib.parse_sweep_flag('config.optimizer.clipping=0.01,None,null')
  assert key == 'optimizer.clipping' and vals == [0.01, None, None][:2] + [None]
  _, vals = sweep_lib.parse_sweep_flag('model.activation=relu,gelu')
  assert vals == ['relu', 'gelu']
  _, vals = sweep_lib.parse_sweep_flag('data.cutmix=True,false')
  assert vals == [True, False]
  for bad in ('model.alpha', 'model.alpha=', '=1,2', 'model..alpha=1'):
    with pytest.raises(ValueError, match='--sweep'):
      sweep_lib.parse_sweep_flag(bad)


def test_expand_grid_is_the_product_in_order():
  axes = [('model.alpha', [0.1, 0.2, 0.4]), ('optimizer.clipping', [0.01, 0.04, 0.16, None])]
  grid = sweep_lib.expand_grid(axes)
  assert len(grid) == 12
  assert grid[0] == {'model.alpha': 0.1, 'optimizer.clipping': 0.01}
  assert grid[3] == {'model.alpha': 0.1, 'optimizer.clipping': None}
  assert grid[-1] == {'model.alpha': 0.4, 'optimizer.clipping': None}
  assert len({sweep_lib.run_name(p) for p in grid}) == 12
  # Crossed with get_sweep()-style base dicts.
  grid2 = sweep_lib.expand_grid([('seed', [0, 1])], base=[{'model.alpha': 0.1},
                                                          {'model.alpha': 0.2}])
  assert grid2 == [{'model.alpha': 0.1, 'seed': 0}, {'model.alpha': 0.1, 'seed': 1},
                   {'model.alpha': 0.2, 'seed': 0}, {'model.alpha': 0.2, 'seed': 1}]
  with pytest.raises(ValueError, match='distinct'):
    sweep_lib.expand_grid([('a', [1]), ('a', [2])])
  with pytest.raises(ValueError, match='already swept'):
    sweep_lib.expand_grid([('a', [1])], base=[{'a': 3}])
  with pytest.raises(ValueError, match='duplicate'):
    sweep_lib.expand_grid([('a', [1, 1])])


def test_run_name_is_safe_and_distinguishes_shared_leaves():
  assert sweep_lib.run_name({'model.alpha': 0.2, 'optimizer.clipping': None}) == \
      'alpha=0.2,clipping=None'
  name = sweep_lib.run_name({'a.x': 1, 'b.x': 2, 'data.name': 'a/b c'})
  assert name == 'a.x=1,b.x=2,name=a_b_c'
  assert sweep_lib.run_name({}) == 'default'


def test_build_command_formats_overrides(config_file):
  cmd = sweep_lib.build_command(config_file + ':tiny', '/w/r', {'model.alpha': 0.1,
                                                               'optimizer.clipping': None},
                                extra_args=['--config.train.total_steps=5'])
  # The installed trainer as a module: no source checkout needed.
  assert cmd[:3] == [sys.executable, '-m', 'nfnet_jax.commands.train']
  assert cmd[3:] == ['--config', config_file + ':tiny', '--workdir', '/w/r',
                     '--config.model.alpha=0.1', '--config.optimizer.clipping=None',
                     '--config.train.total_steps=5']


def test_print_commands(config_file, tmp_path):
  out = subprocess.run(
      [sys.executable, SWEEP_SCRIPT, '--config', config_file, '--workdir', str(tmp_path / 'w'),
       '--sweep', 'model.alpha=0.1,0.2', '--sweep', 'optimizer.clipping=0.01,None',
       '--print_commands', '--config.train.total_steps=7'],
      capture_output=True, text=True, check=True, cwd=ROOT).stdout
  lines = out.strip().splitlines()
  assert len(lines) == 4
  assert all('-m nfnet_jax.commands.train' in l and '--config.train.total_steps=7' in l for l in lines)
  assert "--config.model.alpha=0.1 --config.optimizer.clipping=None" in lines[1]
  assert os.path.join(str(tmp_path / 'w'), 'alpha=0.2,clipping=0.01') in lines[2]
  assert not (tmp_path / 'w').exists()  # printing launches nothing


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_sweep_writes_one_row_per_point_and_resumes(config_file, fake_train, tmp_path):
  wd = tmp_path / 'sweep'
  argv = ['--config', config_file, '--workdir', str(wd),
          '--sweep', 'model.alpha=0.1,0.3,0.5', '--sweep', 'optimizer.clipping=0.01,None',
          '--parallel', '2', '--train_cmd', ' '.join(fake_train),
          '--config.train.total_steps=3']
  main = _sweep_main()
  start = time.time()
  assert main(argv) == 0
  elapsed = time.time() - start
  calls = (wd / 'calls.txt').read_text().split()
  assert len(calls) == 6
  rows = _read_csv(wd / 'results.csv')
  assert list(rows[0]) == ['model.alpha', 'optimizer.clipping', 'run_name', 'outcome',
                           'initial_train_loss', 'final_train_loss', 'eval_top1',
                           'wall_time_s', 'detail']
  assert len(rows) == 6
  by = {(r['model.alpha'], r['optimizer.clipping']): r for r in rows}
  ok = by[('0.1', '0.01')]
  assert ok['outcome'] == 'completed' and ok['detail'] == ''
  assert float(ok['initial_train_loss']) == pytest.approx(9.0)
  # The last train loss of metrics.jsonl (the fake's summary has none) and the
  # FINAL eval top-1 (not best_eval).
  assert float(ok['final_train_loss']) == pytest.approx(0.9)
  assert float(ok['eval_top1']) == pytest.approx(0.7)
  # The launcher's own clock around the run: the fake's 0.3 s sleep, at most the sweep's.
  assert 0.3 <= float(ok['wall_time_s']) <= elapsed + 0.05
  assert by[('0.1', 'None')]['outcome'] == 'completed'
  assert float(by[('0.1', 'None')]['eval_top1']) == pytest.approx(0.6)
  assert by[('0.5', '0.01')]['outcome'] == 'diverged'       # finished, but NaN loss
  assert 'nan' in by[('0.5', '0.01')]['detail']
  assert by[('0.5', 'None')]['outcome'] == 'diverged'       # train.py's exit status 3
  assert '20 consecutive non-finite' in by[('0.5', 'None')]['detail']
  assert by[('0.3', '0.01')]['outcome'] == 'failed'         # crashed: no summary
  assert by[('0.3', '0.01')]['detail'] == 'ValueError: boom at alpha 0.3'
  assert (wd / 'heatmap.png').stat().st_size > 1000
  log = (wd / 'alpha=0.1,clipping=0.01' / 'train.log').read_text()
  assert '--config.train.total_steps=3' in log

  # Re-run: finished and diverged runs are skipped, the 2 crashed ones re-launched.
  assert main(argv) == 0
  calls = (wd / 'calls.txt').read_text().split()
  assert len(calls) == 8
  assert sorted(calls[6:]) == ['alpha=0.3,clipping=0.01', 'alpha=0.3,clipping=None']
  assert len(_read_csv(wd / 'results.csv')) == 6


def test_outcome_of_a_run_that_does_not_learn(config_file, fake_train, tmp_path):
  wd = tmp_path / 'sweep'
  assert _sweep_main()(['--config', config_file, '--workdir', str(wd), '--sweep',
                        'model.alpha=0.2', '--sweep', 'optimizer.clipping=0.01,None',
                        '--train_cmd', ' '.join(fake_train)]) == 0
  rows = _read_csv(wd / 'results.csv')
  assert [r['outcome'] for r in rows] == ['completed', 'not learning']
  assert rows[1]['detail'] == 'final train loss 9.5 >= initial 9'


def test_get_sweep_from_config_module(fake_train, tmp_path):
  cfg = tmp_path / 'swcfg.py'
  cfg.write_text(textwrap.dedent('''
    import ml_collections
    def get_config(arg=None):
      return ml_collections.ConfigDict({'model': {'alpha': 0.2},
                                        'optimizer': {'clipping': 0.01}})
    def get_sweep():
      return [{'config.model.alpha': a, 'optimizer.clipping': c}
              for a in (0.1, 0.2) for c in (0.01, None)]
  '''))
  assert sweep_lib.sweep_from_config(str(cfg) + ':x')[0] == {'model.alpha': 0.1,
                                                             'optimizer.clipping': 0.01}
  main = _sweep_main()
  wd = tmp_path / 'w'
  assert main(['--config', str(cfg), '--workdir', str(wd), '--train_cmd', ' '.join(fake_train)
               ]) == 0
  rows = _read_csv(wd / 'results.csv')
  assert [(r['model.alpha'], r['optimizer.clipping']) for r in rows] == [
      ('0.1', '0.01'), ('0.1', 'None'), ('0.2', '0.01'), ('0.2', 'None')]
  assert float(rows[2]['eval_top1']) == pytest.approx(0.8)


def test_nothing_to_sweep_is_a_clear_error(config_file, tmp_path):
  res = subprocess.run([sys.executable, SWEEP_SCRIPT, '--config', config_file, '--workdir',
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
  assert res.returncode != 0 and 'nothing to sweep' in res.stderr


def test_heatmap_and_markdown_from_rows(tmp_path):
  rows = [{'model.alpha': a, 'optimizer.clipping': c, 'run_name': 'r',
           'outcome': 'diverged' if c is None and a > 0.3 else
                      'not learning' if c == 0.16 else 'completed',
           'initial_train_loss': 1.0, 'final_train_loss': 0.5, 'eval_top1': 0.8 + a / 10,
           'wall_time_s': 3.0, 'detail': ''}
          for a in (0.4, 0.1) for c in (None, 0.16, 0.01)]
  assert sweep_lib.heatmap_axes(['optimizer.clipping', 'model.alpha']) == \
      ('model.alpha', 'optimizer.clipping')
  path = tmp_path / 'h.png'
  sweep_lib.plot_heatmap(rows, str(path))
  assert path.stat().st_size > 1000
  md = sweep_lib.results_markdown(rows)
  assert md.count('\n') == 8 and '| 0.4 | None | diverged | 0.5000 | 84.00 | 3 |  |' in md
  assert '| 0.1 | 0.16 | not learning |' in md


def test_reads_the_training_loops_summary_layout():
  summary = {'status': 'completed', 'final_train_loss': 0.31,
             'final_train': {'loss': 0.35, 'top1': 0.9},
             'final_eval': {'top1': 0.8, 'loss': 0.5, 'top5': 0.99},
             'best_eval': {'top1': 0.9, 'loss': 0.4}}
  metrics = [{'split': 'train', 'train/loss': 2.0}, {'split': 'eval', 'eval/top1': 0.1}]
  assert sweep_lib.final_train_loss(summary, metrics) == pytest.approx(0.31)
  assert sweep_lib.final_top1(summary, metrics) == pytest.approx(0.8)
  del summary['final_train_loss']
  assert sweep_lib.final_train_loss(summary, metrics) == pytest.approx(0.35)
  assert sweep_lib.final_train_loss(None, metrics) == pytest.approx(2.0)
  assert sweep_lib.final_top1(None, metrics) == pytest.approx(0.1)
  assert sweep_lib.final_top1({'final_eval': {'top1': 85.0}}, []) == pytest.approx(0.85)
