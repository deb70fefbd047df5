"""docs/BENCHMARKS.md from the results JSON: machine, datasets, tables, ratios and targets.

Only the block between BEGIN and END is generated; the rest of the page (how to run it, the
"why" notes for missed targets) is hand-written and kept across regenerations.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
RSS_LIMIT_MB = 256
RSS_FLAT_RATIO = 1.25  # "about the same at both sizes": large at most 1.25x small

HEADER = """# Benchmarks

How fast our backup and restore are against the seed's shell pipeline and other tools, on this
machine, side by side in one run (issue #11). Everything between the `bench:begin` and
`bench:end` markers is written by the harness; the rest of this page is hand-written.

## Running it

```
make bench                                     # small and large, 3 runs each, medians
.venv/bin/python -m bench --size small --runs 3
.venv/bin/python -m bench --quick              # ~5 MB, one run, in seconds; writes
                                               # bench/results/*quick* (git-ignored), not here
```

Your own data instead of the generated: `--database-url postgresql://... --uploads DIR`
(copied into the throwaway cluster first, untimed; the originals are only read).

Options: `--size small|large|both`, `--runs N`, `--seed N`, `--out docs/BENCHMARKS.md`,
`--results-dir bench/results`, `--data-dir /tmp/nexus-bench-data`, `--skip-modules` (do not run
`bench.api_scale` / `bench.cloud`), `--render-only` (rewrite this page from the results JSON),
`--keep` (keep the scratch folder and its per-command logs). Disk: the large size needs about
12 GB free under /tmp while it runs (2 GB of it stays cached).

The sections "API and scheduler at scale" and "Cloud storage" come from `bench.api_scale` and
`bench.cloud` when those modules exist (`python -m bench.NAME --json OUT [--quick]`, run by the
harness after the datasets; their JSON is kept in `bench/results/NAME.json`).

- The dataset (`bench/dataset.py`) is generated from a seed and cached in
  `/tmp/nexus-bench-data/<size>-<seed>/`: a PostgreSQL cluster holding the generated database
  `bench_src`, and the uploads tree. Reruns reuse it (delete the folder to regenerate; a new
  generator version or PostgreSQL major regenerates it). The cluster is started for the run and
  stopped at the end; every database the run measures against is copied from `bench_src`
  (`CREATE DATABASE ... TEMPLATE`, untimed), so each run starts from the same state. Scratch
  files go to a `/tmp/nexus-bench-run-*` folder removed at the end.
- Each run measures every row once, round-robin; the table shows the median of the runs.
  All runs are kept in `bench/results/<size>.json` (committed, so this page can be regenerated
  with `python -m bench --render-only`).
- The OS page cache is not dropped (that needs root and would not suit CI); instead one full
  read of the database and the uploads is done before measuring, so every row reads warm data.
- Each command is started by a minimal launcher (`python -S -I`, `bench/measure.py`) that
  spawns it, reaps it with `os.wait4` and reports back. Wall: spawn to exit of the command
  (for our CLI, Python start-up included). CPU: user+sys of the command's process tree, from
  that `os.wait4` (the kernel folds every reaped descendant into it: the Python process and its
  pg_dump/psql; for a shell pipeline, all its processes).
  Server CPU: CPU of the PostgreSQL server's processes meanwhile (read from /proc: backends
  serving pg_dump/psql, autovacuum, WAL writer, checkpointer). Peak RSS: `ru_maxrss` from the
  same `os.wait4`, i.e. the largest single process of the tree (for our CLI the Python process;
  for a pipeline its largest member), not a sum. Linux carries a process's RSS high-water
  mark across exec, so no row shows less than the launcher's ~9-13 MB; that is why small
  tools (tar, gzip, pg_dump) all show about the same figure.
- Restores are checked after each run (row counts of every table, total blob bytes, uploads
  file count and bytes); a wrong restore stops the harness instead of being reported.
