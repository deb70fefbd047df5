"""`python -m bench`: measure, keep every run in bench/results/<size>.json, write the page.

python -m bench [--size small|large|both] [--runs N] [--quick] [--out docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.dataset import Spec, import_external, prepare
from bench.measure import median
from bench.scenarios import ROWS, Harness

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("api_scale", "cloud")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def measure_size(
    size: str,
    seed: int,
    runs: int,
    data_dir: Path,
    keep: bool,
    external: tuple[str, Path] | None = None,
) -> dict[str, Any]:
    """Every row on one dataset, `runs` times round-robin; the results document."""
    started = _now()
    if external is not None:
        dataset = import_external(*external, data_dir, log=_log)
    else:
        dataset = prepare(Spec(size, seed), data_dir, log=_log)
    work = Path(tempfile.mkdtemp(prefix="nexus-bench-run-"))
    try:
        harness = Harness(dataset, work, log=_log)
        server_version = dataset.cluster.psql("postgres", "SHOW server_version;").strip()
        machine = report.machine_info(dataset.cluster.bin_dir, f"PostgreSQL {server_version}")
        harness.setup()
        load_before = os.getloadavg()[0]
        harness.run_all(runs)
        load_after = os.getloadavg()[0]
        rows = []
        for row in ROWS:
            samples = harness.samples[row.key]
            rows.append(
                {
                    "key": row.key,
                    "label": row.label,
                    "kind": row.kind,
                    "how": row.how,
                    "samples": [s.to_json() for s in samples],
                    "median": median(samples).to_json(),
                }
            )
        harness.teardown()
    finally:
        dataset.cluster.stop()
        if keep:
            _log(f"kept the scratch folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "size": size,
        "seed": seed,
        "runs": runs,
        "started_at": started,
        "finished_at": _now(),
        "machine": machine,
        "dataset": dataset.info,
        "rows": rows,
        "verified": harness.verified,
        "load_average": [round(load_before, 2), round(load_after, 2)],
    }


def run_module(
    name: str, quick: bool, results_dir: Path
) -> tuple[dict[str, Any] | None, str | None]:
    """`python -m bench.NAME --json OUT` if that module exists: (its JSON, or why not)."""
    if importlib.util.find_spec(f"bench.{name}") is None:
        return None, f"`bench.{name}` is not there"
    out = results_dir / f"{name}{'-quick' if quick else ''}.json"
    argv = [sys.executable, "-m", f"bench.{name}", "--json", str(out)]
    if quick:
        argv.append("--quick")
    _log(f"module bench.{name} ...")
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out.is_file():
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        return None, f"`bench.{name}` failed with exit {result.returncode}: {tail}"
    data: dict[str, Any] = json.loads(out.read_text())
    return data, None


def _load_module(
    name: str, quick: bool, results_dir: Path
) -> tuple[dict[str, Any] | None, str | None]:
    path = results_dir / f"{name}{'-quick' if quick else ''}.json"
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text())
        return data, None
    if importlib.util.find_spec(f"bench.{name}") is None:
        return None, f"`bench.{name}` is not there"
    return None, f"`bench.{name}` was not run: no {path.name} in the results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=("small", "large", "both"), default="small")
    parser.add_argument("--runs", type=int, default=None, help="runs per row (default 3; 1 quick)")
    parser.add_argument("--quick", action="store_true", help="a ~5 MB dataset: a smoke run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the page (docs/BENCHMARKS.md; with --quick bench/results/BENCHMARKS-quick.md)",
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/nexus-bench-data"))
    parser.add_argument("--skip-modules", action="store_true", help="not bench.api_scale/cloud")
    parser.add_argument("--render-only", action="store_true", help="rewrite the page from JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--database-url", help="measure this database instead of a generated one")
    parser.add_argument(
        "--uploads", type=Path, help="and this uploads folder (with --database-url)"
    )
    args = parser.parse_args(argv)
    if (args.database_url is None) != (args.uploads is None):
        parser.error("--database-url and --uploads go together")
    external = (args.database_url, args.uploads) if args.database_url else None
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    sizes = (
        ["external"]
        if external
        else ["quick"]
        if args.quick
        else (["small", "large"] if args.size == "both" else [args.size])
    )
    results_dir: Path = args.results_dir
    out: Path = args.out or (
        results_dir / "BENCHMARKS-quick.md" if args.quick else ROOT / "docs" / "BENCHMARKS.md"
    )
    results_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict[str, Any]] = {}
    modules: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    if not args.render_only:
        for size in sizes:
            result = measure_size(size, args.seed, runs, args.data_dir, args.keep, external)
            (results_dir / f"{size}.json").write_text(json.dumps(result, indent=1) + "\n")
            results[size] = result
        for name in MODULES:
            if not args.skip_modules:
                modules[name] = run_module(name, args.quick, results_dir)
    # Sizes measured earlier (not quick ones) stay on the page until measured again.
    for size in ("small", "large"):
        path = results_dir / f"{size}.json"
        if size not in results and path.is_file() and not args.quick:
            results[size] = json.loads(path.read_text())
    for name in MODULES:
        if name not in modules:
            modules[name] = _load_module(name, args.quick, results_dir)
    report.write_doc(out, report.render(results, modules))
    _log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
