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
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from api.storage.base import CHUNK_SIZE, CONFIRMED_BY_CHECKSUM, CONFIRMED_BY_DOWNLOAD, Stored
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


def make_store(endpoint: str, part: int, concurrency: int) -> S3Storage:
    return S3Storage(
        endpoint=endpoint,
        bucket=BUCKET,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
        provider="minio",
        part_size=part,
        max_concurrency=concurrency,
    )


async def child(options: argparse.Namespace) -> dict[str, Any]:
    """One measured operation in a fresh process (so no earlier run's heap hides its peak)."""
    store = make_store(options.endpoint, options.part, options.concurrency)
    source: Path = options.file
    size = source.stat().st_size
    key = source.name

    async def upload() -> Stored:
        with source.open("rb") as handle:
            return await store.put(key, handle, size)

    async def download() -> int:
        target = source.with_name("copy-" + source.name)
        try:
            with target.open("wb") as handle:
                out: Any = _Stream(handle) if options.child == "stream" else handle
                return await store.get(key, out)
        finally:
            target.unlink(missing_ok=True)

    async def confirm() -> str:
        checksum = options.checksum if options.child == "confirm-checksum" else None
        return await store.confirm(key, Stored(size, options.sha256, checksum))

    work = {"upload": upload, "download": download, "stream": download}.get(options.child, confirm)
    # Warm up first: the first client of a process loads botocore's S3 model (tens of MiB and
    # a few hundred ms), a cost a long-running server pays once, not per transfer.
    await store.presign_get("warm-up", 60)  # a client, no request
    seconds, rss, result = await measured(work)
    report: dict[str, Any] = {"seconds": seconds, "rss_mib": rss, "reset": reset_peak()}
    if isinstance(result, Stored):
        report.update(sha256=result.sha256, checksum=result.checksum)
    elif isinstance(result, str):
        report["confirmed_by"] = result
    return report


def run_child(op: str, endpoint: str, file: Path, part: int, **extra: str) -> dict[str, Any]:
    """Run one measured operation in a fresh process; its report."""
    command = [
        sys.executable, "-m", "bench.cloud", "--child", op, "--endpoint", endpoint,
        "--file", str(file), "--part", str(part), "--json", os.devnull,
    ]  # fmt: skip
    for name, value in extra.items():
        command += [f"--{name}", value]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"bench.cloud --child {op} failed:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@contextlib.contextmanager
