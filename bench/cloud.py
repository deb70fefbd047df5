"""Cloud transfer figures: upload and download throughput through our S3 storage class against
a local S3 server (moto, in its own process on 127.0.0.1), the peak memory each adds to this
process, and how long confirming a sync takes from the store's checksum versus reading the
object back.

    .venv/bin/python -m bench.cloud --json OUT.json [--quick]

The full run moves a 256 MiB file in 16 MiB parts (the default), four in flight; --quick moves
8 MiB in 5 MiB parts. Each figure is the median of 3 runs. Peak RSS is measured in this process
(moto runs apart, so its copy of the bucket is not counted): the kernel's high-water mark
(VmHWM) is reset before each run through /proc/self/clear_refs, and the figure is how far it
rose above the resident size at the start of the run. A local server measures our client's
overhead, not a network: the figures say how fast the client can go, not how fast a provider
will be.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from api.storage.base import CONFIRMED_BY_CHECKSUM, CONFIRMED_BY_DOWNLOAD, Stored
from api.storage.s3 import DEFAULT_PART_SIZE, MiB, S3Storage

RUNS = 3
ACCESS_KEY = "AKIABENCHMARK0000001"
SECRET_KEY = "bench-secret-not-a-real-one-0123456789"  # moto accepts any key
BUCKET = "nexus-bench"


@dataclass
class Row:
    name: str
    metric: str
    value: float
    unit: str
    target: str | None = None
    met: bool | None = None


# -- memory ------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


async def measured(work: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """(seconds, MiB the peak RSS rose above the RSS at the start, result) of one run."""
    reset_peak()
    start_rss = _status_kib("VmRSS")
    started = time.perf_counter()
    result = await work()
    seconds = time.perf_counter() - started
    return seconds, max(0, _status_kib("VmHWM") - start_rss) / 1024, result


# -- moto in its own process --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 in a child process; yields its endpoint."""
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    command = [str(server)] if server.exists() else [sys.executable, "-m", "moto.server"]
    child = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        request = urllib.request.Request(f"{endpoint}/{BUCKET}", data=b"", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass
        yield endpoint
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# -- the runs ------------------------------------------------------------------------------------


class _Stream(io.RawIOBase):
    """A target that cannot seek (a pipe): get() falls back to one ordered stream."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._handle.write(data)


def make_file(path: Path, size: int) -> str:
    """A file of `size` random bytes; returns its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


async def run(quick: bool) -> dict[str, Any]:
    size = 8 * MiB if quick else 256 * MiB
    part = 5 * MiB if quick else DEFAULT_PART_SIZE
    concurrency = 4
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nexus-bench-cloud-") as folder, moto_server() as url:
        work = Path(folder)
        source = work / "archive.tar.gz"
        sha256 = make_file(source, size)
        store = S3Storage(
            endpoint=url,
            bucket=BUCKET,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region="us-east-1",
            provider="minio",
            part_size=part,
            max_concurrency=concurrency,
        )
        mb = size / 1e6

        async def upload() -> Stored:
            with source.open("rb") as handle:
                return await store.put("archive.tar.gz", handle, size)

        async def download(ordered: bool = False) -> int:
            target = work / "copy.tar.gz"
            with target.open("wb") as handle:
                out: Any = _Stream(handle) if ordered else handle
                written = await store.get("archive.tar.gz", out)
            target.unlink()
            return written

        uploads = [await measured(upload) for _ in range(RUNS)]
        stored: Stored = uploads[-1][2]
        if stored.sha256 != sha256:
            raise RuntimeError("the upload hashed other bytes than the file holds")
        downloads = [await measured(download) for _ in range(RUNS)]
        streams = [await measured(lambda: download(ordered=True)) for _ in range(RUNS)]

        async def confirm(checksum: str | None) -> str:
            return await store.confirm("archive.tar.gz", Stored(size, sha256, checksum))

        by_checksum = [await measured(lambda: confirm(stored.checksum)) for _ in range(RUNS)]
        by_download = [await measured(lambda: confirm(None)) for _ in range(RUNS)]
        if by_checksum[0][2] != CONFIRMED_BY_CHECKSUM or by_download[0][2] != (
            CONFIRMED_BY_DOWNLOAD
        ):
            raise RuntimeError("confirmation did not take the path it was measured for")

        def median(runs: list[tuple[float, float, Any]], index: int) -> float:
            return float(statistics.median(run[index] for run in runs))

        bound = (concurrency + 1) * part / MiB
        up_rss, down_rss = median(uploads, 1), median(downloads, 1)
        rows += [
            Row("upload (multipart, parallel parts)", "throughput",
                mb / median(uploads, 0), "MB/s"),
            Row("download (parallel ranges)", "throughput", mb / median(downloads, 0), "MB/s"),
            Row("download (one ordered stream, as before)", "throughput",
                mb / median(streams, 0), "MB/s"),
            Row("upload", "peak RSS delta", up_rss, "MiB",
                f"<= {bound:.0f} MiB ((concurrency+1) x part size)", up_rss <= bound),
            Row("download (parallel ranges)", "peak RSS delta", down_rss, "MiB",
                f"<= {bound:.0f} MiB", down_rss <= bound),
            Row("sync confirmation, store's checksum", "wall time",
                median(by_checksum, 0) * 1000, "ms"),
            Row("sync confirmation, download and hash (fallback)", "wall time",
                median(by_download, 0) * 1000, "ms"),
        ]  # fmt: skip
        notes += [
            f"{size / MiB:.0f} MiB of random bytes, {part / MiB:.0f} MiB parts and ranges, "
            f"{concurrency} in flight; medians of {RUNS} runs against moto's S3 server on "
            "127.0.0.1 (a separate process), so the figures are the client's ceiling on this "
            "machine, not a provider's speed.",
            "Uploads send each part's SHA-256 (verified by the store on receipt) and hash the "
            "whole file as it streams: each byte is read once. The store's composite checksum "
            f"of the upload was {stored.checksum}.",
            "Confirmation by checksum is one HeadObject (ChecksumMode=ENABLED); the fallback, "
            "for stores that keep no checksum, downloads and hashes the whole object.",
            "Downloads write each range at its offset; the SHA-256 of a fetched archive is "
            "computed afterwards by the archive verifier, reading the file from the page cache.",
        ]
        if not reset_peak():
            notes.append(
                "/proc/self/clear_refs is not writable here: peak RSS deltas are measured "
                "against the process's start and overstate later runs."
            )
    return {
        "title": "Cloud transfers (S3 API, local moto server)",
        "machine": f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.platform()}",
        "rows": [row.__dict__ for row in rows],
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cloud", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="8 MiB instead of 256 MiB")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.quick))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["rows"]:
        verdict = "" if row["met"] is None else (" (met)" if row["met"] else " (MISSED)")
        print(f"{row['name']:<50} {row['metric']:<15} {row['value']:>9.1f} {row['unit']}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
