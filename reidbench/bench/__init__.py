"""Benchmarks that print figures (`reidbench bench ...`, `nox -s bench`); never timed unit tests."""
