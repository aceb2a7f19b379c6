"""nfnet-curves: reading metrics.jsonl rows and drawing the training curves."""
import json
import os

import pytest

from nfnet_jax.analysis import curves
from nfnet_jax.commands import curves as curves_cmd


def _write_metrics(workdir, rows, tail=''):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
    f.write(tail)


def _rows():
  rows = [{'split': 'train', 'step': s, 'train/loss': 2.0 / s, 'train/top1': 0.1 * s,
           'train/lr': 0.01 * s} for s in (1, 2, 3, 4)]
  rows += [{'split': 'eval', 'step': 2, 'eval/top1': 0.5},
           {'split': 'eval', 'step': 4, 'eval/top1': 0.6},
           {'split': 'train_eval', 'step': 4, 'train_eval/top1': 0.7}]
  return rows


def test_read_curves_sorts_by_step_and_the_last_row_of_a_step_wins(tmp_path):
  rows = _rows()
  # A resumed run wrote step 3 again (another loss), rows arrive out of order,
  # and a kill cut the last line.
  rows.insert(0, {'split': 'train', 'step': 3, 'train/loss': 99.0})
  rows.append({'split': 'train', 'step': 3, 'train/loss': 0.5, 'train/top1': 0.3})
  _write_metrics(str(tmp_path), rows[::-1][1:] + [rows[-1]], tail='{"split": "train", "st')
  c = curves.read_curves(str(tmp_path))
  assert [r['step'] for r in c['train']] == [1, 2, 3, 4]
  assert c['train'][2]['train/loss'] == 0.5
  assert [r['eval/top1'] for r in c['eval']] == [0.5, 0.6]
  assert c['train_eval'][0]['train_eval/top1'] == 0.7
  xs, lrs = curves._series(c['train'], 'train/lr', 1 / 2.0)
  assert xs == [0.5, 1.0, 2.0]   # in epochs; step 3's last row has no lr: no point
  assert lrs == pytest.approx([0.01, 0.02, 0.04])


def test_read_curves_names_what_is_missing(tmp_path):
  with pytest.raises(ValueError, match='has no metrics.jsonl'):
    curves.read_curves(str(tmp_path))
  _write_metrics(str(tmp_path), [{'split': 'eval', 'step': 1, 'eval/top1': 0.5}])
  with pytest.raises(ValueError, match='no training rows'):
    curves.read_curves(str(tmp_path))


def test_command_draws_two_runs_and_refuses_bad_flags(tmp_path, capsys):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  _write_metrics(a, _rows())
  _write_metrics(b, _rows()[:4])  # no evals
  out = str(tmp_path / 'fig' / 'c.png')
  assert curves_cmd.main([a, b, '--out', out, '--labels', 'A,B', '--steps_per_epoch', '2']) == 0
  with open(out, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert capsys.readouterr().out.strip() == f'wrote {out}'
  for argv, what in (([a, '--labels', 'only_one,two,three'], '--labels names 3 runs'),
                     ([a, '--steps_per_epoch', '0'], '--steps_per_epoch must be > 0'),
                     ([str(tmp_path / 'none')], 'has no metrics.jsonl')):
    with pytest.raises(SystemExit) as e:
      curves_cmd.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0], err


def test_log_loss_puts_the_loss_axis_on_a_log_scale(tmp_path, monkeypatch):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  scales = []
  save = figure.Figure.savefig
  def spy(fig, *args, **kwargs):
    scales.append(fig.axes[0].get_yscale())
    return save(fig, *args, **kwargs)
  monkeypatch.setattr(figure.Figure, 'savefig', spy)
  a = str(tmp_path / 'a')
  _write_metrics(a, _rows())
  assert curves_cmd.main([a, '--out', str(tmp_path / 'lin.png')]) == 0
  assert curves_cmd.main([a, '--out', str(tmp_path / 'log.png'), '--log_loss']) == 0
  assert scales == ['linear', 'log']