- Untimed around each row: creating the databases it needs from templates, copying uploads
  into place for a restore, deleting what the row wrote. Our restore rows restore the first
  run's archive of our default (gzip) backup: into a copy of the live app (database and
  uploads; the restore takes and verifies its pre_restore safety backup first, as always), and
  into an empty database holding only the catalog with an empty uploads folder (a new machine;
  the safety backup then has nothing to save). The seed's restore restores the first run's
  `tar czf` archive into a database its drop script dropped and created beforehand (untimed),
  and `cp -a`s the uploads into place.
- Targets are evaluated on every dataset; the issue sets them on the large one. "Peak RSS
  about the same at both sizes" is read as: large at most 1.25x small (needs both sizes).
- pgbackweb zips a plain `pg_dump` (Go `archive/zip`, deflate); `pg_dump | gzip` is its shell
  equivalent. Databasus uses `pg_dump -Fc -Z5`. Both rows cover the database only.
"""

WHY = """
## Why targets are missed

<!-- Hand-written by the lead: for each target marked "missed" above, why, and what would
fix it. Kept when the harness regenerates the block above. -->

_Not written yet._
"""


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info(pg_bin: Path, server_version: str) -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    libs = [f"zlib {zlib.ZLIB_RUNTIME_VERSION}"]
    try:
        import zstandard

        libs.append(f"zstandard {zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION})")
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        import isal  # type: ignore[import-not-found, unused-ignore]

        libs.append(f"python-isal {isal.__version__}")
    except ImportError:
        pass
    commit = _first_line(["git", "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "postgresql": server_version,
        "pg_dump": _first_line([str(pg_bin / "pg_dump"), "--version"]),
        "python": platform.python_version(),
        "compressors": ", ".join(libs),
        "gzip": _first_line(["gzip", "--version"]),
        "tar": _first_line(["tar", "--version"]),
        "commit": commit + (" (with uncommitted changes)" if dirty != "unknown" else ""),
    }


# -- numbers -----------------------------------------------------------------------------------


def _rows(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {row["key"]: row for row in result["rows"]}


def _m(result: Mapping[str, Any], key: str, field: str) -> float | None:
    row = _rows(result).get(key)
    if row is None:
        return None
    value = row["median"].get(field)
    return float(value) if value is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(
    result: Mapping[str, Any], others: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Issue #11's targets for one dataset: what, limit, measured, met."""
    out: list[dict[str, Any]] = []

    def add(name: str, limit: str, measured: float | None, ok: bool | None, text: str) -> None:
        out.append({"target": name, "limit": limit, "measured": measured, "met": ok, "text": text})

    fast = _m(result, "ours_zstd_fast", "wall_s")
    seed = _m(result, "seed_backup", "wall_s")
    floor = _m(result, "floor", "wall_s")
    r = _ratio(fast, seed)
    add("backup (fast setting) vs the seed's backup", "<= 0.5x", r, _le(r, 0.5), _x(r))
    r = _ratio(fast, floor)
    add("backup (fast setting) vs the read floor", "<= 1.3x", r, _le(r, 1.3), _x(r))
    r = _ratio(_m(result, "ours_gzip", "size_bytes"), _m(result, "seed_backup", "size_bytes"))
    add(
        "archive size (default gzip) vs tar czf's",
        "<= 1.0x",
        r,
        _le(r, 1.0),
        "-" if r is None else f"{r:.3f}x",
    )
    ours = [k for k in _rows(result) if k.startswith("ours_")]
    peak = max((_m(result, k, "peak_rss_mb") or 0.0) for k in ours) if ours else None
    add(
        "peak RSS of our backup and restore",
        f"< {RSS_LIMIT_MB} MB",
        peak,
        None if peak is None else peak < RSS_LIMIT_MB,
        "-" if peak is None else f"{peak:.0f} MB",
    )
    small, large = others.get("small"), others.get("large")
    if small is not None and large is not None:
        peaks = []
        for res in (small, large):
            keys = [k for k in _rows(res) if k.startswith("ours_")]
            peaks.append(max((_m(res, k, "peak_rss_mb") or 0.0) for k in keys))
        r = _ratio(peaks[1], peaks[0])
        add(
            "peak RSS flat as data grows (large vs small)",
            f"<= {RSS_FLAT_RATIO}x",
            r,
            _le(r, RSS_FLAT_RATIO),
            f"{peaks[0]:.0f} -> {peaks[1]:.0f} MB ({_x(r)})",
        )
    else:
        add(
            "peak RSS flat as data grows (large vs small)",
            f"<= {RSS_FLAT_RATIO}x",
            None,
            None,
            "needs both sizes",
        )
    r = _ratio(_m(result, "ours_restore", "wall_s"), _m(result, "seed_restore", "wall_s"))
    add(
        "verified restore incl. safety backup vs the seed's restore",
        "<= 1.0x",
        r,
        _le(r, 1.0),
        _x(r),
    )
    return out


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _met(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


# -- rendering ---------------------------------------------------------------------------------


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f}"


