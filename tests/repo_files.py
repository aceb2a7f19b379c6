"""Loads repository files that are not importable modules (scripts/, configs/) by path."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_repo_module(module_name: str, *parts: str):
  """Executes ``ROOT/<parts...>`` as a fresh module named ``module_name`` and returns it."""
  spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, *parts))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
