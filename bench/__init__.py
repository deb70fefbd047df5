"""The benchmark harness of issue #11: `python -m bench` (see docs/BENCHMARKS.md).

Never part of `make test`: `make bench` runs it. Modules:

- `bench.dataset`: a deterministic app database and uploads tree, cached between runs;
- `bench.measure`: runs one command and measures wall, CPU, server CPU and peak RSS;
- `bench.scenarios`: the rows (our backup and restore, the seed's scripts, other tools);
- `bench.report`: docs/BENCHMARKS.md from the results JSON;
- `bench.api_scale`: the API and the scheduler with 10,000 backups catalogued;
- `bench.cloud`: uploads, downloads and sync confirmation against a local S3 server.

Each section module also runs alone: `python -m bench.<module> --json OUT.json [--quick]`.
"""