def _table(result: Mapping[str, Any]) -> list[str]:
    seed_backup = _m(result, "seed_backup", "wall_s")
    seed_restore = _m(result, "seed_restore", "wall_s")
    floor = _m(result, "floor", "wall_s")
    lines = [
        "| Row | Wall s (median) | Runs, wall s | CPU s | Server CPU s | Peak RSS MB | "
        "Archive MB | vs seed | vs floor |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        med = row["median"]
        base = seed_restore if row["kind"] == "restore" else seed_backup
        vs_seed = _x(_ratio(med["wall_s"], base))
        vs_floor = _x(_ratio(med["wall_s"], floor)) if row["kind"] != "restore" else "-"
        runs = " / ".join(f"{s['wall_s']:.2f}" for s in row["samples"])
        lines.append(
            f"| {row['label']} | {med['wall_s']:.2f} | {runs} | {med['cpu_s']:.2f} | "
            f"{med['server_cpu_s']:.2f} | {med['peak_rss_mb']:.0f} | "
            f"{_mb(med.get('size_bytes'))} | {vs_seed} | {vs_floor} |"
        )
    return lines


def _dataset(info: Mapping[str, Any]) -> list[str]:
    rows = info["rows"]
    if info.get("generator") == "external":
        tables = ", ".join(f"{name} {count:,}" for name, count in rows.items())
        return [
            f"- Database (given with --database-url): {_mb(info['db_bytes'])} MB on disk; "
            f"rows: {tables}.",
            f"- Uploads (given with --uploads): {info['uploads_files']:,} files, "
            f"{_mb(info['uploads_bytes'])} MB.",
        ]
    table_bytes = info.get("table_bytes", {})
    tables = ", ".join(
        f"{name} {count:,} ({_mb(table_bytes.get(name))} MB)"
        for name, count in rows.items()
        if name != "blob_bytes"
    )
    comp = info.get("uploads", {})
    return [
        f"- Database: {_mb(info['db_bytes'])} MB on disk (pg_database_size); rows: {tables}; "
        f"{_mb(rows.get('blob_bytes'))} MB of random bytea in `blobs`.",
        f"- Uploads: {info['uploads_files']:,} files, {_mb(info['uploads_bytes'])} MB: "
        f"{comp.get('small_files', 0):,} small files ({_mb(comp.get('small_bytes'))} MB: text, "
        f"CSV, JSON, PDF-like, JPEG/PNG-like), one text log ({_mb(comp.get('log_bytes'))} MB), "
        f"{comp.get('large_random_files', 0)} large random files "
        f"({_mb(comp.get('large_random_bytes'))} MB).",
    ]


def _load_line(result: Mapping[str, Any]) -> list[str]:
    load = result.get("load_average")
    if not load:
        return []
    cores = result["machine"].get("cores", "?")
    return [
        f"- 1-minute load average when the runs began and ended: {load[0]} and {load[1]} "
        f"({cores} cores; a load above the core count means other work shared the CPUs and wall "
        "times are inflated: compare CPU columns then)."
    ]


def _section(result: Mapping[str, Any], others: Mapping[str, Mapping[str, Any]]) -> list[str]:
    info = result["dataset"]
    lines = [
        f"## Dataset `{result['size']}` (seed {result['seed']}): {result['runs']} run(s), "
        f"measured {result['finished_at']}",
        "",
        *_dataset(info),
        f"- Commit: {result['machine'].get('commit', '?')}.",
        *_load_line(result),
        "",
        *_table(result),
        "",
        "\"vs seed\": wall time over the seed's backup (backup rows) or the seed's restore "
        '(restore rows); "vs floor": over the read floor. pgbackweb- and Databasus-style rows '
        "dump the database only (no uploads).",
        "",
    ]
    lines += [
        "Commands (`nexus-backup` is `python -m api`; shell rows run as `bash -c 'set -euo "
        "pipefail; ...'` with PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE set):",
        "",
    ]
    lines += [f"- {row['label']}: `{row['how']}`" for row in result["rows"]]
    lines.append("")
    for key, text in result.get("verified", {}).items():
        lines.append(f"- Restore check `{key}`: {text}.")
    lines += [
        "",
        f"### Targets (issue #11), dataset `{result['size']}`",
        "",
        "| Target | Limit | Measured | Status |",
        "|---|---|---|---|",
    ]
    for target in targets(result, others):
        lines.append(
            f"| {target['target']} | {target['limit']} | {target['text']} | {_met(target['met'])} |"
        )
    lines.append("")
    return lines


def _module_section(name: str, data: Mapping[str, Any] | None, error: str | None) -> list[str]:
    if data is None:
        title = {"api_scale": "API and scheduler at scale", "cloud": "Cloud storage"}.get(
            name, name
        )
        reason = error or f"`bench.{name}` is not there"
        return [f"## {title}", "", f"Not measured ({reason}).", ""]
    lines = [
        f"## {data['title']}",
        "",
        f"Machine: {data.get('machine', '-')}.",
        "",
        "| Measure | Metric | Value | Target | Status |",
        "|---|---|---:|---|---|",
    ]
    for row in data.get("rows", []):
        value = row.get("value")
        shown = f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, int | float) else "-"
        lines.append(
            f"| {row.get('name', '?')} | {row.get('metric', '')} | {shown} {row.get('unit', '')} | "
            f"{row.get('target') or '-'} | "
            f"{_met(row.get('met')) if row.get('target') else '-'} |"
        )
    notes = data.get("notes") or []
    if notes:
        lines.append("")
        lines += [f"- {note}" for note in notes]
    lines.append("")
    return lines


def render(
    results: Mapping[str, Mapping[str, Any]],
    modules: Mapping[str, tuple[Mapping[str, Any] | None, str | None]],
) -> str:
    """The generated block: machine, then one section per dataset, then the modules."""
    lines = [BEGIN, "", "_Generated by `python -m bench`; edit outside the markers._", ""]
    if results:
        machine = next(iter(results.values()))["machine"]
        lines += ["## Machine", ""]
        lines += [f"- {key}: {value}" for key, value in machine.items()]
        lines.append("")
    order = [s for s in ("quick", "small", "large", "external") if s in results]
    for size in order:
        lines += _section(results[size], results)
    for name, (data, error) in modules.items():
        lines += _module_section(name, data, error)
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_doc(path: Path, block: str) -> None:
    """Replace the generated block in path, keeping everything else (or start the page)."""
    if path.exists():
        text = path.read_text(encoding="utf-8")
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block
    else:
        text = HEADER + "\n" + block + WHY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