def range_server(path: Path) -> Iterator[str]:
    """A minimal HTTP server answering GET and HEAD of any key with `path`'s bytes, Range
    included, as fast as Python can send a file: a ceiling for the client's download paths
    that moto (which copies the whole object to answer any range) cannot show."""
    size = path.stat().st_size

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            asked = self.headers.get("Range")
            start, end = 0, size - 1
            if asked:
                first, last = asked.removeprefix("bytes=").split("-")
                start, end = int(first), min(int(last), size - 1)
            self.send_response(206 if asked else 200)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("ETag", '"bench"')
            if asked:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            with path.open("rb") as handle:
                handle.seek(start)
                left = end - start + 1
                while left:
                    block = handle.read(min(left, 4 * MiB))
                    self.wfile.write(block)
                    left -= len(block)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def run(quick: bool) -> dict[str, Any]:
    repeats = 1 if quick else RUNS
    size = 8 * MiB if quick else 256 * MiB
    part = 5 * MiB if quick else DEFAULT_PART_SIZE
    concurrency = 4
    with tempfile.TemporaryDirectory(prefix="nexus-bench-cloud-") as folder:
        source = Path(folder) / "archive.tar.gz"
        sha256 = make_file(source, size)
        with moto_server() as moto:

            def runs(op: str, endpoint: str = moto, **extra: str) -> list[dict[str, Any]]:
                return [run_child(op, endpoint, source, part, **extra) for _ in range(repeats)]

            uploads = runs("upload")
            if any(run["sha256"] != sha256 for run in uploads):
                raise RuntimeError("an upload hashed other bytes than the file holds")
            checksum = str(uploads[-1]["checksum"])
            downloads, streams = runs("download"), runs("stream")
            by_checksum = runs("confirm-checksum", checksum=checksum, sha256=sha256)
            by_download = runs("confirm-download", sha256=sha256)
        if {run["confirmed_by"] for run in by_checksum} != {CONFIRMED_BY_CHECKSUM} or {
            run["confirmed_by"] for run in by_download
        } != {CONFIRMED_BY_DOWNLOAD}:
            raise RuntimeError("confirmation did not take the path it was measured for")
        with range_server(source) as fast:
            fast_downloads, fast_streams = runs("download", fast), runs("stream", fast)

    def median(results: list[dict[str, Any]], field: str) -> float:
        return float(statistics.median(result[field] for result in results))

    mb = size / 1e6
    overhead = 16  # MiB allowed for the interpreter's and HTTP client's own buffers
    up_bound = (concurrency + 1) * part / MiB + overhead
    down_bound = concurrency * CHUNK_SIZE / MiB + overhead
    up_rss, down_rss = median(uploads, "rss_mib"), median(downloads, "rss_mib")
    rows = [
        Row("upload to moto (multipart, parallel parts)", "throughput",
            mb / median(uploads, "seconds"), "MB/s"),
        Row("download from moto (parallel ranges)", "throughput",
            mb / median(downloads, "seconds"), "MB/s"),
        Row("download from moto (one ordered stream, as before)", "throughput",
            mb / median(streams, "seconds"), "MB/s"),
        Row("download from a plain range server (parallel ranges)", "throughput",
            mb / median(fast_downloads, "seconds"), "MB/s"),
        Row("download from a plain range server (one ordered stream)", "throughput",
            mb / median(fast_streams, "seconds"), "MB/s"),
        Row("upload", "peak RSS delta", up_rss, "MiB",
            f"<= {up_bound:.0f} MiB: ({concurrency}+1) x {part // MiB} MiB parts + "
            f"{overhead} MiB", up_rss <= up_bound),
        Row("download (parallel ranges)", "peak RSS delta", down_rss, "MiB",
            f"<= {down_bound:.0f} MiB: {concurrency} x {CHUNK_SIZE // MiB} MiB slices + "
            f"{overhead} MiB", down_rss <= down_bound),
        Row("sync confirmation, the store's checksum", "wall time",
            median(by_checksum, "seconds") * 1000, "ms"),
        Row("sync confirmation, download and hash (fallback)", "wall time",
            median(by_download, "seconds") * 1000, "ms"),
    ]  # fmt: skip
    notes = [
        f"{size / MiB:.0f} MiB of random bytes, {part // MiB} MiB parts and ranges, "
        f"{concurrency} in flight; medians of {repeats} runs, each in a fresh process, against "
        "moto's S3 server in its own process on 127.0.0.1: the client's ceiling on this "
        "machine, not a provider's speed.",
        "moto answers every GET, ranged or not, by copying the whole object under a lock, so "
        "on moto parallel ranges cost one whole-object copy each and lose to one stream; the "
        "plain range server (a file served with Range support, no S3 logic) shows what the "
        "client's two download paths do when the server is not the bottleneck. Against a "
        "remote store, parallel ranges also hide the network's latency per connection.",
        "Uploads send each part's SHA-256 (verified by the store on receipt) and hash the "
        "whole file as it streams: each byte is read once. The store's composite checksum of "
        f"the upload was {checksum}.",
        "Confirmation by checksum is one HeadObject (ChecksumMode=ENABLED); the fallback, for "
        "stores that keep no checksum, downloads and hashes the whole object. Both include "
        "creating the S3 client (about 50 ms).",
        "Downloads write each range at its offset; a fetched archive's SHA-256 is computed "
        "afterwards by the archive verifier, which reads the file from the page cache.",
        "Peak RSS delta: VmHWM reset through /proc/self/clear_refs before the run, minus the "
        "RSS at its start.",
    ]
    if not all(run["reset"] for run in uploads + downloads):
        notes.append(
            "/proc/self/clear_refs was not writable: peak RSS deltas count from process start."
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
    # One measured operation in a child process (used by the run itself).
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, default=DEFAULT_PART_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--checksum", help=argparse.SUPPRESS)
    parser.add_argument("--sha256", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(child(args))))
        return 0
    result = asyncio.run(run(args.quick))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["rows"]:
        verdict = "" if row["met"] is None else (" (met)" if row["met"] else " (MISSED)")
        print(f"{row['name']:<50} {row['metric']:<15} {row['value']:>9.1f} {row['unit']}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
