"""The study reports' statistics and the committed study tables.

Welch's t-test of nfnet_jax/analysis/report/ against a hand computation,
closed forms of Student's t and (when installed) scipy; the baseline
comparison tables; train top-1 and the train-test gap; and every committed
study table rebuilt byte for byte from its committed results.csv by
scripts/report.py with the arguments its page gives.
"""
import csv
import math
import os

import pytest

from nfnet_jax.analysis import report as report_lib
from conftest import load_repo_module

from conftest import ROOT

# The arguments each study page's report command passes (docs/studies/<name>.md).
STUDY_REPORTS = {
    'clipping_batch': ['--baseline', 'optimizer.clipping=0.01', '--title',
                       'Fashion-MNIST NF-ResNet, 0.5 epoch per batch size: test top-1, 5 seeds'],
    'normalizers': ['--baseline', 'model=ResNet (batchnorm, synced)',
                    '--line', 'train.batch_size', '--x_scale', '0.125',
                    '--x_label', 'images per device (8 devices)', '--title',
                    'Fashion-MNIST train[:2000], 32 epochs, 8 devices: test top-1, 5 seeds'],
    'normalizers_nf_agc': ['--title',
                           'NF-ResNet at 32 per device with AGC (lambda 0.16): test top-1, 5 seeds'],
    'normalizers_pilot': ['--line', 'train.total_steps', '--x_scale', '256', '--x_label',
                          'images seen (32 per device = global batch 256 on 8 devices)',
                          '--title', 'Pilot: every arm at 32 per device, no augmentation, seed 0'],
    'regularization': ['--baseline', 'model=ResNet (batchnorm)',
                       '--baseline', 'model.stochdepth_rate=0.0', '--title',
                       'Fashion-MNIST train[:1000], 40 epochs: test (bars) and train (diamonds) '
                       'top-1, 5 seeds'],
}


def test_welch_against_a_hand_computation():
  a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.0]
  # By hand: means 3 and 6, sample variances 2.5 and 10, n = 5 each:
  # SE = sqrt(2.5/5 + 10/5) = sqrt(2.5); t = -3 / sqrt(2.5) = -1.897367;
  # df = 2.5^2 / (0.5^2/4 + 2^2/4) = 6.25 / 1.0625 = 5.882353.
  w = report_lib.welch(a, b)
  assert w['diff'] == pytest.approx(-3.0)
  assert w['se'] == pytest.approx(math.sqrt(2.5))
  assert w['t'] == pytest.approx(-1.8973666, rel=1e-7)
  assert w['df'] == pytest.approx(5.8823529, rel=1e-7)
  assert (w['n_a'], w['n_b']) == (5, 5)
  # p between the two-sided t tables' values at df 5 and 6 for |t| = 1.897
  # (0.1164 and 0.1067), i.e. about 0.107-0.116.
  assert 0.1067 < w['p'] < 0.1164


@pytest.mark.parametrize('t', [0.0, 0.3, 1.0, 2.5, 12.0])
def test_t_p_value_matches_closed_forms(t):
  # df = 1 (Cauchy): P(|T| > t) = 1 - 2 atan(t) / pi; df = 2: 1 - t / sqrt(2 + t^2).
  assert report_lib.t_two_sided_p(t, 1.0) == pytest.approx(1 - 2 * math.atan(t) / math.pi,
                                                           abs=1e-12)
  assert report_lib.t_two_sided_p(t, 2.0) == pytest.approx(1 - t / math.sqrt(2 + t * t),
                                                           abs=1e-12)
  # Large df: the normal distribution, P(|Z| > t) = erfc(t / sqrt 2).
  assert report_lib.t_two_sided_p(t, 1e7) == pytest.approx(math.erfc(t / math.sqrt(2)),
                                                           abs=1e-6)


