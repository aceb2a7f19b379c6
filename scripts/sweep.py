#!/usr/bin/env python
"""Runs a hyper-parameter sweep: one training run per grid point.

  python scripts/sweep.py --config configs/fashion_mnist.py --workdir W \
      --sweep model.alpha=0.1,0.2,0.4 --sweep optimizer.clipping=0.01,0.04,0.16,None \
      [--parallel 2] [--print_commands] [--config.train.total_steps=500]

A config module may define get_sweep() (a list of override dicts) instead of
or together with --sweep flags (the grid is their product). Flags of the form
--config.a.b=v are fixed overrides passed to every run. Each run trains in
W/<run_name>/ via scripts/train.py; finished runs (summary.json present) are
skipped, so re-running the same command resumes the sweep. Writes
W/results.csv and W/heatmap.png.
"""
import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nfnet_jax.analysis import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
from nfnet_jax.config import load as config_load  # pylint: disable=g-import-not-at-top


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', required=True, help='config file (file.py or file.py:arg)')
  p.add_argument('--workdir', required=True, help='sweep workdir; runs go in WORKDIR/<run_name>/')
  p.add_argument('--sweep', action='append', default=[],
                 help='key=v1,v2,... (repeatable; the grid is the product)')
  p.add_argument('--parallel', type=int, default=1, help='concurrent runs')
  p.add_argument('--print_commands', action='store_true',
                 help='print one command per run (for a cluster scheduler) and exit')
  p.add_argument('--timeout', type=float, default=None, help='per-run time limit (s)')
  p.add_argument('--chance_top1', type=float, default=None,
                 help='top-1 of guessing (default 1/num_classes of the config data set); '
                      'runs at most 2x this count as diverged')
  p.add_argument('--train_cmd', default=None,
                 help='launcher prefix instead of "python scripts/train.py" (space separated)')
  args, extra = p.parse_known_args(argv)
  bad = [a for a in extra if not a.startswith('--config.')]
  if bad:
    p.error(f'unknown arguments {bad}; fixed overrides must look like --config.a.b=v')

  try:
    base = sweep_lib.sweep_from_config(args.config)
    axes = [sweep_lib.parse_sweep_flag(s) for s in args.sweep]
    if base is None and not axes:
      raise ValueError(f'nothing to sweep: give --sweep key=v1,v2,... or define get_sweep() in '
                       f'{args.config}')
    grid = sweep_lib.expand_grid(axes, base)
  except ValueError as e:
    p.error(str(e))
  # Every run's config, checked here (one line and exit 2 for an unknown
  # field) rather than in each run.
  _, fixed = config_load.exit_on_error(config_load.split_overrides, extra)
  base_config = config_load.exit_on_error(config_load.load_config, args.config)
  if hasattr(base_config, 'keys'):  # (a stand-in config may be anything)
    for point in grid:
      config_load.exit_on_error(config_load.apply_overrides, copy.deepcopy(base_config),
                                fixed + list(point.items()))
  train_cmd = args.train_cmd.split() if args.train_cmd else None

  if args.print_commands:
    for point in grid:
      rdir = os.path.join(args.workdir, sweep_lib.run_name(point))
      print(sweep_lib.shell_join(sweep_lib.build_command(args.config, rdir, point, extra,
                                                         train_cmd)))
    return 0

  print(f'[sweep] {len(grid)} runs in {args.workdir} ({args.parallel} at a time)', flush=True)
  status = sweep_lib.run_sweep(args.config, args.workdir, grid, parallel=args.parallel,
                               extra_args=extra, train_cmd=train_cmd, timeout=args.timeout,
                               log=lambda s: print(s, flush=True))
  chance = (args.chance_top1 if args.chance_top1 is not None
            else sweep_lib.chance_top1_from_config(args.config))
  rows = sweep_lib.collect_results(args.workdir, grid, chance_top1=chance)
  csv_path = os.path.join(args.workdir, 'results.csv')
  sweep_lib.write_results_csv(rows, csv_path)
  png_path = os.path.join(args.workdir, 'heatmap.png')
  sweep_lib.plot_heatmap(rows, png_path)
  print(sweep_lib.results_markdown(rows))
  print(f'[sweep] wrote {csv_path} and {png_path}')
  failed = [n for n, s in status.items() if s.startswith('failed')]
  if failed:
    print(f'[sweep] {len(failed)} run(s) failed: {failed} (see their train.log)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
