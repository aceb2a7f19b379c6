"""Study reports: repeats (seeds) aggregated into mean +- std, a table and a figure.

A sweep's ``results.csv`` (:mod:`nfnet_jax.analysis.sweeps`) keeps one row per
run. When the grid repeats each setting over seeds (``--repeats N``,
``--sweep seed=0,1,2`` or a ``seed`` key in ``get_sweep()``), the runs that
differ only in their seed form one *cell*. :func:`aggregate` turns the rows
into cells: the mean and sample standard deviation (``ddof=1``, the spread
the papers quote as "mean +- std of N runs") of the final eval top-1 and
train loss over the cell's runs that finished with a finite loss
(``completed`` and ``not learning``, see ``sweeps.classify_run``: averaged
in, since that is what the setting gives in this budget), ``n`` of them, and
how many runs of each outcome the cell holds. ``diverged`` runs are counted,
never averaged in: they have no meaningful accuracy; nor are ``failed``,
``preempted`` or ``missing`` ones.

:func:`cells_markdown` renders the cells as a Markdown table and
:func:`plot_cells` as a bar chart with error bars and one dot per seed;
``scripts/report.py SWEEP_WORKDIR`` writes both for a finished study
(:func:`write_report`).

The package's modules, by what they do (their public names are importable
from ``nfnet_jax.analysis.report``): ``cells.py`` (rows read and aggregated
into cells), ``stats.py`` (mean +- std, Welch's t-test), ``tables.py``
(Markdown), ``plots.py`` (figures).
"""
import os
from typing import Dict, Optional, Sequence

from nfnet_jax.analysis.report.cells import MODEL_KEYS
from nfnet_jax.analysis.report.cells import SEED_KEYS
from nfnet_jax.analysis.report.cells import aggregate
from nfnet_jax.analysis.report.cells import cell_keys
from nfnet_jax.analysis.report.cells import display_keys
from nfnet_jax.analysis.report.cells import load_rows
from nfnet_jax.analysis.report.cells import read_results_csv
from nfnet_jax.analysis.report.cells import run_outcome
from nfnet_jax.analysis.report.plots import plot_cells
from nfnet_jax.analysis.report.plots import plot_lines
from nfnet_jax.analysis.report.stats import betainc
from nfnet_jax.analysis.report.stats import mean_std
from nfnet_jax.analysis.report.stats import t_two_sided_p
from nfnet_jax.analysis.report.stats import welch
from nfnet_jax.analysis.report.tables import cell_label
from nfnet_jax.analysis.report.tables import cells_markdown
from nfnet_jax.analysis.report.tables import compare
from nfnet_jax.analysis.report.tables import comparison_markdown
from nfnet_jax.analysis.report.tables import fmt_counts
from nfnet_jax.analysis.report.tables import parse_baseline
from nfnet_jax.analysis.sweeps.outcomes import OUTCOMES

__all__ = ['MODEL_KEYS', 'OUTCOMES', 'SEED_KEYS', 'aggregate', 'betainc', 'cell_keys',
           'cell_label', 'cells_markdown', 'compare', 'comparison_markdown', 'display_keys',
           'load_rows', 'mean_std', 'parse_baseline', 'plot_cells', 'plot_lines',
           'read_results_csv', 'run_outcome', 't_two_sided_p', 'welch', 'write_report']


def write_report(workdir: str, out_prefix: Optional[str] = None, collect: bool = False,
                 title: Optional[str] = None, baselines: Sequence[str] = (),
                 line: Optional[str] = None, x_scale: float = 1.0,
                 x_label: Optional[str] = None) -> Dict[str, str]:
  """Writes ``<prefix>.md`` (the table) and ``<prefix>.png`` for a sweep workdir.

  Args:
    workdir: the sweep workdir.
    out_prefix: output path without extension; default ``workdir/report``.
    collect: re-collect results.csv from the runs first.
    title: figure title.
    baselines: ``'COLUMN=VALUE'`` specs; each adds a table of every cell's
      test top-1 minus its baseline cell's (:func:`comparison_markdown`),
      and, when the runs have train top-1, the same for train top-1.
    line: plot top-1 against this swept key (:func:`plot_lines`) instead of
      bars; ``x_scale`` and ``x_label`` as there.

  Returns:
    {'markdown': path, 'png': path, 'table': the Markdown text}.
  """
  rows = load_rows(workdir, collect=collect)
  cells = aggregate(rows)
  prefix = out_prefix or os.path.join(workdir, 'report')
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  table = cells_markdown(cells)
  n_runs = len(rows)
  counts = {o: sum(c['counts'][o] for c in cells) for o in OUTCOMES}
  header = (f'{n_runs} runs in {len(cells)} cells ({fmt_counts(counts)}); mean ± sample std '
            f'over the seeds of each cell; n = runs that finished with a finite loss '
            f'(completed or not learning).\n\n')
  for spec in baselines:
    table += (f'\nDifferences against `{spec}` (test top-1; SE = sqrt(s_a^2/n_a + s_b^2/n_b), '
              "Welch's t-test, two-sided):\n\n" + comparison_markdown(cells, spec))
    if any(c['train_top1']['n'] for c in cells):
      table += f'\nThe same for train top-1:\n\n' + comparison_markdown(cells, spec, 'train_top1')
  with open(prefix + '.md', 'w') as f:
    f.write(header + table)
  if line:
    plot_lines(cells, prefix + '.png', line, x_scale=x_scale, x_label=x_label, title=title)
  else:
    plot_cells(cells, prefix + '.png', title=title)
  return {'markdown': prefix + '.md', 'png': prefix + '.png', 'table': header + table}
