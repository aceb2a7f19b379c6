"""Test set-up: 8 fake CPU devices, quiet TensorFlow, no GPU for TF; shared fixtures."""
import atexit
import json
import os
import resource
import shutil
import tempfile
import time

import pytest

# Tests compile many small programs and run each a few times, so XLA:CPU's
# compile time is most of the suite. Two flags cut it (every test's tolerance
# against its independent reference holds with them): backend optimisation
# level 0 (a tiny NFNet train step under load: 102 s -> 57 s) and, on jaxlib
# 0.10, the older (non-"fusion emitter") codegen for fusions
# (benchmarks/compile_time.py, quiet: 11.0-11.2 -> 5.5-5.9 CPU-s in float32;
# 19.0 -> 10.4 in bfloat16). Only together with -O0: at the default level that
# flag doubles compile times (docs/performance.md). jaxlib 0.12 no longer has
# it and XLA aborts on unknown flags, hence the version test.
def _test_xla_flags() -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  flags = '--xla_backend_optimization_level=0'
  try:
    if metadata.version('jaxlib').startswith('0.10.'):
      flags += ' --xla_cpu_use_fusion_emitters=false'
  except metadata.PackageNotFoundError:
    pass
  return flags


TEST_XLA_FLAGS = _test_xla_flags()
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8 ' + TEST_XLA_FLAGS)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# One OpenMP thread (torch, for the timm comparisons): the pytest workers
# already share the cores, and torch's second thread waits for a descheduled
# peer at every parallel region (one suite run: a timm test took 67 s of wall
# time for 16 CPU-s). XLA and TensorFlow size their own thread pools.
os.environ.setdefault('OMP_NUM_THREADS', '1')
# As every command does (`nfnet_jax.commands.base.skip_keras_import`): the
# workers and every subprocess import TensorFlow without Keras (~1 CPU-s each).
from nfnet_jax.commands import base as _commands_base  # pylint: disable=g-import-not-at-top,wrong-import-position
_commands_base.skip_keras_import()
# One persistent XLA cache for the whole session: the xdist controller sets it
# before its workers start and every test subprocess inherits it, so the many
# training subprocesses (CLI, resume, sweeps, multi-process) compile each
# program once instead of once per process. A fresh directory per session:
# nothing carries over between CI runs. Tests that need their own cache still
# set jax.config themselves (the `compilation_cache` fixture below).
# The process that makes the directory (the xdist controller, or pytest
# without workers) removes it when it exits, after every worker and test
# subprocess: each suite run left ~30 MB in /tmp before.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='nfnet_jax_test_xla_')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache for the module: identical programs compile once.

  Yields the cache directory (subprocesses reach it through
  ``JAX_COMPILATION_CACHE_DIR``); the previous settings come back after.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache as cc  # pylint: disable=g-import-not-at-top
  keys = ('jax_compilation_cache_dir',
          'jax_persistent_cache_min_compile_time_secs',
          'jax_persistent_cache_min_entry_size_bytes')
  old = {k: getattr(jax.config, k) for k in keys}
  path = str(tmp_path_factory.mktemp('jax_cache'))
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  cc.reset_cache()
  yield path
  for k, v in old.items():
    jax.config.update(k, v)
  cc.reset_cache()


# ---------------------------------------------------------------------------
# Shared helpers (import them: `from conftest import ROOT, subprocess_env`)
# and fixtures.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_repo_module(module_name: str, *parts: str):
  """Executes ``ROOT/<parts...>`` (a script or config file) as a fresh module named ``module_name``."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, *parts))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_repo_config(name: str, arg=None, module_name=None):
  """``configs/<name>.py``'s ``get_config(arg)`` (``get_config()`` when arg is None)."""
  module = load_repo_module(module_name or f'repo_config_{name.replace("/", "_")}',
                            'configs', f'{name}.py')
  return module.get_config() if arg is None else module.get_config(arg)


