"""Small helpers every layer uses: number/integer tests, dotted-field reads, atomic writes.

The leaf of the package: imports nothing of it (``tests/test_layers.py``).
"""
from nfnet_jax.utils.atomic import atomic_path
from nfnet_jax.utils.atomic import atomic_write
from nfnet_jax.utils.checks import MISSING
from nfnet_jax.utils.checks import get_dotted
from nfnet_jax.utils.checks import is_int
from nfnet_jax.utils.checks import is_number
from nfnet_jax.utils.checks import is_pos_int
