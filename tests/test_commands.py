"""The installed commands (nfnet_jax/commands): wheel install, --help, bad flags, quiet console.

The wheel test builds a real (non-editable) wheel from a copy of setup.py and
the package, installs it with ``pip install --no-deps --target`` into a
temporary folder and runs every console script's ``--help`` from a directory
outside the checkout, with only that folder on ``PYTHONPATH``.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from nfnet_jax.commands import base
from nfnet_jax.commands import entry

from conftest import ROOT
from conftest import subprocess_env
NOISE_RE = re.compile(r'oneDNN custom operations|absl::InitializeLog|cpu_feature_guard')


def _console_scripts():
  """{name: 'module:function'} as setup.py declares them (read, not imported)."""
  text = open(os.path.join(ROOT, 'setup.py')).read()
  return dict(re.findall(r'"(nfnet-[\w-]+)=([\w.:]+)"', text))


def test_setup_declares_every_command_module():
  scripts = _console_scripts()
  assert scripts == {name: f'nfnet_jax.commands.entry:{mod}'
                     for name, mod in entry.COMMANDS.items()}
  for name in ('nfnet-train', 'nfnet-evaluate', 'nfnet-spp', 'nfnet-report',
               'nfnet-convert', 'nfnet-export', 'nfnet-benchmark', 'nfnet-prepare-data'):
    assert name in scripts
  for mod in entry.COMMANDS.values():   # every command has its thin scripts/ wrapper
    assert os.path.isfile(os.path.join(ROOT, 'scripts', f'{mod}.py')), mod


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(target dir with the installed wheel, its bin dir)."""
  tmp = tmp_path_factory.mktemp('wheel')
  src = tmp / 'src'
  src.mkdir()
  shutil.copy(os.path.join(ROOT, 'setup.py'), src)
  shutil.copytree(os.path.join(ROOT, 'nfnet_jax'), src / 'nfnet_jax',
                  ignore=shutil.ignore_patterns('__pycache__'))
  dist = tmp / 'dist'
  env = dict(os.environ, PIP_NO_INDEX='1', PIP_DISABLE_PIP_VERSION_CHECK='1')
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                  '--no-build-isolation', '-w', str(dist), str(src)],
                 check=True, env=env, cwd=tmp, capture_output=True, timeout=300)
  wheels = list(dist.glob('nfnet_jax-*.whl'))
  assert len(wheels) == 1, wheels
  target = tmp / 'target'
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                  '--target', str(target), str(wheels[0])],
                 check=True, env=env, cwd=tmp, capture_output=True, timeout=300)
  return target, target / 'bin'


def test_wheel_installs_every_command_and_help_works_outside_the_checkout(installed, tmp_path):
  target, bindir = installed
  # The wheel holds the package, not the checkout's tests/scripts/configs.
  assert (target / 'nfnet_jax' / 'commands' / 'base.py').is_file()
  assert not (target / 'tests').exists() and not (target / 'scripts').exists()
  env = dict(os.environ, PYTHONPATH=str(target))
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  for name in _console_scripts():
    exe = bindir / name
    assert exe.is_file(), f'{name} not installed'
    proc = subprocess.run([str(exe), '--help'], capture_output=True, text=True,
                          cwd=str(tmp_path), env=env, timeout=120)
    assert proc.returncode == 0, (name, proc.stderr[-2000:])
    assert proc.stdout.startswith(f'usage: {name}'), (name, proc.stdout[:200])
    assert f'examples:\n  {name} ' in proc.stdout, name
    assert proc.stderr == '', (name, proc.stderr[-2000:])
    print(f'{name} --help: exit 0, {len(proc.stdout.splitlines())} lines')
  # The commands ran the installed copy, not the checkout.
  proc = subprocess.run([sys.executable, '-c', 'import nfnet_jax; print(nfnet_jax.__file__)'],
                        capture_output=True, text=True, cwd=str(tmp_path), env=env)
  assert proc.stdout.strip().startswith(str(target)), proc.stdout


@pytest.mark.parametrize('module', sorted(set(entry.COMMANDS.values())))
def test_help_is_the_module_docstring(module):
  """--help = the module docstring: its summary's command name, description and examples."""
  import importlib  # pylint: disable=g-import-not-at-top
  mod = importlib.import_module(f'nfnet_jax.commands.{module}')
  p = mod.parser()
  prog = mod.__doc__.split(':', 1)[0]
  assert p.prog == prog and prog.startswith('nfnet-')
  text = p.format_help()
  described = ' '.join(mod.__doc__.split('\n\n')[1].split())
  assert ' '.join(p.description.split()) == described
  examples = text.split('examples:\n', 1)[1].splitlines()
  assert examples and all(e.startswith(f'  {prog}') for e in examples if e.strip()
                          and not e.startswith('--config.')), examples


