"""Benchmarks (issue #11): run as `python -m bench.<module> --json OUT.json [--quick]`; never
part of `make test`."""
