"""Docs that cannot rot: README.md and docs/**/*.md against the repository.

* every relative link points at a file or folder that exists (and a
  ``#fragment`` at a heading of its page);
* every repository path the text names (``nfnet_jax/...``, ``configs/...``,
  ``scripts/...``, ``tests/...``, ``benchmarks/...``, ``docs/...``) exists;
* every ``nfnet-*`` / ``python scripts/<command>.py`` command line, in code
  blocks and in inline code, parses: its flags go through the command's own
  argparse parser (nothing runs).
"""
import glob
import importlib
import os
import re
import shlex

import pytest

from nfnet_jax.commands import entry

from conftest import ROOT
PAGES = sorted(['README.md'] + [os.path.relpath(p, ROOT) for p in
                                glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'),
                                          recursive=True)])
TOPS = ('nfnet_jax', 'configs', 'scripts', 'tests', 'benchmarks', 'docs')
PATH_RE = re.compile(r'(?<![\w./~-])((?:%s)/[\w./{},*+-]*)' % '|'.join(TOPS))
LINK_RE = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
FENCE_RE = re.compile(r'^```(\w*)\n(.*?)^```', re.S | re.M)
INLINE_RE = re.compile(r'`([^`\n]+)`')
SCRIPT_RE = re.compile(r'^scripts/(\w+)\.py$')


def _text(page):
  with open(os.path.join(ROOT, page)) as f:
    return f.read()


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading."""
  s = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return s.replace(' ', '-')


def _anchors(page):
  return {_slug(m.group(1)) for m in re.finditer(r'^#+ (.*)$', _text(page), re.M)}


def _without_code(text):
  return FENCE_RE.sub('', text)


@pytest.mark.parametrize('page', PAGES)
def test_relative_links_exist(page):
  bad = []
  for target in LINK_RE.findall(_without_code(_text(page))):
    if re.match(r'^[a-z]+:', target):
      continue   # http(s):, mailto:
    path, _, fragment = target.partition('#')
    dest = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
        os.path.join(ROOT, page)
    if not os.path.exists(dest):
      bad.append(f'{target}: {os.path.relpath(dest, ROOT)} does not exist')
    elif fragment and dest.endswith('.md') and fragment not in _anchors(os.path.relpath(dest, ROOT)):
      bad.append(f'{target}: no heading #{fragment} in {os.path.relpath(dest, ROOT)}')
  assert not bad, f'{page}: ' + '; '.join(bad)


def _expand(path):
  """`a/{b,c}.py` -> [a/b.py, a/c.py]; trailing punctuation and `:arg` dropped."""
  path = path.split(':')[0].rstrip('.,;)')
  m = re.search(r'\{([^{}]*)\}', path)
  if m:
    return [p for alt in m.group(1).split(',')
            for p in _expand(path[:m.start()] + alt + path[m.end():])]
  return [path]


def _exists(path):
  """Exists, or is an output prefix (``--out docs/studies/x_results``: x_results.md)."""
  full = os.path.join(ROOT, path)
  if '*' in path:
    return bool(glob.glob(full))
  return os.path.exists(full) or bool(glob.glob(glob.escape(full) + '.*'))


@pytest.mark.parametrize('page', PAGES)
def test_named_repository_paths_exist(page):
  text = _text(page)
  missing = sorted({p for raw in PATH_RE.findall(text) for p in _expand(raw)
                    if not _exists(p)})
  assert not missing, f'{page} names paths that do not exist: {missing}'


def _command_lines(text):
  """Command lines from ```bash blocks (continuations joined) and inline code."""
  lines = []
  for lang, body in FENCE_RE.findall(text):
    if lang not in ('', 'bash', 'sh', 'shell'):
      continue
    body = re.sub(r'\\\n\s*', ' ', body)
    lines += body.splitlines()
  lines += INLINE_RE.findall(_without_code(text))
  out = []
  for line in lines:
    line = line.split(' #')[0].strip()
    if line.startswith('#'):
      continue
    # A command line (a bare `nfnet-train` in prose names the command).
    if re.match(r'^(nfnet-[\w-]+|python scripts/\w+\.py)\s', line):
      out.append(line)
  return out


def _parse(line):
  """(command module, argv) of a documented command line."""
  argv = shlex.split(line)
  if argv[0] == 'python':
    m = SCRIPT_RE.match(argv[1])
    assert m, line
    module, argv = m.group(1), argv[2:]
  else:
    assert argv[0] in entry.COMMANDS, f'{argv[0]} is not an installed command: {line}'
    module, argv = entry.COMMANDS[argv[0]], argv[1:]
  assert module in entry.COMMANDS.values(), f'scripts/{module}.py is not a command: {line}'
  return module, argv


def test_every_page_has_command_lines_to_check():
  counts = {p: len(_command_lines(_text(p))) for p in PAGES}
  assert counts['README.md'] >= 8, counts
  assert sum(counts.values()) >= 60, counts


@pytest.mark.parametrize('page', PAGES)
def test_documented_command_lines_parse(page, capsys):
  bad = []
  for line in _command_lines(_text(page)):
    module, argv = _parse(line)
    parser = importlib.import_module(f'nfnet_jax.commands.{module}').parser()
    try:
      parser.parse_with_overrides(argv)
    except SystemExit as e:
      if e.code:
        bad.append(f'{line!r}: {capsys.readouterr().err.strip()}')
  assert not bad, f'{page}:\n' + '\n'.join(bad)


def test_the_checks_catch_rot(tmp_path):
  """A broken link, a missing path and a bad flag are each found."""
  text = ('[x](nope.md) `configs/no_such.py`\n```bash\nnfnet-train --config c.py --wrkdir W\n```\n')
  assert LINK_RE.findall(text) == ['nope.md']
  assert [p for raw in PATH_RE.findall(text) for p in _expand(raw) if not _exists(p)] == [
      'configs/no_such.py']
  (line,) = _command_lines(text)
  module, argv = _parse(line)
  with pytest.raises(SystemExit):
    importlib.import_module(f'nfnet_jax.commands.{module}').parser().parse_with_overrides(argv)
  assert _expand('configs/studies/{regularization,normalizers}.py:local') == [
      'configs/studies/regularization.py', 'configs/studies/normalizers.py']
  assert _slug('Sweeps on a cluster') == 'sweeps-on-a-cluster'