def test_help_from_a_docstring_without_a_command_name_is_refused():
  with pytest.raises(ValueError, match='nfnet-NAME: summary'):
    base.ArgumentParser.from_doc('Trains a model.\n\nMore text.')
  p = base.ArgumentParser.from_doc('nfnet-x: does y.\n\nLong  text\nhere.\n\n'
                                   'Examples:\n  nfnet-x --a 1\n  nfnet-x --b\n')
  assert (p.prog, p.description) == ('nfnet-x', 'Long text here.')
  assert p.epilog == 'examples:\n  nfnet-x --a 1\n  nfnet-x --b'


@pytest.mark.parametrize('module', sorted(set(entry.COMMANDS.values())))
def test_unknown_flag_is_one_line_and_exit_2(module, capsys):
  import importlib  # pylint: disable=g-import-not-at-top
  main = importlib.import_module(f'nfnet_jax.commands.{module}').main
  with pytest.raises(SystemExit) as e:
    main(['--no_such_flag=1'])
  assert e.value.code == base.EXIT_USAGE
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  # Required flags are reported first where a command has them.
  assert ('--no_such_flag' in err[0] or 'arguments are required' in err[0]), err
  assert err[0].endswith('--help)'), err


@pytest.mark.parametrize('argv, what', [
    (['evaluate', '--config', 'c.py', '--checkpoint', 'x', '--resolutions', '224,2x6'],
     'comma-separated integers'),
    (['benchmark', '--model', 'NFNet', '--steps', '0'], '--steps must be >= 1'),
    (['benchmark', '--model', 'NFNet', '--mode', 'fast'], "invalid choice: 'fast'"),
    (['export', '--from', 'a.npz', '--out', 'o', '--image_size', 'big'], "invalid int value"),
    (['spp', '--out', 'o', '--config.model.alpha'], 'an override needs a value'),
    (['spp', '--out', 'o', '--skip_gain', 'relu'], '--skip_gain must be a number or "none"'),
])
def test_bad_flag_values_are_one_line_and_exit_2(argv, what, capsys):
  import importlib  # pylint: disable=g-import-not-at-top
  main = importlib.import_module(f'nfnet_jax.commands.{argv[0]}').main
  with pytest.raises(SystemExit) as e:
    main(argv[1:])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and what in err[0], err


def test_int_list():
  assert base.int_list('224,256, 320') == [224, 256, 320]
  for bad in ('', 'a', '0', '224,-1'):
    with pytest.raises(Exception):
      base.int_list(bad)


# ---------------------------------------------------------------------------
# The quiet console


def test_tensorflow_start_up_lines_are_what_the_filter_drops():
  """The lines TensorFlow prints while importing, as they are, are all noise."""
  proc = subprocess.run([sys.executable, '-c', 'import sys, tensorflow; print("keras" in sys.modules)'],
                        capture_output=True, timeout=300,
                        env=subprocess_env(TF_CPP_MIN_LOG_LEVEL=None, TF_USE_LEGACY_KERAS=None))
  # The control of `skip_keras_import` (below): left alone, TensorFlow imports Keras.
  assert proc.stdout == b'True\n', proc.stdout
  lines = proc.stderr.splitlines(keepends=True)
  assert any(NOISE_RE.search(l.decode()) for l in lines), proc.stderr  # the control
  assert all(base.is_noise(l) for l in lines), [l for l in lines if not base.is_noise(l)]


def test_a_command_that_imports_tensorflow_prints_only_its_own_lines():
  """nfnet-benchmark --mode data: the real Fashion-MNIST tf.data pipeline, timed briefly."""
  from nfnet_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
  if fashion_mnist.missing_files(fashion_mnist.DEFAULT_DIR):
    pytest.skip('Debian dataset-fashion-mnist not installed')
  code = ('import sys\n'
          'from nfnet_jax.commands import entry\n'
          'try:\n'
          f'  entry.run("benchmark", ["--config", {os.path.join(ROOT, "configs", "fashion_mnist.py:local")!r},\n'
          '             "--mode", "data", "--steps", "2", "--warmup", "1", "--nopeak", "--batch", "8"])\n'
          'finally:\n'
          '  print("tensorflow imported:", "tensorflow" in sys.modules)\n'
          '  print("keras imported:", "keras" in sys.modules)\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        env=subprocess_env(TF_CPP_MIN_LOG_LEVEL=None, TF_USE_LEGACY_KERAS=None),
                        timeout=300, cwd='/')
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == '', proc.stderr
  out = proc.stdout.splitlines()
  assert len(out) == 3 and out[0].startswith('bench: data fashion_mnist b8@32 | '), out
  assert out[1] == 'tensorflow imported: True'
  # The entry point kept TensorFlow from importing Keras (`base.skip_keras_import`).
  assert out[2] == 'keras imported: False'


