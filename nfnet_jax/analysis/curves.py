"""Training curves of runs: loss, learning rate and top-1 against steps (or epochs).

Reads each workdir's ``metrics.jsonl`` (the rows the training loop writes:
``split`` 'train' every ``train.log_every`` steps, 'eval' at each eval,
'train_eval' for the final eval on ``data.train_eval_split``) and draws one
figure: the training loss with the learning rate on a second axis, and the
top-1 of the training batches (augmented, as trained), of each eval, and the
final top-1 on the training subset with eval preprocessing -- so the gap
between train and test accuracy is on the page.
"""
import os
from typing import Dict, List, Optional, Sequence

from nfnet_jax.train.logs import read_jsonl

METRICS_FILE = 'metrics.jsonl'


def read_curves(workdir: str) -> Dict[str, List[dict]]:
  """``{'train': rows, 'eval': rows, 'train_eval': rows}`` of a workdir, by step.

  A resumed run can write a step twice (rows after its last checkpoint are
  trimmed on resume, but a kill can leave a partial tail): the last row of a
  (split, step) wins.

  Raises:
    ValueError: the workdir has no metrics.jsonl, or it holds no train rows.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    raise ValueError(f'{workdir} has no {METRICS_FILE}: give a training workdir')
  by_key = {}
  for row in read_jsonl(path):
    by_key[(row.get('split', 'train'), int(row.get('step', 0)))] = row
  out = {'train': [], 'eval': [], 'train_eval': []}
  for (split, _), row in sorted(by_key.items(), key=lambda kv: kv[0][1]):
    if split in out:
      out[split].append(row)
  if not out['train']:
    raise ValueError(f'{path} has no training rows yet (split "train")')
  return out


def _series(rows: Sequence[dict], key: str, x_scale: float):
  pts = [(r['step'] * x_scale, float(r[key])) for r in rows
         if isinstance(r.get(key), (int, float))]
  return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(workdirs: Sequence[str], path: str, title: Optional[str] = None,
                steps_per_epoch: Optional[float] = None,
                labels: Optional[Sequence[str]] = None, log_loss: bool = False) -> str:
  """Draws the curves of ``workdirs`` (one colour each) into the PNG ``path``.

  Args:
    workdirs: training workdirs.
    path: the image to write.
    title: figure title (default: the workdirs' names).
    steps_per_epoch: when given, the x axis is in epochs (step / this).
    labels: legend names of the runs (default: the workdirs' base names).
    log_loss: the loss on a log axis (a diverged run's loss, 1e5 and more,
      beside ones near 1).

  Returns:
    ``path``.

  Raises:
    ValueError: a workdir without training rows; labels of another length;
      a steps_per_epoch that is not positive.
  """
  if steps_per_epoch is not None and not steps_per_epoch > 0:
    raise ValueError(f'steps_per_epoch must be > 0, got {steps_per_epoch}')
  labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(labels) != len(workdirs):
    raise ValueError(f'{len(labels)} labels for {len(workdirs)} workdirs')
  curves = [read_curves(w) for w in workdirs]

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  x_scale = 1.0 / steps_per_epoch if steps_per_epoch else 1.0
  fig, (ax_loss, ax_top1) = plt.subplots(1, 2, figsize=(12.0, 4.6))
  ax_lr = ax_loss.twinx()
  for i, (label, c) in enumerate(zip(labels, curves)):
    colour = f'C{i % 10}'
    ax_loss.plot(*_series(c['train'], 'train/loss', x_scale), color=colour, label=label)
    ax_lr.plot(*_series(c['train'], 'train/lr', x_scale), color=colour, ls=':', lw=1)
    xs, ys = _series(c['train'], 'train/top1', x_scale)
    ax_top1.plot(xs, [100 * y for y in ys], color=colour, alpha=0.35, lw=1,
                 label=f'{label}: train batches (augmented)')
    xs, ys = _series(c['eval'], 'eval/top1', x_scale)
    if xs:
      ax_top1.plot(xs, [100 * y for y in ys], color=colour, marker='o', ms=4,
                   label=f'{label}: eval (final {100 * ys[-1]:.2f}%)')
    xs, ys = _series(c['train_eval'], 'train_eval/top1', x_scale)
    if xs:
      ax_top1.plot(xs, [100 * y for y in ys], color=colour, marker='^', ms=8, ls='none',
                   label=f'{label}: train subset, eval preprocessing ({100 * ys[-1]:.2f}%)')
  x_label = 'epoch' if steps_per_epoch else 'step'
  ax_loss.set_xlabel(x_label)
  ax_loss.set_ylabel('training loss (solid)')
  if log_loss:
    ax_loss.set_yscale('log')
  ax_lr.set_ylabel('learning rate (dotted)')
  ax_loss.grid(alpha=0.3)
  ax_loss.legend(fontsize=8, loc='upper right')
  ax_top1.set_xlabel(x_label)
  ax_top1.set_ylabel('top-1 (%)')
  evals = [100 * float(r['eval/top1']) for c in curves for r in c['eval']
           if isinstance(r.get('eval/top1'), (int, float))]
  if evals:   # zoom on the evals; the early training batches sit far below
    ax_top1.set_ylim(max(0.0, min(evals) - 5.0), 100.0)
  ax_top1.grid(alpha=0.3)
  ax_top1.legend(fontsize=8, loc='lower right')
  fig.suptitle(title or ', '.join(labels))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
