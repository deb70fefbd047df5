"""The benchmark harness of issue #11: `python -m bench` (see docs/BENCHMARKS.md).

Never part of `make test`: `make bench` runs it. Modules:

- `bench.dataset`: a deterministic app database and uploads tree, cached between runs;
- `bench.measure`: runs one command and measures wall, CPU, server CPU and peak RSS;
- `bench.scenarios`: the rows (our backup and restore, the seed's scripts, other tools);
- `bench.report`: docs/BENCHMARKS.md from the results JSON;
- `bench.api_scale`, `bench.cloud` (optional, other authors): their own JSON sections.
"""