def test_welch_matches_scipy_when_installed():
  try:
    from scipy import stats  # pylint: disable=g-import-not-at-top
  except ImportError:   # scipy is not a dependency; the hand checks above stand
    return
  cases = [([0.81, 0.83, 0.80, 0.84, 0.82], [0.70, 0.78, 0.62, 0.75, 0.81]),
           ([0.5, 0.51, 0.49], [0.2, 0.9, 0.4, 0.6, 0.1, 0.3]),
           ([1.0, 1.1], [5.0, 5.2, 5.1, 4.9])]
  for a, b in cases:
    ref = stats.ttest_ind(a, b, equal_var=False)
    w = report_lib.welch(a, b)
    assert w['t'] == pytest.approx(ref.statistic, rel=1e-10)
    assert w['p'] == pytest.approx(ref.pvalue, rel=1e-8)


def test_welch_edge_cases():
  assert report_lib.welch([0.5], [0.4, 0.6])['p'] is None         # n < 2
  assert report_lib.welch([0.5, 0.5], [0.5, 0.5])['t'] is None     # no spread
  w = report_lib.welch([0.1, float('nan'), 0.3], [0.2, 0.4, None])
  assert (w['n_a'], w['n_b']) == (2, 2)


def _rows():
  rows = []
  vals = {('bn', 16): [0.30, 0.35, 0.40], ('nf', 16): [0.80, 0.82, 0.81],
          ('bn', 256): [0.85, 0.86, 0.84], ('nf', 256): [0.83, 0.86, 0.80]}
  for (arm, batch), tops in vals.items():
    for seed, top in enumerate(tops):
      rows.append({'model.name': 'ResNet' if arm == 'bn' else 'NFResNet',
                   'model.norm': 'batchnorm' if arm == 'bn' else None,
                   'model.bn_cross_replica': False if arm == 'bn' else None,
                   'train.batch_size': batch, 'seed': seed, 'run_name': f'{arm}{batch}{seed}',
                   'outcome': 'completed', 'final_train_loss': 1.0, 'eval_top1': top,
                   'train_top1': top + 0.1 * (seed + 1), 'wall_time_s': 1.0})
  return rows


def test_comparison_and_train_columns():
  cells = report_lib.aggregate(_rows())
  comp = report_lib.compare(cells, 'model=ResNet (batchnorm, per device)')
  assert len(comp) == 2
  by_batch = {r['cell']['train.batch_size']: r['test'] for r in comp}
  ref = report_lib.welch([0.80, 0.82, 0.81], [0.30, 0.35, 0.40])
  assert by_batch[16] == ref and by_batch[16]['diff'] == pytest.approx(0.46)
  table = report_lib.cells_markdown(cells)
  assert 'train top-1 (%)' in table and 'train - test gap (points)' in table
  # gap per run = 0.1, 0.2, 0.3 -> 20.00 ± 10.00 points
  assert table.count('| 20.00 ± 10.00 |') == 4
  md = report_lib.comparison_markdown(cells, 'model=ResNet (batchnorm, per device)')
  assert '| NFResNet | 16 | 46.00 |' in md
  with pytest.raises(ValueError, match='no column'):
    report_lib.compare(cells, 'nope=1')
  with pytest.raises(ValueError, match='no cell has'):
    report_lib.compare(cells, 'model=VGG')
  with pytest.raises(ValueError, match='COLUMN=VALUE'):
    report_lib.parse_baseline('model')


def _committed(name):
  csv_dir = os.path.join(ROOT, 'docs', 'studies', 'results', name)
  table = os.path.join(ROOT, 'docs', 'studies', f'{name}_results.md')
  return csv_dir, table