def subprocess_env(devices=None, cache_dir=None, **overrides) -> dict:
  """The environment of a test's subprocess (a training run, a script).

  ``os.environ`` with the checkout importable (``PYTHONPATH=ROOT`` first),
  TensorFlow quiet, no GPU, unbuffered output, no multi-host variables.

  Args:
    devices: that many fake CPU devices (with the suite's TEST_XLA_FLAGS).
    cache_dir: a persistent compilation cache every run shares.
    **overrides: more variables; a None value removes one.
  """
  env = dict(os.environ)
  env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  env['CUDA_VISIBLE_DEVICES'] = ''
  env['PYTHONUNBUFFERED'] = '1'
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
               'JAX_LOCAL_DEVICE_IDS'):
    env.pop(name, None)
  if devices is not None:
    # Compile-speed flags; every compared run uses the same ones.
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices} ' + TEST_XLA_FLAGS
  if cache_dir is not None:
    env['JAX_COMPILATION_CACHE_DIR'] = cache_dir
    env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
    env['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
  for name, value in overrides.items():
    if value is None:
      env.pop(name, None)
    else:
      env[name] = value
  return env


@pytest.fixture(scope='session')
def repo_root():
  """The checkout's root directory."""
  return ROOT


@pytest.fixture(scope='module')
def fake_fashion_mnist(tmp_path_factory):
  """A small fake Fashion-MNIST idx directory (256 train / 64 test, cyclic labels)."""
  from nfnet_jax.testing import fake_data  # pylint: disable=g-import-not-at-top
  return fake_data.write_fake_fashion_mnist(str(tmp_path_factory.mktemp('fake_fmnist')))


# ---------------------------------------------------------------------------
# `--cpu-report=FILE`: where the suite's CPU time goes (docs/getting_started.md).
# Wall time (`--durations`) hides how much of a test's cost is its own
# compiles and how much the training subprocesses it waits for: each test's
# setup + call + teardown is charged its process's user+system CPU and that
# of the children it reaped (every `subprocess.run`), one JSON line per test
# in FILE (each xdist worker appends its own); the session prints the sums.


def pytest_addoption(parser):
  parser.addoption('--cpu-report', default=None, metavar='FILE',
                   help='append per-test CPU seconds (own, children) to FILE '
                        'as JSON lines and print the largest at the end')


def pytest_configure(config):
  path = config.getoption('--cpu-report')
  if path and not hasattr(config, 'workerinput') and os.path.exists(path):
    os.remove(path)  # a new session's report, not appended to the last one's


def _cpu_seconds():
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  path = item.config.getoption('--cpu-report')
  if not path:
    yield
    return
  own0, children0 = _cpu_seconds()
  start, wall0 = time.time(), time.perf_counter()
  yield
  own1, children1 = _cpu_seconds()
  # start: when the test began (epoch seconds) and worker: which xdist
  # worker ran it, so that the report can show when the cores sat idle.
  record = {'test': item.nodeid, 'own_s': round(own1 - own0, 3),
            'children_s': round(children1 - children0, 3),
            'wall_s': round(time.perf_counter() - wall0, 3), 'start': round(start, 3),
            'worker': os.environ.get('PYTEST_XDIST_WORKER', 'main')}
  with open(path, 'a', encoding='utf-8') as f:  # one short write per line: workers interleave whole lines
    f.write(json.dumps(record) + '\n')


def cpu_report_lines(records, top=15):
  """The summary `--cpu-report` prints: totals, the largest tests and files."""
  own = sum(r['own_s'] for r in records)
  children = sum(r['children_s'] for r in records)
  lines = [f'CPU seconds of {len(records)} tests: {own + children:,.0f} '
           f'({own:,.0f} in the pytest processes, {children:,.0f} in their subprocesses)']
  by_test = sorted(records, key=lambda r: -(r['own_s'] + r['children_s']))
  lines.append(f'largest {top} tests (own + subprocesses, wall):')
  for r in by_test[:top]:
    lines.append(f'  {r["own_s"] + r["children_s"]:7.1f} = {r["own_s"]:6.1f} + '
                 f'{r["children_s"]:6.1f}  ({r["wall_s"]:6.1f} s wall)  {r["test"]}')
  by_file = {}
  for r in records:
    name = r['test'].split('::')[0]
    by_file[name] = by_file.get(name, 0.0) + r['own_s'] + r['children_s']
  lines.append(f'largest {top} files:')
  for name, seconds in sorted(by_file.items(), key=lambda kv: -kv[1])[:top]:
    lines.append(f'  {seconds:7.1f}  {name}')
  timed = [r for r in records if 'start' in r]
  if timed:
    # When each worker ran out of tests: the spread is the tail in which
    # cores sat idle while one worker finished its queue.
    first = min(r['start'] for r in timed)
    ends = {}
    for r in timed:
      ends[r['worker']] = max(ends.get(r['worker'], 0.0), r['start'] + r['wall_s'] - first)
    span = max(ends.values())
    lines.append(f'span {span:,.0f} s: {(own + children) / span:.2f} cores busy on average; '
                 'workers done at ' + ', '.join(f'{w} {t:,.0f} s' for w, t in sorted(ends.items())))
  return lines


def pytest_terminal_summary(terminalreporter, config):
  path = config.getoption('--cpu-report')
  if not path or hasattr(config, 'workerinput') or not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    records = [json.loads(line) for line in f if line.strip()]
  terminalreporter.section('CPU report')
  for line in cpu_report_lines(records):
    terminalreporter.write_line(line)
