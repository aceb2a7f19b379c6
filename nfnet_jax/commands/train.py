"""nfnet-train: trains and evaluates a config; resumes an existing workdir.

Trains and evaluates the model of an experiment config. Re-running the same
command resumes from the workdir's newest checkpoint. Exit status: 0
completed, 2 bad input, a workdir in use or a failed checkpoint save, 3
diverged, 75 a lost process of a multi-host job (relaunch), 143 stopped by
SIGTERM after a checkpoint (re-run to continue).

Examples:
  nfnet-train --config configs/fashion_mnist.py:local --workdir /tmp/fmnist
  nfnet-train --config configs/nfnet.py:F0 --workdir /ckpt/f0 --config.data.data_dir=/data/tfds --config.optimizer.clipping=0.02
"""
from typing import Optional, Sequence

from nfnet_jax.commands import base
from nfnet_jax.commands import entry


def parser() -> base.ArgumentParser:
  p = base.ArgumentParser.from_doc(__doc__, config_overrides=True)
  p.add_config(help='experiment config file, e.g. configs/nfnet.py:F0', required=True)
  p.add_argument('--workdir', required=True,
                 help='checkpoints, TensorBoard logs, metrics.jsonl and '
                      'summary.json go here; an existing one is resumed')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  args, overrides = parser().parse_with_overrides(argv)
  # JAX and the training loop: imported after the flags parse (--help stays fast).
  cli = base.library('nfnet_jax.train.cli')
  cli.run(args.config, args.workdir, overrides)
  return 0


if __name__ == '__main__':   # python -m nfnet_jax.commands.train (the sweep runner's command)
  entry.run('train')
