"""nfnet_jax: normalizer-free networks (NF-ResNets, NFNets) in JAX/Haiku."""
from setuptools import find_packages, setup

# JAX, jaxlib, Haiku and optax move in lockstep: pin them together.
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "dm-haiku==0.0.17",
    "optax==0.2.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "numpy",
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "importlib_resources",  # used by tfds 4.9.10 without declaring it
    "orbax-checkpoint==0.12.8",
    "tensorboardX==2.6.5",
    "tqdm",
    "matplotlib",
    "dill",
    "absl-py",
]

setup(
    name="nfnet_jax",
    version="0.1.0",
    description="Normalizer-free networks (NF-ResNets, NFNets) with AGC in JAX/Haiku",
    packages=find_packages(include=["nfnet_jax", "nfnet_jax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        # submitit: the cluster sweeps' tests run its local executor in CI.
        "test": ["pytest", "pytest-xdist", "submitit==1.5.4"],
        # Sweeps as SLURM job arrays (scripts/sweep.py --launcher submitit).
        "cluster": ["submitit==1.5.4"],
        # Peer comparison in benchmarks/ (not needed by the package itself).
        "bench": ["torch==2.13.0", "timm"],
    },
    entry_points={
        "console_scripts": [
            "nfnet-train=nfnet_jax.train.cli:main",
        ],
    },
)
