"""nfnet_jax.console: the checkpoint-noise filters drop orbax's echoes only.

asyncio reports a task whose exception nobody retrieved when the task is
garbage-collected ("Task exception was never retrieved" and a traceback). A
training command whose background checkpoint write failed already ended
with one line; under load such a report of a sibling orbax write task
reached stderr after it (a suite run: the disk-full test saw a traceback).
Here real asyncio tasks fail in code whose file lies in an ``orbax`` folder
(dropped) and elsewhere (kept).
"""
import asyncio
import gc
import logging

import pytest

from nfnet_jax import console


def _coroutine_from(filename):
  """A coroutine function compiled as if it lived in `filename`."""
  namespace = {}
  exec(compile('async def write():\n'   # pylint: disable=exec-used
               '  raise OSError(27, "File too large")\n', filename, 'exec'), namespace)
  return namespace['write']


class _Records(logging.Handler):

  def __init__(self):
    super().__init__()
    self.records = []

  def emit(self, record):
    self.records.append(record)


@pytest.fixture
def asyncio_log():
  """The asyncio logger with the console's filter and a capturing handler."""
  logger = logging.getLogger('asyncio')
  handler = _Records()
  logger.addHandler(handler)
  logger.addFilter(console.ORBAX_ORPHAN_TASK_FILTER)
  try:
    yield handler.records
  finally:
    logger.removeFilter(console.ORBAX_ORPHAN_TASK_FILTER)
    logger.removeHandler(handler)


def _orphan_a_failed_task(filename):
  loop = asyncio.new_event_loop()
  try:
    task = loop.create_task(_coroutine_from(filename)())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert task.done() and isinstance(task._exception, OSError)  # pylint: disable=protected-access
    del task          # never retrieved: asyncio reports it when collected
    gc.collect()
  finally:
    loop.close()


def test_orbax_task_report_is_dropped(asyncio_log):
  _orphan_a_failed_task('/site-packages/orbax/checkpoint/_src/fake_writer.py')
  assert asyncio_log == []


def test_other_task_reports_are_kept(asyncio_log):
  _orphan_a_failed_task('/site-packages/somelib/writer.py')
  assert len(asyncio_log) == 1
  assert asyncio_log[0].getMessage().startswith('Task exception was never retrieved')
  assert 'File too large' in str(asyncio_log[0].exc_info[1])


def test_the_entry_points_attach_it_once():
  logger = logging.getLogger('asyncio')
  before = list(logger.filters)
  try:
    console.quiet_orbax_thread_errors()
    console.quiet_orbax_thread_errors()
    assert logger.filters.count(console.ORBAX_ORPHAN_TASK_FILTER) == 1
  finally:
    logger.filters[:] = before
