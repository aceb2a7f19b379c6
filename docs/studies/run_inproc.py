"""Runs a study grid in ONE process (saves the ~45 s import per run on the loaded CPU).

The driver that executed docs/studies/clipping_batch.md and regularization.md
(from the repository root: python docs/studies/run_inproc.py CONFIG WORKDIR);
updated since for the shared config loader (nfnet_jax.config.load), which
applies the same overrides to the same get_config(), and for the sweep's
outcome classification (a diverged run records train.py's EXIT_DIVERGED).

Same grid (get_sweep()), same config (get_config()), same overrides, same
per-run workdirs and files (summary.json, metrics.jsonl, sweep_run.json) as
scripts/sweep.py --parallel 1; finished runs are skipped.
"""
import json, os, sys, time, traceback
sys.path.insert(0, os.getcwd())
from nfnet_jax.analysis import sweep as sweep_lib
from nfnet_jax.config import load as config_load
from nfnet_jax.train import loop

config_path, workdir = sys.argv[1], sys.argv[2]
grid = sweep_lib.sweep_from_config(config_path)
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, 'sweep.json'), 'w') as f:
  json.dump({'config': config_path, 'grid': grid, 'extra_args': [],
             'runner': 'in-process (workdirs/studies/run_inproc.py)'}, f, indent=1, default=str)
print(f'[inproc] {len(grid)} runs in {workdir}', flush=True)
for point in grid:
  name = sweep_lib.run_name(point)
  rdir = os.path.join(workdir, name)
  if sweep_lib.is_finished(rdir):
    print(f'[inproc] {name}: finished earlier, skipping', flush=True)
    continue
  os.makedirs(rdir, exist_ok=True)
  c = config_load.load_config(config_path, point.items())
  start = time.time()
  rc, diverged = 0, False
  print(f'[inproc] {name}: start', flush=True)
  try:
    loop.train_and_evaluate(c, rdir)
  except Exception as e:  # pylint: disable=broad-except
    rc = 1
    text = ''.join(traceback.format_exception(e))
    diverged = 'training diverged' in text
    with open(os.path.join(rdir, 'train.log'), 'a') as f:
      f.write(text)
  rec = {'returncode': rc, 'wall_time_s': time.time() - start, 'command': ['in-process', config_path] + [f'--config.{k}={sweep_lib.format_value(v)}' for k, v in point.items()]}
  if rc:
    # train.py's exit statuses, which sweep.classify_run reads.
    from nfnet_jax.train import cli
    rec['returncode'] = cli.EXIT_DIVERGED if diverged else 1
  with open(os.path.join(rdir, sweep_lib.RUN_RECORD), 'w') as f:
    json.dump(rec, f, indent=1)
  print(f"[inproc] {name}: {'ok' if not rc else ('DIVERGED' if diverged else 'FAILED')} in {rec['wall_time_s']:.0f}s", flush=True)
rows = sweep_lib.collect_results(workdir, grid)
sweep_lib.write_results_csv(rows, os.path.join(workdir, 'results.csv'))
print('[inproc] wrote results.csv', flush=True)
