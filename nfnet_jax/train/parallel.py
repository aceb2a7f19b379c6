"""Device placement and the two wrappers of the per-device step.

Both wrappers run the same per-device function (see ``step.py``) over a 1-D
``('batch',)`` mesh:

* ``pmap``: ``jax.pmap(axis_name='batch')``; the train state carries a leading
  device axis (one replica per device), batches are ``[devices, b, ...]``.
* ``shard_map``: ``jax.jit(jax.shard_map(...))`` with the state replicated
  (``P()``) and the batch sharded along its first axis (``P('batch')``).

On many hosts every process builds global arrays from its own slice with
``jax.make_array_from_process_local_data``; the same code serves one host.
"""
import os
from typing import Any, Callable, Dict, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nfnet_jax.config import schema as config_schema
from nfnet_jax.train.step import AXIS

PyTree = Any

MODES = config_schema.PARALLEL_MODES
DISTRIBUTED = config_schema.DISTRIBUTED

# Environment variables that mean "this process is one of several of a job"
# (JAX's own coordinator settings, SLURM, Open MPI, Cloud TPU pods).
# The cluster managers among them tell JAX the process count and id too.
_CLUSTER_ENV = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE', 'TPU_WORKER_HOSTNAMES',
                'MEGASCALE_COORDINATOR_ADDRESS')
_MULTIPROCESS_ENV = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS') + _CLUSTER_ENV


def _env_asks_for_distributed(env=None) -> bool:
  env = os.environ if env is None else env
  for name in _MULTIPROCESS_ENV:
    value = env.get(name)
    if not value:
      continue
    if name in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
      try:
        if int(value) > 1:
          return True
      except ValueError:
        continue
    elif name == 'TPU_WORKER_HOSTNAMES':
      if len(value.split(',')) > 1:
        return True
    else:
      return True
  return False


def distributed_kwargs(env=None) -> Dict[str, Any]:
  """Arguments for ``jax.distributed.initialize`` from the environment.

  JAX itself reads only ``JAX_COORDINATOR_ADDRESS``; the process count and
  id come from a cluster manager it recognises (SLURM, Open MPI, Cloud TPU).
  Without one, this framework reads ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` (the manual multi-host launch of docs/training.md).

  Args:
    env: the environment (default ``os.environ``).

  Returns:
    Keyword arguments (possibly empty: JAX auto-detects everything).

  Raises:
    ValueError: a coordinator address without a detectable cluster and
      without valid ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``.
  """
  env = os.environ if env is None else env
  n, i = env.get('JAX_NUM_PROCESSES'), env.get('JAX_PROCESS_ID')
  if n is None and i is None:
    if env.get('JAX_COORDINATOR_ADDRESS') and not any(env.get(n) for n in _CLUSTER_ENV):
      raise ValueError(
          'JAX_COORDINATOR_ADDRESS is set but no cluster manager (SLURM, Open '
          'MPI, Cloud TPU) tells JAX how many processes there are: also set '
          'JAX_NUM_PROCESSES=<number of hosts> and JAX_PROCESS_ID=<0..N-1> on '
          'every host, or unset JAX_COORDINATOR_ADDRESS for a single-host run')
    return {}
  try:
    n_int, i_int = int(n), int(i)
  except (TypeError, ValueError):
    raise ValueError(
        f'JAX_NUM_PROCESSES={n!r} and JAX_PROCESS_ID={i!r} must both be set to '
        'integers (number of hosts, and this host\'s index 0..N-1)') from None
  if not 0 <= i_int < n_int:
    raise ValueError(f'JAX_PROCESS_ID={i_int} must be in [0, JAX_NUM_PROCESSES='
                     f'{n_int})')
  if not env.get('JAX_COORDINATOR_ADDRESS'):
    raise ValueError('JAX_NUM_PROCESSES/JAX_PROCESS_ID are set but '
                     'JAX_COORDINATOR_ADDRESS (host0:port) is not')
  return {'num_processes': n_int, 'process_id': i_int}


def maybe_initialize_distributed(mode: str, env=None) -> bool:
  """Calls ``jax.distributed.initialize()`` when asked to.

  Args:
    mode: ``config.parallel.distributed``: ``'on'`` always initialises,
      ``'off'`` never, ``'auto'`` when the environment names a multi-process
      job (``JAX_COORDINATOR_ADDRESS``, SLURM with >1 task, Open MPI with >1
      rank, a multi-host Cloud TPU slice).
    env: the environment (default ``os.environ``), for tests.

  Returns:
    Whether ``jax.distributed.initialize()`` was called.

  Raises:
    ValueError: an incomplete manual launch environment (see
      `distributed_kwargs`).
  """
  if mode == 'off' or (mode == 'auto' and not _env_asks_for_distributed(env)):
    return False
  if jax.distributed.is_initialized():
    return False
  jax.distributed.initialize(**distributed_kwargs(env))
  return True


def select_devices(num_devices: int = 0) -> list:
  """The devices of the run: all of them, or the first ``num_devices``."""
  devices = jax.devices()
  if num_devices:
    if jax.process_count() > 1:
      raise ValueError('config.parallel.num_devices must be 0 (every device) '
                       f'on multi-host runs; got {num_devices}.')
    if num_devices > len(devices):
      raise ValueError(
          f'config.parallel.num_devices={num_devices} but JAX sees {len(devices)} device(s); on a '
          f'CPU start Python with XLA_FLAGS=--xla_force_host_platform_device_count={num_devices}, '
          'or set config.parallel.num_devices=0 (every device)')
    devices = devices[:num_devices]
  return devices