@pytest.mark.parametrize('name', sorted(STUDY_REPORTS))
def test_committed_study_tables_rebuild_byte_for_byte(name, tmp_path):
  csv_dir, table = _committed(name)
  with open(os.path.join(csv_dir, 'results.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert rows, f'{csv_dir}/results.csv is empty'
  main = load_repo_module(f'report_script_{name}', 'scripts', 'report.py').main
  out = str(tmp_path / name)
  assert main([csv_dir, '--out', out] + STUDY_REPORTS[name]) == 0
  with open(out + '.md') as f, open(table) as g:
    assert f.read() == g.read()
  assert os.path.getsize(out + '.png') > 10_000


def test_nf_regnet_vs_efficientnet_page_shows_the_scripts_table(tmp_path, capsys):
  """The page's table is what the script builds from the committed data."""
  script = load_repo_module('nfr_vs_effnet', 'scripts', 'nf_regnet_vs_efficientnet.py')
  rows = script.load()
  assert [r['variant'] for r in rows] == ['B0', 'B1', 'B2', 'B3', 'B4', 'B5']
  # Our FLOPs (official rule) agree with the plot's read-off values within 4%.
  assert all(abs(r['our_gflops'] / r['nf_regnet_gflops_read_off'] - 1) < 0.04 for r in rows)
  assert script.main(['--out_png', str(tmp_path / 'f.png')]) == 0
  table = capsys.readouterr().out.split('[figure]')[0]
  with open(os.path.join(ROOT, 'docs', 'studies', 'nf_regnet_vs_efficientnet.md')) as f:
    assert table in f.read()
  assert os.path.getsize(tmp_path / 'f.png') > 10_000


def test_sweep_writes_train_top1_only_when_runs_have_it(tmp_path):
  """results.csv gets train_top1 (from summary.json's final_train_eval) after eval_top1."""
  import json  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis import sweeps  # pylint: disable=g-import-not-at-top
  grid = [{'seed': 0}, {'seed': 1}]
  for point, train in zip(grid, (0.97, None)):
    d = tmp_path / sweeps.run_name(point)
    d.mkdir()
    summary = {'status': 'completed', 'step': 10, 'total_steps': 10,
               'final_eval': {'top1': 0.8}, 'final_train_loss': 0.5, 'wall_time_s': 3.0,
               'final_train_eval': None if train is None else {'top1': train}}
    (d / 'summary.json').write_text(json.dumps(summary))
  rows = sweeps.collect_results(str(tmp_path), grid)
  assert rows[0]['train_top1'] == 0.97 and 'train_top1' not in rows[1]
  sweeps.write_results_csv(rows, str(tmp_path / 'results.csv'))
  with open(tmp_path / 'results.csv', newline='') as f:
    got = list(csv.DictReader(f))
  head = list(got[0])
  assert head.index('train_top1') == head.index('eval_top1') + 1
  assert [r['train_top1'] for r in got] == ['0.97', '']
  back = report_lib.read_results_csv(str(tmp_path / 'results.csv'))
  assert back[0]['train_top1'] == 0.97 and back[1]['train_top1'] is None
  sweeps.write_results_csv(rows[1:], str(tmp_path / 'plain.csv'))
  with open(tmp_path / 'plain.csv', newline='') as f:
    assert 'train_top1' not in f.readline()


def test_line_figure_names_runs_that_did_not_finish(tmp_path, monkeypatch):
  """--line: a cell whose survivors have a mean says beside its point how many
  runs diverged (BN per device at 2 per device: 4 of 5); a cell without
  survivors gets an x at the bottom and the same words."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib.axes import Axes  # pylint: disable=g-import-not-at-top
  from nfnet_jax.analysis.report import plots  # pylint: disable=g-import-not-at-top
  texts = []
  real = Axes.annotate
  monkeypatch.setattr(Axes, 'annotate',
                      lambda self, text, xy, **kw: texts.append((text, xy)) or real(self, text, xy, **kw))
  rows = report_lib.load_rows(os.path.join(ROOT, 'docs', 'studies', 'results', 'normalizers'))
  cells = report_lib.aggregate(rows)
  plots.plot_lines(cells, str(tmp_path / 'n.png'), 'train.batch_size', 0.125)
  bn2 = [c for c in cells if c['train.batch_size'] == 16 and c['model.norm'] == 'batchnorm'
         and c['model.bn_cross_replica'] is False]
  assert len(bn2) == 1 and bn2[0]['counts'].get('diverged') == 4
  assert texts == [('4 of 5 diverged', (2.0, 100 * bn2[0]['top1']['mean']))]
  # Without survivors: an x at the bottom, the same words.
  texts.clear()
  for c in bn2:
    c['top1'] = {'mean': None, 'std': None}
    c['top1_values'] = []
    c['counts'] = dict(c['counts'], diverged=5, **{'not learning': 0})
  plots.plot_lines(cells, str(tmp_path / 'n2.png'), 'train.batch_size', 0.125)
  assert [t for t, _ in texts] == ['5 of 5 diverged']
