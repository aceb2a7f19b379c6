"""benchmarks/gpu_check.py --tiny on CPU, and the TensorFlow-free import path.

The GPU images users run have no TensorFlow: the model, the train step and
the GPU check must run with `import tensorflow` failing. Both tests run in a
subprocess whose import system refuses tensorflow and tensorflow_datasets.
"""
import importlib.util
import json
import subprocess
import sys

from conftest import ROOT
from conftest import subprocess_env

# TensorFlow made absent, as on a machine without it: the path finder does not
# see it (find_spec returns None, `import` raises ModuleNotFoundError), so
# libraries that probe for it (torch does) behave as they would there.
BLOCK_TF = '''
import importlib.machinery, sys
class _NoTF(importlib.machinery.PathFinder):
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
      return None
    return importlib.machinery.PathFinder.find_spec(name, path, target)
sys.meta_path[:] = [_NoTF if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
'''


def _run(code, timeout=600):
  env = subprocess_env(devices=1)  # one CPU device is enough; -O0 as everywhere
  proc = subprocess.run([sys.executable, '-c', BLOCK_TF + code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def test_blocker_really_blocks_tensorflow():
  out = _run('''
import importlib.util
print('spec', importlib.util.find_spec('tensorflow'))
try:
  import tensorflow_datasets
  print('imported')
except ModuleNotFoundError as e:
  print('absent:', e)
''')
  assert 'spec None' in out and "absent: No module named 'tensorflow_datasets'" in out


def test_model_step_checkpoint_path_imports_and_runs_without_tensorflow():
  out = _run('''
import jax, jax.numpy as jnp, numpy as np
from nfnet_jax import config as config_lib, models, optim
from nfnet_jax.train import step as step_lib, parallel, checkpoint, loop, state
from nfnet_jax.analysis import benchmark
cfg = config_lib.base_config()
cfg.model.depths = (1, 1, 1, 1); cfg.model.widths = (16, 32, 48, 48)
cfg.model.stem_widths = (4, 4, 8, 8); cfg.model.group_width = 8
cfg.optimizer.warmup_steps = 2
net = models.create_model(cfg.model, 10)
tx, sched = optim.build_optimizer(cfg.optimizer, 2, 10)
fn = step_lib.make_train_step(net.apply, tx, cfg.optimizer, compute_dtype='bfloat16',
                              schedule=sched)
par = parallel.Parallel('shard_map', jax.devices()[:1])
# Abstract state (nothing compiles): shapes from init and the optimizer.
key, x = jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3))
params, mstate = jax.eval_shape(lambda k, x: net.init(k, x, is_training=True), key, x)
i32 = jax.ShapeDtypeStruct((), jnp.int32)
state = step_lib.TrainState(
    step=i32, params=params, model_state=mstate, opt_state=jax.eval_shape(tx.init, params),
    ema_params=params, rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
    nonfinite_total=i32, nonfinite_consecutive=i32)
batch = {'images': jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32),
         'labels': jax.ShapeDtypeStruct((2, 10), jnp.float32)}
new_state, metrics = jax.eval_shape(par.wrap_train_step(fn), state, batch)
print('ok', sorted(metrics)[:2], 'tf' in sys.modules or 'tensorflow' in sys.modules)
''', timeout=300)
  assert 'ok' in out and out.strip().endswith('False')


def test_gpu_check_tiny_runs_on_cpu(tmp_path):
  """Both conv impls and (when installed) timm, on tiny models, on CPU."""
  have_timm = (importlib.util.find_spec('timm') is not None and
               importlib.util.find_spec('torch') is not None)
  out_json = tmp_path / 'gpu.jsonl'
  args = ['--tiny', '--cases', 'f0_train_b128_192', '--rounds', '2', '--warmup', '1',
          '--json_out', str(out_json)] + ([] if have_timm else ['--no_timm'])
  out = _run(f'''
import runpy
sys.argv = ['gpu_check.py'] + {args!r}
runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')
''')
  recs = [json.loads(l) for l in out_json.read_text().splitlines()]
  env = recs[0]
  assert env['record'] == 'env' and env['backend'] == 'cpu' and env['tiny']
  assert env['bf16_matmul_peak_tflops'] > 0
  assert not env['tensorflow_imported']
  sides = {r['side']: r for r in recs if 'side' in r}
  for impl in ('xla', 'split'):
    r = sides[f'ours_{impl}']
    assert r['n'] == 2 and r['min_ms'] <= r['median_ms'] <= r['max_ms']
    # images/s is batch over the median step time.
    assert abs(r['images_per_s'] - r['batch'] / (r['median_ms'] * 1e-3)) < 1e-6 * r['images_per_s']
    assert r['flops'] > 0 and 0 < r['mfu_pct'] and r['compile_s'] > 0
    assert r['xla_peak_mib'] > 0
  verdict = [r for r in recs if r.get('record') == 'conv_impl'][0]
  assert verdict['auto_picks'] == 'split'  # the CPU entry of AUTO_IMPL
  assert verdict['faster'] in ('xla', 'split')
  assert 'conv_impl on cpu' in out
  if have_timm:
    t = sides['timm']
    assert t['images_per_s'] > 0 and t['params'] > 0
    assert abs(sides['ours_xla']['ratio_vs_timm'] -
               sides['ours_xla']['images_per_s'] / t['images_per_s']) < 1e-9
  assert recs[-1]['record'] == 'total' and not recs[-1]['tensorflow_imported']
