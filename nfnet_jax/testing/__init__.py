"""Helpers for tests and benchmarks: fake data sets written to disk (`fake_data`)."""
