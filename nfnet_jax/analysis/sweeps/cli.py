"""Runs a hyper-parameter sweep: one training run per grid point.

  python scripts/sweep.py --config configs/fashion_mnist.py --workdir W \\
      --sweep model.alpha=0.1,0.2,0.4 --sweep optimizer.clipping=0.01,0.04,0.16,None \\
      [--repeats 3] [--launcher local|inproc|submitit|print] [--parallel 2] \\
      [--config.train.total_steps=500]

Launchers: local (each run a `python -m nfnet_jax.commands.train` subprocess,
--parallel at a time), inproc (every run in this process, one after another:
no interpreter start or imports per run, and the compilation cache shared;
a failing run is recorded and the others go on), submitit (a SLURM job
array, or submitit's local/debug executor), print (print the commands).

On a SLURM cluster (pip install -e '.[cluster]'; a config module's SUBMITIT
dict of submitit AutoExecutor parameters gives defaults for these flags):

  python scripts/sweep.py --config configs/sweeps/alpha_clipping.py --workdir W \\
      --launcher submitit --partition gpu --gpus_per_node 8 --nodes 1 --timeout_min 240

A config module may define get_sweep() (a list of override dicts) instead of
or together with --sweep flags (the grid is their product). Flags of the form
--config.a.b=v are fixed overrides passed to every run. Each run trains in
W/<run_name>/; finished runs are reused, so re-running the same command
resumes the sweep (and unfinished runs resume from their checkpoints).
Writes W/results.csv, W/heatmap.png (the outcome of every run: completed,
diverged, failed, not learning) and, for runs with AGC telemetry,
W/<run_name>/agc_report.png.
When seeds repeat each setting (--repeats N, --sweep seed=..., a `seed` key
in get_sweep() or REPEATS = N in the config), it also writes W/report.md
and W/report.png with mean +- std over the seeds (scripts/report.py W
redraws them).
"""
import argparse
import copy
import os
import sys

from nfnet_jax import errors
from nfnet_jax.analysis import report as report_lib
from nfnet_jax.analysis.sweeps import grid as grid_lib
from nfnet_jax.analysis.sweeps import hooks
from nfnet_jax.analysis.sweeps import inproc
from nfnet_jax.analysis.sweeps import local
from nfnet_jax.analysis.sweeps import plots
from nfnet_jax.analysis.sweeps import results
from nfnet_jax.analysis.sweeps import slurm
from nfnet_jax.analysis.sweeps.flags import add_arguments
from nfnet_jax.config import load as config_load


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(p)
  return p


def build_grid(config: str, sweep_flags, repeats):
  """The grid of ``--sweep`` flags x ``get_sweep()`` x repeats (ValueError if empty)."""
  base = hooks.sweep_from_config(config)
  axes = [grid_lib.parse_sweep_flag(s) for s in sweep_flags]
  axes += hooks.repeat_axis(repeats, config, axes, base)
  if base is None and not axes:
    raise ValueError(f'nothing to sweep: give --sweep key=v1,v2,... or define get_sweep() in '
                     f'{config}')
  return grid_lib.expand_grid(axes, base)


def check_configs(config: str, grid, extra) -> None:
  """Every run's config, checked here (one line and exit 2 for an unknown field)."""
  _, fixed = errors.exit_on_error(config_load.split_overrides, extra)
  base_config = errors.exit_on_error(config_load.load_config, config)
  if hasattr(base_config, 'keys'):  # (a stand-in config may be anything)
    for point in grid:
      errors.exit_on_error(config_load.apply_overrides, copy.deepcopy(base_config),
                                fixed + list(point.items()))


def write_outputs(workdir: str, grid) -> list:
  """results.csv, heatmap.png, the seed report and AGC reports; returns the rows."""
  rows = results.collect_results(workdir, grid)
  csv_path = os.path.join(workdir, 'results.csv')
  results.write_results_csv(rows, csv_path)
  png_path = os.path.join(workdir, 'heatmap.png')
  plots.plot_heatmap(rows, png_path)
  if any(k in report_lib.SEED_KEYS for k in grid_lib.swept_keys(grid)):
    # Repeats: aggregate the seeds of each setting (mean +- std, n).
    print(report_lib.write_report(workdir, os.path.join(workdir, 'report'))['table'])
    png_path += ' and ' + os.path.join(workdir, 'report.{md,png}')
  else:
    print(results.results_markdown(rows))
  print(f'[sweep] wrote {csv_path} and {png_path}')
  reports = plots.write_agc_reports(workdir, grid)
  if reports:
    print(f'[sweep] AGC telemetry reports: {len(reports)} (agc_report.png in each run dir)')
  return rows


def main(argv=None, parser: argparse.ArgumentParser = None) -> int:
  """Runs the sweep a command line asks for (``nfnet-sweep`` passes its parser)."""
  p = parser or _parser()
  args, extra = p.parse_known_args(argv)
  bad = [a for a in extra if not a.startswith('--config.')]
  if bad:
    p.error(f'unknown arguments {bad}; fixed overrides must look like --config.a.b=v')
  launcher = 'print' if args.print_commands else args.launcher
  try:
    grid = build_grid(args.config, args.sweep, args.repeats)
    if launcher == 'submitit':
      slurm.import_submitit()
      params = slurm.submitit_parameters(
          {k: getattr(args, k) for k in slurm.SUBMITIT_FLAGS}, args.submitit, args.config)
    if launcher == 'inproc' and (args.train_cmd or args.timeout or args.parallel != 1):
      raise ValueError('--launcher inproc trains in this process: --train_cmd, --timeout and '
                       '--parallel apply to --launcher local only')
  except ValueError as e:
    p.error(str(e))
  check_configs(args.config, grid, extra)
  train_cmd = args.train_cmd.split() if args.train_cmd else None

  if launcher == 'print':
    print('\n'.join(local.print_commands(args.config, args.workdir, grid, extra, train_cmd)))
    return 0
  log = lambda s: print(s, flush=True)
  if launcher == 'submitit':
    print(f'[sweep] {len(grid)} runs in {args.workdir} (submitit)', flush=True)
    try:
      slurm.run_sweep_submitit(args.config, args.workdir, grid, parameters=params,
                               cluster=args.submitit_cluster, extra_args=extra,
                               train_cmd=train_cmd, timeout=args.timeout,
                               wait=not args.no_wait, log=log)
    except ValueError as e:
      p.error(str(e))
    if args.no_wait:
      print('[sweep] submitted; re-run this command to collect the results')
      return 0
  elif launcher == 'inproc':
    print(f'[sweep] {len(grid)} runs in {args.workdir} (in this process)', flush=True)
    inproc.run_sweep_inproc(args.config, args.workdir, grid, extra_args=extra, log=log)
  else:
    print(f'[sweep] {len(grid)} runs in {args.workdir} ({args.parallel} at a time)', flush=True)
    local.run_sweep(args.config, args.workdir, grid, parallel=args.parallel,
                    extra_args=extra, train_cmd=train_cmd, timeout=args.timeout, log=log)
  rows = write_outputs(args.workdir, grid)
  failed = [r['run_name'] for r in rows if r['outcome'] == 'failed']
  if failed:
    print(f'[sweep] {len(failed)} run(s) failed: {failed} (see their train.log)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
