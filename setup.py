"""nfnet_jax: normalizer-free networks (NF-ResNets, NFNets) in JAX/Haiku."""
from setuptools import find_packages, setup

# Exact pins are the tested set (the constraints CI and the README use);
# each says why it is exact. Unpinned packages have had stable APIs for us.
CORE = [
    # jax 0.10.2 is the newest JAX for Python 3.11; jaxlib must equal it.
    "jax==0.10.2",
    "jaxlib==0.10.2",
    # Haiku and optax move in lockstep with JAX: these are the releases
    # tested against jax 0.10.2 (haiku's transforms, optax.tree.norm).
    "dm-haiku==0.0.17",
    "optax==0.2.8",
    # config_dict's locking and type-safe assignment, which the override
    # parser (nfnet_jax/config/load.py) relies on.
    "ml-collections==1.1.0",
    "numpy",
    # tfds 4.9.10 is tested with TF 2.21 (tf.data and the prepared formats).
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "importlib_resources",  # used by tfds 4.9.10 without declaring it
    # Checkpoints: the CheckpointManager / args API of this release (the
    # on-disk format of our checkpoints is what it writes).
    "orbax-checkpoint==0.12.8",
    # The SummaryWriter API and event format the tests read back.
    "tensorboardX==2.6.5",
    "tqdm",
    "matplotlib",
    "dill",
    "absl-py",
]

# torch + torchvision must be a matching pair (timm imports torchvision; a
# mismatched torchvision fails at import with "operator torchvision::nms does
# not exist"). timm 1.0.31 is the version the interop mapping was checked on.
TIMM = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "timm==1.0.31",
    "safetensors==0.8.0",
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
        "test": ["pytest", "pytest-xdist", "submitit==1.5.4"] + TIMM,
        # Weights to/from timm (nfnet_jax.interop.timm, scripts/convert.py).
        "timm": TIMM,
        # Sweeps as SLURM job arrays (scripts/sweep.py --launcher submitit).
        "cluster": ["submitit==1.5.4"],
        # Peer comparison in benchmarks/ (not needed by the package itself).
        "bench": TIMM,
    },
    entry_points={
        "console_scripts": [
            "nfnet-train=nfnet_jax.train.cli:main",
        ],
    },
)
