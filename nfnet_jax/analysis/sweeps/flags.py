"""The sweep's flags, importable without JAX (``nfnet-sweep --help`` reads them).

:mod:`.cli` runs what they ask for; this module imports only argparse, so
``nfnet_jax/commands/sweep.py`` builds its parser at module top.
"""
import argparse

LAUNCHERS = ('local', 'inproc', 'submitit', 'print')


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The sweep's flags (nfnet-sweep's parser, nfnet_jax/commands/sweep.py)."""
  p.add_argument('--config', required=True, help='config file (file.py or file.py:arg)')
  p.add_argument('--workdir', required=True, help='sweep workdir; runs go in WORKDIR/<run_name>/')
  p.add_argument('--sweep', action='append', default=[],
                 help='key=v1,v2,... (repeatable; the grid is the product)')
  p.add_argument('--repeats', type=int, default=None,
                 help='run every grid point with seeds 0..N-1 (same as --sweep seed=0,...,N-1); '
                      'the table and plot then show mean +- std over the seeds')
  p.add_argument('--launcher', choices=LAUNCHERS, default='local',
                 help='local: subprocesses here; inproc: every run in this process; '
                      'submitit: a SLURM job array (or submitit\'s local/debug executor, see '
                      '--submitit_cluster); print: print the commands')
  p.add_argument('--parallel', type=int, default=1, help='concurrent runs (--launcher local)')
  p.add_argument('--print_commands', action='store_true', help='same as --launcher print')
  p.add_argument('--timeout', type=float, default=None, help='per-run time limit (s)')
  p.add_argument('--train_cmd', default=None,
                 help='launcher prefix instead of "python -m nfnet_jax.commands.train" '
                      '(space separated)')
  g = p.add_argument_group('submitit (--launcher submitit)')
  g.add_argument('--submitit_cluster', choices=('slurm', 'local', 'debug'), default=None,
                 help='submitit executor (default: slurm where sbatch exists, else local)')
  g.add_argument('--partition', default=None, help='SLURM partition')
  g.add_argument('--timeout_min', type=int, default=None, help='job time limit in minutes '
                 '(default 1440); a job that reaches it is checkpointed and requeued')
  g.add_argument('--nodes', type=int, default=None, help='nodes per run (multi-host JAX)')
  g.add_argument('--gpus_per_node', type=int, default=None, help='GPUs per node')
  g.add_argument('--tasks_per_node', type=int, default=None,
                 help='processes per node (default 1: one JAX process sees all its GPUs)')
  g.add_argument('--cpus_per_task', type=int, default=None, help='CPUs per task')
  g.add_argument('--mem_gb', type=float, default=None, help='memory per node (GB)')
  g.add_argument('--array_parallelism', type=int, default=None,
                 help='at most this many runs of the array at once')
  g.add_argument('--submitit', action='append', default=[], metavar='KEY=VALUE',
                 help='any other submitit AutoExecutor parameter (repeatable), '
                      'e.g. slurm_account=abc, slurm_qos=high, slurm_constraint=a100')
  g.add_argument('--no_wait', action='store_true',
                 help='submit and exit; re-run the same command later to collect')
