"""What every ``nfnet-*`` command shares: one flag style, a quiet console.

Flags are argparse, ``--name value`` or ``--name=value``, with
``--config FILE.py[:ARG]`` always an experiment config file and
``--config.a.b=value`` overriding any of its fields (taken out of argv
before argparse sees it, parsed by :mod:`nfnet_jax.config.load`). ``--help``
prints the command's description with an example and exits 0; a bad flag or
flag value is one line on stderr and exit status 2.

:func:`quiet_console` is process-wide state, so only entry points
(:func:`run`) call it: TensorFlow's C++ start-up lines (oneDNN notices, CPU
feature notices, ``WARNING: All log messages before absl::InitializeLog() is
called ...``) are written to file descriptor 2 while ``tensorflow`` is
imported; they are dropped there, and every other line of that import
(a real error) is written through.

:func:`library` is how a command reaches the JAX/TensorFlow parts of the
package: after its flags have parsed, so ``--help`` and flag errors stay
fast and never import JAX or TensorFlow.
"""
import argparse
import contextlib
import ctypes.util
import importlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import textwrap
from typing import Callable, Optional, Sequence

from nfnet_jax import console
from nfnet_jax.config import load as config_load

EXIT_USAGE = 2   # bad flags or flag values (argparse's own status)

# Lines that TensorFlow's (and XLA's) C++ libraries print while they load:
# glog-style INFO/WARNING records ("I0000 00:00:1796193095.594776   10904
# port.cc:153] oneDNN custom operations are on ..."), absl's notice that
# logging is not initialised yet, the second line of the CPU feature notice,
# and the CUDA plugin double-registration errors GPU machines print.
NOISE_PATTERNS = (
    re.compile(rb'^WARNING: All log messages before absl::InitializeLog\(\) is called'),
    re.compile(rb'^[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] '),
    re.compile(rb'^To enable the following instructions: .* rebuild TensorFlow'),
    re.compile(rb'^E\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] Unable to register '
               rb'cu(DNN|FFT|BLAS) factory'),
)
QUIET_MODULES = ('tensorflow',)


def is_noise(line: bytes) -> bool:
  return any(p.match(line) for p in NOISE_PATTERNS)


@contextlib.contextmanager
def filtered_stderr_fd():
  """Routes fd 2 through a file for the block; writes back all but the noise."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      for line in tmp:
        if not is_noise(line):
          os.write(2, line)


class _QuietLoader(importlib.abc.Loader):
  """Executes a module with its C++ start-up lines filtered."""

  def __init__(self, inner):
    self._inner = inner

  def create_module(self, spec):
    return self._inner.create_module(spec)

  def exec_module(self, module):
    with filtered_stderr_fd():
      self._inner.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
  """Wraps the loader of the top-level modules in ``names`` (found normally)."""

  def __init__(self, names):
    self.names = frozenset(names)
    self._busy = False

  def find_spec(self, fullname, path=None, target=None):
    if fullname not in self.names or self._busy:
      return None
    self._busy = True
    try:
      spec = importlib.util.find_spec(fullname)
    finally:
      self._busy = False
    if spec is None or spec.loader is None:
      return None
    spec.loader = _QuietLoader(spec.loader)
    return spec


def quiet_console() -> None:
  """Process-wide: no TensorFlow/absl start-up lines (entry points only).

  Costs nothing when TensorFlow is never imported: the import is filtered
  when (and if) it happens. Must run before anything imports TensorFlow.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietFinder(QUIET_MODULES))
  # Orbax's echoes of a failed checkpoint read/write (reported in one line).
  console.quiet_checkpoint_noise()
  # absl's Python logging (orbax logs each file operation at INFO).
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.WARNING)
  except ImportError:
    pass


def skip_keras_import() -> None:
  """Process-wide: TensorFlow's import leaves Keras out (entry points only).

  ``import tensorflow`` imports Keras 3 eagerly (and with it matplotlib's
  pyplot): ~1 CPU-s of every command that builds a tf.data pipeline
  (4.6-4.9 -> 3.7 s for ``import jax, tensorflow``, measured), for a library
  nfnet_jax never uses. TensorFlow skips it when told to use the legacy
  ``tf_keras`` package and that package is absent; where ``tf_keras`` is
  installed, or the variable is already set, nothing changes.
  """
  if importlib.util.find_spec('tf_keras') is None:
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')


# Allocators LD_PRELOAD may name (gperftools' tcmalloc; Debian/Ubuntu package
# libtcmalloc-minimal4, which scripts/setup_env.sh installs where apt works).
TCMALLOC_NAMES = ('tcmalloc_minimal', 'tcmalloc')
MALLOC_ENV = 'NFNET_MALLOC'   # 'system' keeps glibc's malloc


def find_tcmalloc() -> Optional[str]:
  """The file name of an installed tcmalloc shared library, or None."""
  for name in TCMALLOC_NAMES:
    found = ctypes.util.find_library(name)
    if found:
      return found
  return None


