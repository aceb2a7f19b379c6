"""Hyper-parameter sweeps: grid, config hooks, launchers, results, plots.

A sweep is a list of override dicts (``{'model.alpha': 0.2,
'optimizer.clipping': None}``), one per run, from the product of ``--sweep
key=v1,v2,...`` flags and/or a config module's ``get_sweep()``
(:mod:`.grid`, :mod:`.hooks`). Every run trains in its own sub-workdir
``W/<run_name>/``. Launchers (`LAUNCHERS`):

* ``local`` (:mod:`.local`): each run a ``python -m nfnet_jax.commands.train``
  subprocess, ``parallel`` at a time, so a crashing run cannot take the
  sweep down;
* ``inproc`` (:mod:`.inproc`): every run in this process through the same
  ``train_and_evaluate``, the compilation cache shared; a failing run is
  recorded and the others go on;
* ``submitit`` (:mod:`.slurm`): one SLURM job array (submitit's local and
  debug executors run the same path on one machine);
* ``print``: the commands, nothing run.

A finished run (``summary.json`` written, or the trainer's divergence exit
status recorded) is reused, not re-run; an unfinished one resumes from its
checkpoints. :func:`collect_results` reads each run's files into one row
with its outcome (:mod:`.outcomes`, the vocabulary reports share),
:func:`write_results_csv` writes ``W/results.csv`` and :func:`plot_heatmap`
draws ``W/heatmap.png``; the command line is :mod:`.cli`.
"""
from nfnet_jax.analysis.sweeps.grid import Overrides
from nfnet_jax.analysis.sweeps.grid import expand_grid
from nfnet_jax.analysis.sweeps.grid import format_value
from nfnet_jax.analysis.sweeps.grid import parse_sweep_flag
from nfnet_jax.analysis.sweeps.grid import parse_value
from nfnet_jax.analysis.sweeps.grid import run_name
from nfnet_jax.analysis.sweeps.grid import swept_keys
from nfnet_jax.analysis.sweeps.hooks import repeat_axis
from nfnet_jax.analysis.sweeps.hooks import sweep_from_config
from nfnet_jax.analysis.sweeps.outcomes import OUTCOMES
from nfnet_jax.analysis.sweeps.outcomes import RUN_RECORD
from nfnet_jax.analysis.sweeps.outcomes import classify_run
from nfnet_jax.analysis.sweeps.outcomes import is_finished
from nfnet_jax.analysis.sweeps.outcomes import last_error_line
from nfnet_jax.analysis.sweeps.runfiles import final_top1
from nfnet_jax.analysis.sweeps.runfiles import final_train_loss
from nfnet_jax.analysis.sweeps.runfiles import read_json
from nfnet_jax.analysis.sweeps.runfiles import train_losses
from nfnet_jax.analysis.sweeps.results import RESULT_COLUMNS
from nfnet_jax.analysis.sweeps.results import collect_results
from nfnet_jax.analysis.sweeps.results import results_markdown
from nfnet_jax.analysis.sweeps.results import write_results_csv
from nfnet_jax.analysis.sweeps.plots import heatmap_axes
from nfnet_jax.analysis.sweeps.plots import plot_heatmap
from nfnet_jax.analysis.sweeps.plots import write_agc_reports
from nfnet_jax.analysis.sweeps.runner import build_command
from nfnet_jax.analysis.sweeps.runner import shell_join
from nfnet_jax.analysis.sweeps.local import print_commands
from nfnet_jax.analysis.sweeps.local import run_sweep
from nfnet_jax.analysis.sweeps.inproc import run_sweep_inproc
from nfnet_jax.analysis.sweeps.slurm import SUBMITIT_FLAGS
from nfnet_jax.analysis.sweeps.slurm import TrainJob
from nfnet_jax.analysis.sweeps.slurm import import_submitit
from nfnet_jax.analysis.sweeps.slurm import make_executor
from nfnet_jax.analysis.sweeps.slurm import run_sweep_submitit
from nfnet_jax.analysis.sweeps.slurm import still_queued
from nfnet_jax.analysis.sweeps.slurm import submitit_parameters

LAUNCHERS = ('local', 'inproc', 'submitit', 'print')
