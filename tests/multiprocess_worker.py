"""One process of the multi-process test (run by tests/test_multiprocess.py).

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python \
        tests/multiprocess_worker.py --num_processes 2 --process_id 0 \
        --coordinator 127.0.0.1:PORT --out DIR

Joins JAX's distributed runtime (CPU collectives over localhost, gloo) when
``--num_processes > 1`` through the framework's own launch path (the
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``
variables read by ``maybe_initialize_distributed('auto')``), builds the framework's train step (the optimizer
chain of a config: AGC, weight decay, SGD-Nesterov, EMA) for a tiny Haiku
convnet, wraps it with ``nfnet_jax.train.parallel.Parallel`` in each mode,
feeds every process its slice of the same deterministic global batches and
writes the final train state to ``<out>/<mode>_process<k>.npz``.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GLOBAL_BATCH = 16
NUM_CLASSES = 5
IMAGE = (12, 12, 3)


def global_batch(step):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(1000 + step)
  images = rng.randn(GLOBAL_BATCH, *IMAGE).astype(np.float32)
  labels = np.eye(NUM_CLASSES, dtype=np.float32)[
      rng.randint(0, NUM_CLASSES, GLOBAL_BATCH)]
  return {'images': images, 'labels': labels}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--num_processes', type=int, required=True)
  parser.add_argument('--process_id', type=int, default=0)
  parser.add_argument('--coordinator', default=None)
  parser.add_argument('--modes', default='shard_map,pmap')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  t0 = time.time()

  import jax  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    # The README's manual multi-host launch: the framework reads these three
    # variables ('auto' mode) and calls jax.distributed.initialize().
    os.environ['JAX_COORDINATOR_ADDRESS'] = args.coordinator
    os.environ['JAX_NUM_PROCESSES'] = str(args.num_processes)
    os.environ['JAX_PROCESS_ID'] = str(args.process_id)
    from nfnet_jax.train import parallel as parallel_lib  # pylint: disable=g-import-not-at-top
    assert parallel_lib.maybe_initialize_distributed('auto')
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from nfnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax import optim  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import parallel  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from nfnet_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  assert jax.process_count() == args.num_processes, jax.process_count()
  assert jax.process_index() == args.process_id
  n_local = jax.local_device_count()
  print(f'[worker {args.process_id}] {jax.device_count()} devices, '
        f'{n_local} local', flush=True)

  def forward(images, is_training, return_metrics=False):
    del is_training, return_metrics
    x = hk.Conv2D(8, 3, stride=2, name='conv')(images)
    x = jax.nn.gelu(x)
    x = hk.Conv2D(8, 3, name='conv_1')(x)
    x = jnp.mean(jax.nn.relu(x), axis=(1, 2))
    return {'logits': hk.Linear(NUM_CLASSES, name='linear')(x)}
  model = hk.transform_with_state(forward)

  config = config_lib.base_config()
  config.optimizer.base_lr = 0.4
  config.optimizer.warmup_steps = 1
  config.optimizer.clipping = 0.1
  config.optimizer.ema_decay = 0.9
  config.optimizer.label_smoothing = 0.1
  config.train.batch_size = GLOBAL_BATCH
  config.train.total_steps = args.steps
  tx, schedule = optim.build_optimizer(config.optimizer, GLOBAL_BATCH,
                                       args.steps)
  host_state = state_lib.init_train_state(model, tx, config, IMAGE)
  step_fn = step_lib.make_train_step(
      model.apply, tx, {'label_smoothing': 0.1, 'ema_decay': 0.9},
      schedule=schedule)

  per_process = GLOBAL_BATCH // args.num_processes
  lo = args.process_id * per_process
  os.makedirs(args.out, exist_ok=True)
  for mode in args.modes.split(','):
    par = parallel.Parallel(mode, jax.devices())
    assert par.num_local == n_local
    train_step = par.wrap_train_step(step_fn)
    state = par.put_replicated(host_state)
    losses = []
    for s in range(args.steps):
      batch = {k: v[lo:lo + per_process] for k, v in global_batch(s).items()}
      state, metrics = train_step(state, par.put_batch(batch))
      losses.append(float(par.get_metrics(metrics)['loss']))
    final = par.get_replicated(state)
    leaves, _ = jax.tree_util.tree_flatten_with_path(final)
    arrays = {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}
    arrays['__losses__'] = np.asarray(losses)
    init_leaves, _ = jax.tree_util.tree_flatten_with_path(host_state.params)
    arrays.update({'__init__' + jax.tree_util.keystr(p): np.asarray(x)
                   for p, x in init_leaves})
    np.savez(os.path.join(args.out, f'{mode}_process{args.process_id}.npz'),
             **arrays)
    print(f'[worker {args.process_id}] {mode}: losses {losses}', flush=True)
  if args.num_processes > 1:
    jax.distributed.shutdown()
  print(f'[worker {args.process_id}] done in {time.time() - t0:.1f}s',
        flush=True)


if __name__ == '__main__':
  main()