def test_real_errors_still_reach_stderr():
  """Lines that are not start-up noise pass through the filter, in order; errors too."""
  code = (
      'import os, sys\n'
      'from nfnet_jax.commands import base\n'
      'with base.filtered_stderr_fd():\n'
      '  os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called '
      'are written to STDERR\\n")\n'
      '  os.write(2, b"I0000 00:00:1796193095.594776   10904 port.cc:153] oneDNN custom\\n")\n'
      '  os.write(2, b"E0000 00:00:1796193095.594776   10904 x.cc:1] a real error\\n")\n'
      '  print("python error", file=sys.stderr)\n'
      'print("after", file=sys.stderr)\n'
      'base.quiet_console()\n'
      'raise SystemExit("error: one clear line")\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        env=subprocess_env(TF_CPP_MIN_LOG_LEVEL=None), timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.splitlines() == [
      'E0000 00:00:1796193095.594776   10904 x.cc:1] a real error', 'python error',
      'after', 'error: one clear line']


def test_tcmalloc_environment_decides_when_to_re_execute():
  lib = 'libtcmalloc_minimal.so.4'
  found = lambda: lib
  def not_asked():
    raise AssertionError('the library is looked up only when it would be used')
  assert base.tcmalloc_environment({'PATH': '/bin'}, lambda: None) is None   # not installed
  env = base.tcmalloc_environment({'PATH': '/bin'}, found)
  assert env == {'PATH': '/bin', 'LD_PRELOAD': lib}
  # A preload the caller set is kept, after tcmalloc.
  env = base.tcmalloc_environment({'LD_PRELOAD': '/x/libfoo.so'}, found)
  assert env['LD_PRELOAD'] == f'{lib} /x/libfoo.so'
  # Already preloaded (the re-executed process itself, or the caller's choice).
  assert base.tcmalloc_environment({'LD_PRELOAD': f'/opt/{lib}'}, not_asked) is None
  assert base.tcmalloc_environment({'NFNET_MALLOC': 'system'}, not_asked) is None


# Runs `nfnet-<module> --help` through entry.run as its command line, and
# prints at exit whether tcmalloc is mapped into the process and its PID.
_MAPS_PROBE = '''
import atexit, os, sys
def report():
  maps = open('/proc/self/maps').read()
  print('tcmalloc mapped:', 'tcmalloc' in maps, 'pid', os.getpid(), flush=True)
atexit.register(report)
print('started pid', os.getpid(), flush=True)
sys.argv = ['nfnet-{module}', '--help']
from nfnet_jax.commands import entry
entry.run('{module}')
'''


@pytest.mark.parametrize('module,malloc,expect', [
    ('train', 'tcmalloc', True), ('train', 'system', False),
    ('show_recipe', 'tcmalloc', False)])   # light commands are not re-executed
def test_training_commands_run_with_tcmalloc(module, malloc, expect):
  if base.find_tcmalloc() is None:
    pytest.skip('tcmalloc is not installed (scripts/setup_env.sh installs '
                'libtcmalloc-minimal4 where apt works)')
  env = subprocess_env(NFNET_MALLOC=malloc)
  env.pop('LD_PRELOAD', None)
  proc = subprocess.run([sys.executable, '-c', _MAPS_PROBE.format(module=module)],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f'usage: nfnet-{module.replace("_", "-")}' in proc.stdout
  starts = re.findall(r'started pid (\d+)', proc.stdout)
  mapped = re.findall(r'tcmalloc mapped: (\w+) pid (\d+)', proc.stdout)
  # Re-executed once with the same PID (signals reach the run as before), or not at all.
  assert len(starts) == (2 if expect else 1) and len(set(starts)) == 1, proc.stdout
  assert mapped == [(str(expect), starts[0])], proc.stdout
