"""nfnet_jax: normalizer-free networks (NF-ResNets, NFNets) in JAX/Haiku."""
from setuptools import find_packages, setup

# Ranges, not pins: users install into existing environments (Python 3.12
# GPU images with jax 0.11.x, the newest release jax 0.12.0.1). The exact
# tested set is constraints.txt, which CI (scripts/setup_env.sh) and the
# README commands pass to pip with `-c constraints.txt`; why each of those
# versions is the tested one is said there. Upper bounds stop at the newest
# minor release tested: jax/jaxlib 0.12 (CI's second leg,
# scripts/ci_newest_jax.sh: Python 3.12, the newest jax/jaxlib, TensorFlow
# and tfds) and, for Haiku, optax and orbax, below the next minor, whose APIs
# may move.
CORE = [
    "jax>=0.10.2,<0.13",
    "jaxlib>=0.10.2,<0.13",
    "dm-haiku>=0.0.17,<0.1",
    "optax>=0.2.8,<0.3",
    # config_dict's locking and type-safe assignment, which the override
    # parser (nfnet_jax/config/load.py) relies on.
    "ml-collections>=1.1.0",
    "numpy",
    "tensorflow-cpu>=2.21.0",
    "tensorflow-datasets>=4.9.10",
    "importlib_resources",  # used by tfds 4.9.10 without declaring it
    # The CheckpointManager / args API (our on-disk format is what it writes).
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorboardX>=2.6.5",
    "tqdm",
    "matplotlib",
    "dill",
    "absl-py",
]

# torch + torchvision must be a matching pair (timm imports torchvision; a
# mismatched torchvision fails at import with "operator torchvision::nms does
# not exist"). timm 1.0.31 is the version the interop mapping was checked on.
# The tested pair and versions are in constraints.txt (the one place for
# exact pins); these ranges admit them.
TIMM = [
    "torch>=2.13",
    "torchvision",
    "timm>=1.0",
    "safetensors",
]

setup(
    name="nfnet_jax",
    version="0.1.0",
    description="Normalizer-free networks (NF-ResNets, NFNets) with AGC in JAX/Haiku",
    packages=find_packages(include=["nfnet_jax", "nfnet_jax.*"]),
    # jax/jaxlib 0.10.2 and orbax-checkpoint 0.12.8 declare Requires-Python >=3.11.
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require={
        # The suite runs the timm interop tests (so CI installs TIMM) and the
        # cluster sweeps' tests with submitit's local executor.
        # nbclient/nbformat/ipykernel: tests/test_tutorial.py re-executes
        # docs/tutorial.ipynb.
        "test": ["pytest", "pytest-xdist", "submitit>=1.5.4", "nbclient", "nbformat",
                 "ipykernel"] + TIMM,
        # Weights to/from timm (nfnet_jax.interop.timm, scripts/convert.py).
        "timm": TIMM,
        # Sweeps as SLURM job arrays (scripts/sweep.py --launcher submitit).
        "cluster": ["submitit>=1.5.4"],
        # Peer comparison in benchmarks/ (not needed by the package itself).
        # Peer benchmarks; psutil counts the input benchmark's worker CPU time.
        "bench": TIMM + ["psutil"],
    },
    entry_points={
        "console_scripts": [
            "nfnet-train=nfnet_jax.commands.entry:train",
            "nfnet-evaluate=nfnet_jax.commands.entry:evaluate",
            "nfnet-convert=nfnet_jax.commands.entry:convert",
            "nfnet-export=nfnet_jax.commands.entry:export",
            "nfnet-report=nfnet_jax.commands.entry:report",
            "nfnet-agc-report=nfnet_jax.commands.entry:agc_report",
            "nfnet-prepare-data=nfnet_jax.commands.entry:prepare_data",
            "nfnet-show-recipe=nfnet_jax.commands.entry:show_recipe",
            "nfnet-model-table=nfnet_jax.commands.entry:model_table",
            "nfnet-benchmark=nfnet_jax.commands.entry:benchmark",
            "nfnet-spp=nfnet_jax.commands.entry:spp",
            "nfnet-predict=nfnet_jax.commands.entry:predict",
            "nfnet-sweep=nfnet_jax.commands.entry:sweep",
            "nfnet-curves=nfnet_jax.commands.entry:curves",
        ],
    },
)