def tcmalloc_environment(environ, find: Callable[[], Optional[str]] = find_tcmalloc
                         ) -> Optional[dict]:
  """The environment to re-execute a command in with tcmalloc, or None to stay.

  None when ``NFNET_MALLOC`` asks for another allocator, when LD_PRELOAD
  already names a tcmalloc (the re-executed process, or a caller who chose),
  or when ``find()`` finds no tcmalloc installed (asked last: it runs
  ``ldconfig``).
  """
  if environ.get(MALLOC_ENV, 'tcmalloc') != 'tcmalloc':
    return None
  preload = environ.get('LD_PRELOAD', '')
  if 'tcmalloc' in preload:
    return None
  library = find()
  if library is None:
    return None
  return dict(environ, LD_PRELOAD=f'{library} {preload}'.strip())


def preload_tcmalloc() -> None:
  """Process-wide: re-executes this command with tcmalloc preloaded (entry points only).

  XLA:CPU allocates its large step buffers with glibc's ``malloc``, which
  maps them fresh from the kernel and unmaps them on free, so every step
  page-faults them in again: the quickstart's training made 66M minor page
  faults and spent 269 of its 1,144 CPU-s in the kernel. tcmalloc keeps
  freed memory for the next step (docs/performance.md, "Allocator").
  glibc's allocator can only be replaced before the process starts, hence
  ``execve`` of the same command line (same PID, so signals and
  ``kill -9`` reach the run as before). Nothing happens where no tcmalloc is
  installed or ``NFNET_MALLOC=system`` is set.
  """
  env = tcmalloc_environment(os.environ)
  if env is not None and sys.executable:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with an example in --help and one-line errors (exit 2)."""

  def __init__(self, prog: str, description: str, examples: Sequence[str] = (),
               config_overrides: bool = False, **kwargs):
    epilog = ''
    if examples:
      epilog = 'examples:\n' + '\n'.join(f'  {e}' for e in examples)
    if config_overrides:
      epilog += ('\n\n--config.a.b=value overrides any field of the --config file '
                 '(e.g. --config.optimizer.clipping=None).')
    super().__init__(prog=prog, description=textwrap.fill(description, 78),
                     epilog=epilog,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     allow_abbrev=False, **kwargs)
    self.config_overrides = config_overrides

  @classmethod
  def from_doc(cls, doc: str, config_overrides: bool = False) -> 'ArgumentParser':
    """The parser of a command whose module docstring is its --help.

    Args:
      doc: ``"prog: summary"`` on the first line, then the description's
        paragraphs, then (optionally) ``Examples:`` and one indented command
        per line.
      config_overrides: whether ``--config.a.b=value`` flags are accepted.

    Raises:
      ValueError: a docstring without the ``prog:`` first line.
    """
    head, _, body = doc.strip().partition('\n')
    prog, colon, _ = head.partition(':')
    if not colon or not prog.startswith('nfnet-'):
      raise ValueError(f'a command docstring starts "nfnet-NAME: summary", not {head!r}')
    text, _, examples = body.partition('\nExamples:\n')
    return cls(prog, ' '.join(text.split()),
               [line.strip() for line in examples.splitlines() if line.strip()],
               config_overrides=config_overrides)

  def add_config(self, help: str, required: bool = False) -> None:  # pylint: disable=redefined-builtin
    """``--config FILE.py[:ARG]``: an experiment config file (every command that reads one)."""
    self.add_argument('--config', required=required, default=None,
                      metavar='FILE.py[:ARG]', help=help)

  def error(self, message):
    self.exit(EXIT_USAGE, f'{self.prog}: error: {message} (see {self.prog} --help)\n')

  def parse_with_overrides(self, argv: Optional[Sequence[str]] = None):
    """``(namespace, [(dotted_field, text), ...])``; overrides only if enabled."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = []
    if self.config_overrides:
      try:
        argv, overrides = config_load.split_overrides(argv)
      except config_load.ConfigError as e:
        self.exit(EXIT_USAGE, f'error: {e}\n')
    return self.parse_args(argv), overrides


def int_list(text: str) -> list:
  """argparse type: ``224,256`` -> ``[224, 256]`` (positive integers)."""
  try:
    values = [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'expected comma-separated integers such as 224,256, got {text!r}') from None
  if not values or any(v < 1 for v in values):
    raise argparse.ArgumentTypeError(f'expected positive integers, got {text!r}')
  return values


def library(module: str):
  """The library module ``module`` (``'nfnet_jax.analysis.spp'``), imported now.

  The commands' one way to the heavy parts of the package (JAX, Haiku,
  orbax, TensorFlow): a command module imports only argparse-level modules at
  its top and calls this after its flags parse, so ``nfnet-* --help`` and a
  bad flag stay fast and JAX-free (tests/test_commands.py checks it).
  """
  return importlib.import_module(module)


def run(main: Callable[[Optional[Sequence[str]]], Optional[int]],
        argv: Optional[Sequence[str]] = None) -> None:
  """Entry-point body: quiet console, ``main(argv)``, its status as exit status."""
  quiet_console()
  sys.exit(main(argv) or 0)


def add_bool(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:  # pylint: disable=redefined-builtin
  """``--name`` / ``--no_name`` (and the absl-style ``--noname``) for one boolean."""
  group = parser.add_mutually_exclusive_group()
  group.add_argument(f'--{name}', dest=name, action='store_true',
                     help=f'{help} (default: {"on" if default else "off"})')
  group.add_argument(f'--no_{name}', f'--no{name}', dest=name, action='store_false',
                     help=f'turn --{name} off')
  parser.set_defaults(**{name: default})
