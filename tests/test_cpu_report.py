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
