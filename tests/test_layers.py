"""Dependencies point down: nn -> models -> optim/data -> train -> analysis -> commands.

Every ``nfnet_jax`` import of every module (function-level imports too) is
read with ``ast``; a module may import its own layer and the layers below.
``config`` is the floor everyone reads; it may reach the model, data and
optimizer validators (lazily, inside ``validate_config``) but never
``train`` or ``analysis``.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'nfnet_jax')

LAYER = {'config': 0, 'nn': 1, 'models': 2, 'optim': 3, 'data': 3,
         'pretrained': 3, 'interop': 3, 'export': 3, 'train': 4, 'analysis': 5,
         'commands': 6}
# interop: the validator checks finetune.timm_name against the covered names.
CONFIG_MAY_IMPORT = {'config', 'models', 'optim', 'data', 'interop'}


def _imports(path):
  """The nfnet_jax sub-packages/modules a file imports."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  out = set()
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    for n in names:
      parts = n.split('.')
      if parts[0] == 'nfnet_jax' and len(parts) > 1 and parts[1] in LAYER:
        out.add(parts[1])
  return out


def _modules():
  for dirpath, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(dirpath, f)
        top = os.path.relpath(path, PACKAGE).split(os.sep)[0].removesuffix('.py')
        yield top, path


def test_no_module_imports_a_higher_layer():
  bad = []
  for top, path in _modules():
    if top not in LAYER:
      continue
    for dep in _imports(path):
      if top == 'config':
        ok = dep in CONFIG_MAY_IMPORT
      else:
        ok = LAYER[dep] <= LAYER[top]
      if not ok:
        bad.append(f'{os.path.relpath(path, ROOT)} imports nfnet_jax.{dep}')
  assert not bad, bad


def test_train_does_not_import_analysis():
  train = [p for top, p in _modules() if top == 'train']
  assert len(train) >= 8   # the checker sees the package
  assert all('analysis' not in _imports(p) for p in train)
