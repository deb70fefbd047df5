"""The benchmark harness runs end to end (`python -m bench --quick`, a ~5 MB dataset, one run)
and writes a result for every row with positive numbers, and a page with every row's table
line. Structure only: nothing here asserts how fast anything is."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import report
from bench.scenarios import ROWS
from tests.conftest import ROOT


def test_quick_run_measures_every_row_and_writes_the_page(tmp_path: Path) -> None:
    # The cluster runs as `postgres` when we are root: its folder must not be under pytest's
    # mode-0700 tmp folder.
    data_dir = Path(tempfile.mkdtemp(prefix="nexus-bench-test-"))
    results, page = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "--quick",
                "--skip-modules",
                "--data-dir",
                str(data_dir),
                "--results-dir",
                str(results),
                "--out",
                str(page),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    assert done.returncode == 0, f"python -m bench --quick failed:\n{done.stderr[-4000:]}"

    data = json.loads((results / "quick.json").read_text())
    assert [row["key"] for row in data["rows"]] == [row.key for row in ROWS]
    for row in data["rows"]:
        assert len(row["samples"]) == 1, row
        median = row["median"]
        for field in ("wall_s", "cpu_s", "peak_rss_mb"):
            assert median[field] > 0, f"{row['key']}: {field} is {median[field]}"
        assert median["server_cpu_s"] >= 0, row
        if row["kind"] == "backup":
            assert median["size_bytes"] > 0, f"{row['key']} wrote no archive"
    restores = {row.key for row in ROWS if row.kind == "restore"}
    assert set(data["verified"]) == restores, "every restore must be checked after it ran"
    assert data["dataset"]["uploads_files"] > 0
    assert all(count > 0 for count in data["dataset"]["rows"].values())

    text = page.read_text()
    assert report.BEGIN in text
    assert report.END in text
    for row in ROWS:
        line = next((ln for ln in text.splitlines() if ln.startswith(f"| {row.label} |")), None)
        assert line is not None, f"no table line for {row.label!r}"
        numbers = [float(n) for n in re.findall(r"\|\s*([0-9][0-9,]*\.?[0-9]*)\s", line)[:3]]
        assert numbers, line
        assert all(n > 0 for n in numbers), line
    assert "### Targets (issue #11), dataset `quick`" in text


def test_the_page_renders_module_sections_and_keeps_hand_written_text(tmp_path: Path) -> None:
    module = {
        "title": "API at scale",
        "machine": "2 cores",
        "rows": [
            {
                "name": "GET /backups",
                "metric": "p99",
                "value": 12.5,
                "unit": "ms",
                "target": "< 50 ms",
                "met": True,
            }
        ],
        "notes": ["10,000 backups"],
    }
    block = report.render({}, {"api_scale": (module, None), "cloud": (None, None)})
    assert "## API at scale" in block
    assert "| GET /backups | p99 | 12.5 ms | < 50 ms | met |" in block
    assert "- 10,000 backups" in block
    assert "## Cloud storage" in block
    assert "Not measured" in block

    page = tmp_path / "BENCHMARKS.md"
    report.write_doc(page, block)
    page.write_text(page.read_text().replace("_Not written yet._", "Because of X."))
    report.write_doc(page, report.render({}, {}))
    text = page.read_text()
    assert "Because of X." in text, "the hand-written part must survive regeneration"
    assert "## API at scale" not in text
    assert text.count(report.BEGIN) == 1
