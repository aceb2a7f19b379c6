"""nfnet-sweep: a grid of training runs, locally, in this process or as a SLURM array.

Runs one training run per point of a grid: the product of --sweep flags, a
config module's get_sweep() and seeds (--repeats). Each run trains in
WORKDIR/<run_name>/; finished runs are reused, so re-running the same
command resumes the sweep. Launchers: local (subprocesses, --parallel at a
time), inproc (every run in this process), submitit (a SLURM job array; pip
install nfnet_jax[cluster]), print (the commands). Writes
WORKDIR/results.csv, heatmap.png, and with seeds report.md / report.png
(nfnet-report redraws them). --config.a.b=v flags are fixed overrides of
every run. Details: nfnet_jax/analysis/sweeps/cli.py.

Examples:
  nfnet-sweep --config configs/sweeps/alpha_clipping.py --workdir workdirs/alpha_clipping --parallel 2
  nfnet-sweep --config configs/fashion_mnist.py --workdir W --sweep model.alpha=0.1,0.2,0.4 --sweep optimizer.clipping=0.01,None --repeats 3 --print_commands
  nfnet-sweep --config configs/sweeps/alpha_clipping.py --workdir /shared/ac --launcher submitit --partition gpu --gpus_per_node 8 --timeout_min 240
"""
from typing import Optional, Sequence

from nfnet_jax.analysis.sweeps import flags   # light: argparse only (--help stays JAX-free)
from nfnet_jax.commands import base


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__, config_overrides=True)
  flags.add_arguments(p)
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = parser()
  p.parse_known_args(argv)   # --help and missing or bad flags: answered before JAX loads
  # JAX (through the analysis package): imported after the flags parse (--help stays fast).
  cli = base.library('nfnet_jax.analysis.sweeps.cli')
  return cli.main(argv, parser=p)