def make_mesh(devices: Sequence[Any]) -> Mesh:
  """A 1-D mesh with axis ``'batch'`` over ``devices``."""
  return Mesh(np.asarray(devices), (AXIS,))


def local_devices(mesh: Mesh) -> list:
  """The mesh's devices attached to this process, in mesh order."""
  pid = jax.process_index()
  return [d for d in mesh.devices.flat if d.process_index == pid]


class Parallel:
  """Places data/state on a mesh and wraps per-device functions.

  Attributes:
    mode: ``'pmap'`` or ``'shard_map'``.
    mesh: the ``('batch',)`` mesh.
    num_devices: devices in the mesh (all hosts).
    num_local: devices of this process.
  """

  def __init__(self, mode: str, devices: Sequence[Any]):
    if mode not in MODES:
      raise ValueError(f'config.parallel.mode={mode!r} is not one of {MODES}.')
    self.mode = mode
    self.mesh = make_mesh(devices)
    self.devices = list(devices)
    self.num_devices = len(self.devices)
    self.local = local_devices(self.mesh)
    self.num_local = len(self.local)
    self._sharded = NamedSharding(self.mesh, P(AXIS))
    self._replicated = NamedSharding(self.mesh, P())

  # ---- placement --------------------------------------------------------

  def put_replicated(self, tree: PyTree) -> PyTree:
    """Host values identical on every process -> the wrapper's state layout.

    pmap: a leading device axis (one copy per device); shard_map: one
    replicated global array.
    """
    if self.mode == 'pmap':
      def put(x):
        x = np.asarray(x)
        stacked = np.broadcast_to(x, (self.num_local,) + x.shape)
        return jax.make_array_from_process_local_data(self._sharded, stacked)
    else:
      def put(x):
        return jax.make_array_from_process_local_data(self._replicated,
                                                      np.asarray(x))
    return jax.tree.map(put, tree)

  def put_batch(self, batch: dict) -> dict:
    """This host's slice of the global batch -> a global device array.

    Args:
      batch: arrays ``[host_batch, ...]`` (the ``'host'`` layout).

    Returns:
      pmap: arrays ``[devices, per_device_batch, ...]``; shard_map: arrays
      ``[global_batch, ...]`` sharded along the first axis.
    """
    def put(x):
      x = np.asarray(x)
      if x.shape[0] % self.num_local:
        raise ValueError(f'a host batch of {x.shape[0]} examples does not '
                         f'split over {self.num_local} local devices.')
      if self.mode == 'pmap':
        x = x.reshape((self.num_local, x.shape[0] // self.num_local)
                      + x.shape[1:])
      return jax.make_array_from_process_local_data(self._sharded, x)
    return jax.tree.map(put, batch)

  def get_replicated(self, tree: PyTree) -> PyTree:
    """The wrapper's state layout -> host numpy values (one copy)."""
    def get(x):
      shard = np.asarray(x.addressable_data(0))
      return shard[0] if self.mode == 'pmap' else shard
    return jax.tree.map(get, tree)

  # ---- wrappers ----------------------------------------------------------

  def wrap_train_step(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``(state, batch) -> (state, metrics)`` over the mesh; donates state."""
    if self.mode == 'pmap':
      return jax.pmap(step_fn, axis_name=AXIS, devices=self.devices,
                      donate_argnums=(0,))
    fn = jax.shard_map(step_fn, mesh=self.mesh, in_specs=(P(), P(AXIS)),
                       out_specs=(P(), P()), check_vma=True)
    return jax.jit(fn, donate_argnums=(0,))

  def wrap_eval_step(self, eval_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``(params, model_state, batch) -> sums`` over the mesh."""
    if self.mode == 'pmap':
      return jax.pmap(eval_fn, axis_name=AXIS, devices=self.devices)
    fn = jax.shard_map(eval_fn, mesh=self.mesh, in_specs=(P(), P(), P(AXIS)),
                       out_specs=P(), check_vma=True)
    return jax.jit(fn)

  def topology(self) -> dict:
    """This host's place in the data: the iterators' geometry arguments.

    It follows our devices (``config.parallel.num_devices`` may use fewer
    than JAX sees).
    """
    return dict(process_index=jax.process_index(),
                process_count=jax.process_count(),
                local_device_count=self.num_local)

  def get_metrics(self, metrics: PyTree) -> PyTree:
    """Device metrics (identical on every device) -> host numpy scalars."""
    return jax.device_get(self.get_replicated(metrics))


def pad_batch(batch: dict, size: int) -> dict:
  """Pads an eval batch to ``size`` examples with ``mask`` 0."""
  n = len(batch['labels'])
  if 'mask' not in batch:
    batch = dict(batch, mask=np.ones((n,), np.float32))
  if n == size:
    return batch
  if n > size:
    raise ValueError(f'eval batch of {n} examples is larger than {size}.')
  def pad(x):
    x = np.asarray(x)
    return np.concatenate([x, np.zeros((size - n,) + x.shape[1:], x.dtype)])
  return {k: pad(v) for k, v in batch.items()}


def prefetch_to_device(iterator, put: Callable[[dict], dict], size: int = 2):
  """Keeps ``size`` batches in flight on the devices (transfer overlap)."""
  import collections  # pylint: disable=g-import-not-at-top
  queue = collections.deque()
  def enqueue(n):
    for _ in range(n):
      try:
        item = next(iterator)
      except StopIteration:
        return
      queue.append(put(item))
  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)

