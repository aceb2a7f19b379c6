"""Two processes x 2 CPU devices (JAX distributed runtime over localhost)
train to the same state as one process x 4 devices.

``tests/multiprocess_worker.py`` runs the framework's train step (the
optimizer chain of a config, EMA, label smoothing) under
``nfnet_jax.train.parallel.Parallel`` in both ``shard_map`` and ``pmap``
modes. Two workers join ``jax.distributed`` (coordinator on a free
localhost port, gloo CPU collectives), each with 2 fake devices and its half
of every global batch; a third runs alone with 4 fake devices and whole
batches. All waits are bounded; on failure every child is killed.
"""
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nfnet_jax.train import parallel

from conftest import ROOT
from conftest import subprocess_env
WORKER = os.path.join(ROOT, 'tests', 'multiprocess_worker.py')
MODES = ('shard_map', 'pmap')
TIMEOUT = 420


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _load(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def test_two_processes_match_one_process(tmp_path):
  port = _free_port()
  procs, logs = [], []
  t0 = time.time()
  try:
    for pid in range(2):
      log = open(tmp_path / f'worker{pid}.log', 'w')
      logs.append(log)
      procs.append(subprocess.Popen(
          [sys.executable, WORKER, '--num_processes', '2', '--process_id',
           str(pid), '--coordinator', f'127.0.0.1:{port}', '--out',
           str(tmp_path / 'two')],
          env=subprocess_env(devices=2), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    log = open(tmp_path / 'single.log', 'w')
    logs.append(log)
    procs.append(subprocess.Popen(
        [sys.executable, WORKER, '--num_processes', '1', '--out',
         str(tmp_path / 'one')],
        env=subprocess_env(devices=4), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    deadline = time.time() + TIMEOUT
    codes = []
    for p in procs:
      codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
  except subprocess.TimeoutExpired:
    codes = None
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=30)
    for log in logs:
      log.close()
  outputs = '\n'.join(
      f'--- {name}\n' + (tmp_path / name).read_text()[-2000:]
      for name in ('worker0.log', 'worker1.log', 'single.log'))
  if codes is None:
    pytest.fail(f'workers timed out after {TIMEOUT}s:\n{outputs}')
  assert codes == [0, 0, 0], outputs
  print(f'multi-process test: {time.time() - t0:.0f}s wall')

  assert '4 devices, 2 local' in (tmp_path / 'worker0.log').read_text()
  assert '4 devices, 2 local' in (tmp_path / 'worker1.log').read_text()
  for mode in MODES:
    single = _load(tmp_path / 'one' / f'{mode}_process0.npz')
    p0 = _load(tmp_path / 'two' / f'{mode}_process0.npz')
    p1 = _load(tmp_path / 'two' / f'{mode}_process1.npz')
    assert set(single) == set(p0) == set(p1)
    assert any('params' in k for k in single)
    for key in single:
      # Both processes hold the same replicated state, bit for bit.
      np.testing.assert_array_equal(p1[key], p0[key], err_msg=key)
      # Cross-process (gloo) and in-process all-reduces may sum in another
      # order: equal to float32 round-off.
      np.testing.assert_allclose(p0[key], single[key], rtol=1e-5, atol=1e-8,
                                 err_msg=f'{mode} {key}')
    # Training moved every parameter: not a comparison of initial states.
    for key in single:
      if key.startswith('__init__'):
        trained = single['.params' + key[len('__init__'):]]
        assert not np.array_equal(trained, single[key]), key
        if key.endswith("['w']"):
          assert np.abs(trained - single[key]).max() > 1e-4, key
  # And the two wrappers agree with each other across processes too.
  for key in single:
    np.testing.assert_allclose(
        _load(tmp_path / 'two' / 'pmap_process0.npz')[key],
        _load(tmp_path / 'two' / 'shard_map_process0.npz')[key],
        rtol=1e-5, atol=1e-8, err_msg=key)


def test_manual_launch_environment():
  addr = {'JAX_COORDINATOR_ADDRESS': 'host0:1234'}
  assert parallel.distributed_kwargs({}) == {}
  assert parallel.distributed_kwargs(
      dict(addr, JAX_NUM_PROCESSES='4', JAX_PROCESS_ID='3')) == {
          'num_processes': 4, 'process_id': 3}
  # A cluster manager JAX recognises supplies the count and id itself.
  assert parallel.distributed_kwargs(dict(addr, SLURM_NTASKS='4')) == {}
  with pytest.raises(ValueError, match='also set JAX_NUM_PROCESSES'):
    parallel.distributed_kwargs(addr)
  with pytest.raises(ValueError, match='must both be set to integers'):
    parallel.distributed_kwargs(dict(addr, JAX_NUM_PROCESSES='4'))
  with pytest.raises(ValueError, match=r'JAX_PROCESS_ID=4 must be in \[0'):
    parallel.distributed_kwargs(dict(addr, JAX_NUM_PROCESSES='4', JAX_PROCESS_ID='4'))
  with pytest.raises(ValueError, match='JAX_COORDINATOR_ADDRESS .* is not'):
    parallel.distributed_kwargs({'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '0'})
  # 'off' never initialises, whatever the environment says.
  assert not parallel.maybe_initialize_distributed('off', addr)
  # 'auto' with an incomplete environment fails before initialising anything.
  with pytest.raises(ValueError, match='JAX_NUM_PROCESSES'):
    parallel.maybe_initialize_distributed('auto', addr)
