"""Install requirements: setup.py ranges admit the tested pins; no private JAX."""
import os
import re

from packaging.requirements import Requirement

from conftest import ROOT


def _setup_requirements():
  """install_requires + every extra of setup.py (setup() itself not run)."""
  import runpy  # pylint: disable=g-import-not-at-top
  from unittest import mock  # pylint: disable=g-import-not-at-top
  import setuptools  # pylint: disable=g-import-not-at-top
  captured = {}
  with mock.patch.object(setuptools, 'setup', lambda **kw: captured.update(kw)):
    runpy.run_path(os.path.join(ROOT, 'setup.py'))
  reqs = list(captured['install_requires'])
  for extra in captured['extras_require'].values():
    reqs += extra
  return [Requirement(r) for r in reqs]


def _constraints():
  out = {}
  for line in open(os.path.join(ROOT, 'constraints.txt')):
    line = line.split('#')[0].strip()
    if line:
      req = Requirement(line)
      spec = list(req.specifier)
      assert len(spec) == 1 and spec[0].operator == '==', f'not an exact pin: {line}'
      out[_norm(req.name)] = spec[0].version
  return out


def _norm(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def test_setup_states_ranges_that_admit_the_tested_pins_and_jax_0_11_and_0_12():
  pins = _constraints()
  reqs = _setup_requirements()
  assert reqs
  for req in reqs:
    name = _norm(req.name)
    assert name in pins, f'{req.name} has no exact version in constraints.txt'
    assert req.specifier.contains(pins[name]), (req, pins[name])
    # Exact pins live in constraints.txt only.
    assert not any(s.operator == '==' for s in req.specifier), req
  by_name = {_norm(r.name): r for r in reqs}
  for name in ('jax', 'jaxlib'):
    assert by_name[name].specifier.contains('0.11.2'), by_name[name]
    assert by_name[name].specifier.contains('0.10.2'), by_name[name]
    assert by_name[name].specifier.contains('0.12.0.1'), by_name[name]   # CI's second leg
    assert not by_name[name].specifier.contains('0.13.0'), by_name[name]


def test_setup_env_and_ci_install_with_the_constraints():
  text = open(os.path.join(ROOT, 'scripts', 'setup_env.sh')).read()
  assert re.search(r'pip install .*-c constraints\.txt', text)
  ci = open(os.path.join(ROOT, '.ci', 'run')).read()
  assert 'bash scripts/run_tests.sh' in ci and 'bash scripts/ci_newest_jax.sh' in ci


def test_no_private_jax_imports_in_the_package_and_scripts():
  private = re.compile(r'\b(jax\._src|jax\.interpreters|jax\.lib\b|jaxlib\.|jax\.core\b|'
                       r'jax\.linear_util|jax\.abstract_arrays)')
  hits = []
  for top in ('nfnet_jax', 'scripts', 'benchmarks', 'configs', 'tests'):
    for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
      for f in files:
        if f.endswith('.py') and f != os.path.basename(__file__):
          path = os.path.join(dirpath, f)
          for i, line in enumerate(open(path), 1):
            if private.search(line.split('#')[0]):
              hits.append(f'{os.path.relpath(path, ROOT)}:{i}: {line.strip()}')
  assert not hits, '\n'.join(hits)
