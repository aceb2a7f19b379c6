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
draws ``W/heatmap.png``; the command line is :mod:`.cli` (its flags:
:mod:`.flags`).

The names below are looked up lazily (PEP 562 module ``__getattr__``):
importing this package, or its light :mod:`.flags` (``nfnet-sweep --help``),
loads neither JAX nor matplotlib; ``sweeps.collect_results`` imports
:mod:`.results` on first use.
"""
import importlib

from nfnet_jax.analysis.sweeps.flags import LAUNCHERS

# public name -> the submodule that defines it
_EXPORTS = {
    'Overrides': 'grid',
    'expand_grid': 'grid',
    'format_value': 'grid',
    'parse_sweep_flag': 'grid',
    'parse_value': 'grid',
    'run_name': 'grid',
    'swept_keys': 'grid',
    'repeat_axis': 'hooks',
    'sweep_from_config': 'hooks',
    'OUTCOMES': 'outcomes',
    'RUN_RECORD': 'outcomes',
    'classify_run': 'outcomes',
    'is_finished': 'outcomes',
    'last_error_line': 'outcomes',
    'final_top1': 'runfiles',
    'final_train_loss': 'runfiles',
    'read_json': 'runfiles',
    'train_losses': 'runfiles',
    'RESULT_COLUMNS': 'results',
    'collect_results': 'results',
    'results_markdown': 'results',
    'write_results_csv': 'results',
    'heatmap_axes': 'plots',
    'plot_heatmap': 'plots',
    'write_agc_reports': 'plots',
    'build_command': 'runner',
    'shell_join': 'runner',
    'print_commands': 'local',
    'run_sweep': 'local',
    'run_sweep_inproc': 'inproc',
    'SUBMITIT_FLAGS': 'slurm',
    'TrainJob': 'slurm',
    'import_submitit': 'slurm',
    'make_executor': 'slurm',
    'run_sweep_submitit': 'slurm',
    'still_queued': 'slurm',
    'submitit_parameters': 'slurm',
}

__all__ = ['LAUNCHERS', *_EXPORTS]


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
  globals()[name] = value   # later look-ups skip this function
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
