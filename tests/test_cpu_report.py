"""The suite's `--cpu-report` summary (tests/conftest.py) adds and ranks correctly."""
from conftest import cpu_report_lines


def test_cpu_report_sums_and_ranks_tests_and_files():
  records = [
      {'test': 'tests/a.py::t1', 'own_s': 1.0, 'children_s': 0.5, 'wall_s': 2.0},
      {'test': 'tests/b.py::t2', 'own_s': 0.25, 'children_s': 3.0, 'wall_s': 4.0},
      {'test': 'tests/a.py::t3', 'own_s': 2.0, 'children_s': 0.0, 'wall_s': 2.5},
  ]
  lines = cpu_report_lines(records, top=2)
  assert lines[0] == ('CPU seconds of 3 tests: 7 (3 in the pytest processes, '
                      '4 in their subprocesses)')
  tests = [line.split()[-1] for line in lines[2:4]]
  assert tests == ['tests/b.py::t2', 'tests/a.py::t3']      # 3.25 > 2.0 > 1.5
  assert lines[4] == 'largest 2 files:'
  assert lines[5].split() == ['3.5', 'tests/a.py']
  assert lines[6].split() == ['3.2', 'tests/b.py']


def test_cpu_report_shows_when_each_worker_ran_out_of_tests():
  records = [
      {'test': 'tests/a.py::t1', 'own_s': 4.0, 'children_s': 0.0, 'wall_s': 5.0,
       'start': 100.0, 'worker': 'gw0'},
      {'test': 'tests/a.py::t2', 'own_s': 2.0, 'children_s': 2.0, 'wall_s': 3.0,
       'start': 105.0, 'worker': 'gw0'},
      {'test': 'tests/b.py::t3', 'own_s': 2.0, 'children_s': 0.0, 'wall_s': 2.0,
       'start': 101.0, 'worker': 'gw1'},
  ]
  # gw0: 100 -> 108 (8 s after the first start); gw1: 101 -> 103 (3 s);
  # 10 CPU-s over the 8 s span = 1.25 cores.
  assert cpu_report_lines(records)[-1] == (
      'span 8 s: 1.25 cores busy on average; workers done at gw0 8 s, gw1 3 s')
