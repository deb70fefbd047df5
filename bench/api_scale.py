"""The API and the scheduler at scale (issue #11, item 3).

On a throwaway cluster: a migrated catalog with 10,000 backups (the mix a long-lived install
has: scheduled, manual, pre_update and pre_restore; completed, failed; deleted and purged;
cloud-synced) and 1,000 enabled schedules (varied crons and zones). The real server
(`python -m api serve`, one uvicorn worker, as production runs it) answers 50 concurrent
clients that each send their next request as soon as the last one is answered (closed loop,
no think time), over keep-alive connections, authenticated as integrators are (an API token
from `nexus-backup tokens create`, `Authorization: Bearer`), over a mix of pages: first pages,
deep offsets, the last page, status and type filters. Then the scheduler: `tick(operations,
at)` over the 1,000 schedules at an instant none is due (median of several ticks).

    .venv/bin/python -m bench.api_scale --json OUT.json [--quick]

The EXPLAIN ANALYZE plans of the listing, counting and due-schedule queries go in the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent.parent
# A fixed instant: the catalog's history ends here and the ticks run at it.
AT = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)
P99_TARGET_MS = 50.0
TICK_TARGET_S = 1.0
PACED_INTERVAL = 1.0  # seconds between one paced client's requests

CRONS = (
    "0 3 * * *",
    "30 2 * * *",
    "*/15 * * * *",
    "0 */6 * * *",
    "15 1 * * 1-5",
    "0 0 * * 0",
    "0 0 1 * *",
    "0 9-17 * * MON-FRI",
    "5 4 */2 * *",
    "0 0 13 * 5",
    "45 23 * * SAT",
    "0 12 1,15 * *",
    "20 */2 * * *",
    "0 6 * JAN,APR,JUL,OCT 1",
)
ZONES = (
    "UTC",
    "America/Guyana",
    "Europe/London",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Asia/Tokyo",
    "America/Sao_Paulo",
    "Europe/Berlin",
)


@dataclass(frozen=True)
class Scale:
    backups: int
    schedules: int
    requests: int
    warmup: int
    clients: int
    ticks: int
    paced: int  # requests of the paced clients


FULL = Scale(
    backups=10_000, schedules=1_000, requests=6_000, warmup=600, clients=50, ticks=7, paced=1_000
)
QUICK = Scale(backups=200, schedules=20, requests=300, warmup=50, clients=50, ticks=3, paced=100)


@dataclass
class Report:
    title: str
    machine: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(
        self,
        name: str,
        metric: str,
        value: float,
        unit: str,
        target: str | None = None,
        met: bool | None = None,
    ) -> None:
        self.rows.append(
            {
                "name": name,
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "target": target,
                "met": met,
            }
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "machine": self.machine,
            "rows": self.rows,
            "notes": self.notes,
        }


def machine() -> str:
    cpus = os.cpu_count() or 0
    return (
        f"{platform.system()} {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}"
    )


# -- the catalog ---------------------------------------------------------------------------


def backup_rows(
    count: int, schedule_ids: list[str], backup_dir: Path, rng: random.Random
) -> list[dict[str, Any]]:
    """`count` backups as the runner and the operations leave them, newest at AT, about four
    a day; some pairs share a created_at (a pre_restore and the restore's neighbour), so the
    id breaks ties in the listing."""
    rows: list[dict[str, Any]] = []
    created = AT - timedelta(minutes=5)
    names: set[str] = set()
    for n in range(count):
        if n and rng.random() > 0.03:  # 3% share the previous one's instant
            created -= timedelta(minutes=rng.randint(20, 700), seconds=rng.randint(0, 59))
        kind = rng.choices(
            ("scheduled", "manual", "pre_update", "pre_restore"), weights=(70, 18, 6, 6)
        )[0]
        status = "failed" if rng.random() < 0.07 else "completed"
        prefix = {"pre_restore": "pre-restore", "pre_update": "pre-update"}.get(
            kind, "scheduled" if kind == "scheduled" else "gk-nexus-backup"
        )
        name = f"{prefix}-{created:%Y%m%d-%H%M%S}"
        while name in names:
            name += "-2"
        names.add(name)
        compression = "zstd" if rng.random() < 0.4 else "gzip"
        suffix = ".tar.zst" if compression == "zstd" else ".tar.gz"
        started = created + timedelta(seconds=1)
        row: dict[str, Any] = {
            "id": str(__import__("uuid").UUID(int=rng.getrandbits(128), version=4)),
            "name": name,
            "description": rng.choice(
                (None, None, None, "before the release", "monthly audit copy")
            ),
            "type": kind,
            "status": status,
            "compression": compression,
            "is_cloud_synced": False,
            "sync_requested": False,
            "sync_status": "none",
            "sync_attempts": 0,
            "progress_bytes": 0,
            "schedule_id": rng.choice(schedule_ids)
            if kind == "scheduled" and schedule_ids
            else None,
            "created_by": "scheduler"
            if kind == "scheduled"
            else rng.choice(("admin@gk-nexus.gy", "token:ci-deploy", "cli")),
            "created_at": created,
            "started_at": started,
            "completed_at": started + timedelta(seconds=rng.randint(20, 900)),
        }
        if status == "completed":
            size = rng.randint(50_000_000, 3_000_000_000)
            row.update(
                file_path=str(backup_dir / f"{name}{suffix}"),
                file_size=size,
                checksum=secrets.token_hex(32),
                table_count=rng.randint(40, 60),
                record_count=rng.randint(100_000, 5_000_000),
                uploaded_files_count=rng.randint(1_000, 40_000),
                app_version=rng.choice(("1.3.0", "1.4.2", "1.5.0")),
                schema_version=rng.choice(("20261001_clients", "20261101_invoices")),
                progress_bytes=size,
                progress_total=size,
            )
            if rng.random() < 0.3:
                synced = row["completed_at"] + timedelta(minutes=2)
                row.update(
                    sync_requested=True,
                    sync_status="synced",
                    is_cloud_synced=True,
                    cloud_provider="s3",
                    cloud_path=f"nexus-backups/{name}{suffix}",
                    sync_attempts=1,
                    synced_at=synced,
                )
        else:
            row["error_message"] = rng.choice(
                (
                    "pg_dump exited 1: connection to server lost",
                    "no space left on device while writing the archive: free space in BACKUP_DIR",
                    "the uploads folder /data/uploads is not readable: check its permissions",
                )
            )
        if rng.random() < 0.15 and n > 50:  # retention and people deleted these; purged since
            deleted = min(AT - timedelta(minutes=1), created + timedelta(days=rng.randint(1, 60)))
            row.update(deleted_at=deleted, purged_at=deleted + timedelta(seconds=2))
        rows.append(row)
    columns = {key for row in rows for key in row}
    return [{key: row.get(key) for key in columns} for row in rows]


def schedule_rows(count: int, rng: random.Random) -> list[dict[str, Any]]:
    from api.schedules import cron

    rows = []
    for n in range(count):
        expression = cron.parse(rng.choice(CRONS))
        zone = rng.choice(ZONES)
        rows.append(
            {
                "id": secrets.token_hex(16),
                "name": f"schedule {n:04d} ({expression}, {zone})",
                "cron_expression": expression,
                "timezone": zone,
                "is_enabled": True,
                "retention_days": rng.choice((None, 7, 30, 90)),
                "sync_to_cloud": rng.random() < 0.3,
                "last_run_at": None,
                "next_run_at": cron.next_run(expression, zone, AT),  # none due at AT
                "success_count": rng.randint(0, 500),
                "failure_count": rng.randint(0, 5),
                "created_at": AT - timedelta(days=400),
                "updated_at": AT - timedelta(days=rng.randint(0, 400)),
            }
        )
    return rows


async def fill_catalog(engine: AsyncEngine, scale: Scale, backup_dir: Path) -> None:
    from api.backups.models import SystemBackup
    from api.schedules.models import BackupSchedule

    rng = random.Random(11)
    schedules = schedule_rows(scale.schedules, rng)
    backups = backup_rows(scale.backups, [s["id"] for s in schedules], backup_dir, rng)
    async with engine.begin() as connection:
        await connection.execute(insert(BackupSchedule), schedules)
        for start in range(0, len(backups), 1000):
            await connection.execute(insert(SystemBackup), backups[start : start + 1000])
    # As autovacuum leaves a table some time after a batch of inserts: analysed, its
    # visibility map set (which index-only scans rely on).
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM (ANALYZE) nexus_backup.system_backup"))
        await connection.execute(text("VACUUM (ANALYZE) nexus_backup.backup_schedule"))


# -- the request mix -----------------------------------------------------------------------


async def request_mix(engine: AsyncEngine, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, path) pairs: the pages a UI and integrators ask for, with valid deep offsets."""
    from api.backups import service
    from api.db import make_sessionmaker

    async with make_sessionmaker(engine)() as session:
        visible = await service.count_backups(session)
        completed = await service.count_backups(session, status="completed")
        failed = await service.count_backups(session, status="failed")
        scheduled = await service.count_backups(session, kind="scheduled")

    def deep(total: int, limit: int) -> int:
        return rng.randint(0, max(0, total - limit))

    kinds: list[tuple[str, int, Callable[[], str]]] = [
        ("first page", 30, lambda: "/backups?limit=20"),
        ("first page, default limit", 8, lambda: "/backups"),
        ("deep offset", 20, lambda: f"/backups?limit=20&offset={deep(visible, 20)}"),
        ("last page", 7, lambda: f"/backups?limit=20&offset={max(0, visible - 20)}"),
        (
            "status=completed",
            10,
            lambda: f"/backups?status=completed&limit=20&offset={deep(completed, 20)}",
        ),
        ("status=failed", 5, lambda: f"/backups?status=failed&limit=20&offset={deep(failed, 20)}"),
        (
            "type=scheduled",
            10,
            lambda: f"/backups?type=scheduled&limit=20&offset={deep(scheduled, 20)}",
        ),
        (
            "type+status, limit=100",
            5,
            lambda: "/backups?type=pre_restore&status=completed&limit=100",
        ),
        ("page of 100", 5, lambda: f"/backups?limit=100&offset={deep(visible, 100)}"),
    ]
    weights = [weight for _, weight, _ in kinds]
    mix = []
    for _ in range(count):
        kind, _, make = rng.choices(kinds, weights=weights)[0]
        mix.append((kind, make()))
    return mix


# -- a lean keep-alive HTTP/1.1 client: the load generator shares the machine with the server,
# so it should cost as little CPU as it can.


class Connection:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.headers = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\n\r\n"
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.headers}".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
        self.reader = self.writer = None


@dataclass
class LoadResult:
    seconds: float
    latencies: dict[str, list[float]]  # kind -> seconds
    errors: list[str]

    @property
    def all(self) -> list[float]:
        return [value for values in self.latencies.values() for value in values]


async def drive(port: int, token: str, mix: list[tuple[str, str]], clients: int) -> LoadResult:
    """`clients` concurrent closed-loop clients work through `mix`, each on its own
    keep-alive connection."""
    work = iter(mix)
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []

    async def client() -> None:
        connection = Connection("127.0.0.1", port, token)
        try:
            for kind, path in work:
                started = time.perf_counter()
                status, body = await connection.get(path)
                elapsed = time.perf_counter() - started
                if status != 200:
                    errors.append(f"{path}: {status} {body[:200]!r}")
                latencies.setdefault(kind, []).append(elapsed)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return LoadResult(time.perf_counter() - started, latencies, errors)


async def drive_paced(
    port: int, token: str, mix: list[tuple[str, str]], clients: int, interval: float
) -> LoadResult:
    """`clients` concurrent clients, each sending its next request `interval` seconds after
    its previous one was sent (or at once, if that one took longer): the load of that many
    open pages refreshing, rather than of a saturating load generator."""
    work = iter(mix)
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    loop = asyncio.get_running_loop()

    async def client(start: float) -> None:
        connection = Connection("127.0.0.1", port, token)
        due = loop.time() + start
        try:
            for kind, path in work:
                await asyncio.sleep(max(0.0, due - loop.time()))
                due += interval
                started = time.perf_counter()
                status, body = await connection.get(path)
                elapsed = time.perf_counter() - started
                if status != 200:
                    errors.append(f"{path}: {status} {body[:200]!r}")
                latencies.setdefault(kind, []).append(elapsed)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(interval * n / clients) for n in range(clients)))
    return LoadResult(time.perf_counter() - started, latencies, errors)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_env(url: str, uploads: Path, backups: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        DATABASE_URL=url,
        UPLOADS_DIR=str(uploads),
        BACKUP_DIR=str(backups),
        APP_VERSION="1.5.0",
        # The bench ticks itself, at AT: a ticker on the wall clock would start real backups.
        SCHEDULER_ENABLED="false",
    )
    return env


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nexus-backup {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@contextmanager
def server(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited {process.returncode}: {log.read_text()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the server did not start within 60 s") from None
                    time.sleep(0.2)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- EXPLAIN ---------------------------------------------------------------------------------


async def explain(engine: AsyncEngine, what: str, run: Callable[[Any], Awaitable[object]]) -> str:
    """EXPLAIN ANALYZE of every statement `run(session)` sends, as one note."""
    from api.db import make_sessionmaker

    statements: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with make_sessionmaker(engine)() as session:
            await run(session)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    parts = [f"EXPLAIN ANALYZE, {what}:"]
    async with engine.connect() as connection:
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            plan = await connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) " + statement, tuple(parameters)
            )
            parts.append("  " + " ".join(statement.split())[:300])
            parts.extend("    " + row[0] for row in plan)
    return "\n".join(parts)


async def explain_all(engine: AsyncEngine, visible: int) -> list[str]:
    from api.backups import service
    from api.schedules import service as schedules

    deep = max(0, visible - 20)
    cases: list[tuple[str, Callable[[Any], Awaitable[object]]]] = [
        ("first page", lambda s: service.list_backups(s, limit=20)),
        ("count", lambda s: service.count_backups(s)),
        (f"offset {deep}", lambda s: service.list_backups(s, limit=20, offset=deep)),
        ("status=failed", lambda s: service.list_backups(s, limit=20, status="failed")),
        ("type=pre_restore", lambda s: service.list_backups(s, limit=20, kind="pre_restore")),
        ("count status=failed", lambda s: service.count_backups(s, status="failed")),
        ("due schedules", lambda s: schedules.due(s, AT)),
    ]
    return [await explain(engine, what, run) for what, run in cases]


# -- the run ---------------------------------------------------------------------------------


async def prepare(url: str, scale: Scale, backup_dir: Path) -> None:
    from api.db import make_engine

    engine = make_engine(url)
    try:
        await fill_catalog(engine, scale, backup_dir)
    finally:
        await engine.dispose()


async def inspect(url: str, scale: Scale) -> tuple[list[tuple[str, str]], list[str]]:
    from api.backups import service
    from api.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    try:
        mix = await request_mix(engine, scale.warmup + scale.requests, random.Random(3))
        async with make_sessionmaker(engine)() as session:
            visible = await service.count_backups(session)
        plans = await explain_all(engine, visible)
    finally:
        await engine.dispose()
    return mix, plans


async def ticks(env: dict[str, str], count: int) -> list[float]:
    from api.config import Settings
    from api.operations import Operations
    from api.scheduler import tick
    from api.services import open_services

    settings = Settings(
        _env_file=None,
        database_url=env["DATABASE_URL"],
        uploads_dir=env["UPLOADS_DIR"],
        backup_dir=env["BACKUP_DIR"],
        scheduler_enabled=False,
    )
    services = await open_services(settings)
    operations = Operations(services)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            ran = await tick(operations, AT)
            times.append(time.perf_counter() - started)
            if ran:
                raise RuntimeError(f"a tick at {AT} ran {ran}: none should be due")
    finally:
        await operations.shutdown()
        await services.close()
    return times


def run(scale: Scale, report: Report) -> None:
    from nexus_dev.cluster import LocalCluster

    folder = Path(tempfile.mkdtemp(prefix="nexus-bench-api-"))
    os.chmod(folder, 0o755)  # the cluster may run as postgres, which must reach its data dir
    cluster = LocalCluster(folder / "pg")
    try:
        cluster.start()
        url = cluster.create_database("bench_api")
        uploads, backups = folder / "uploads", folder / "backups"
        uploads.mkdir()
        backups.mkdir()
        env = app_env(url, uploads, backups)
        cli(env, "migrate")
        started = time.perf_counter()
        asyncio.run(prepare(url, scale, backups))
        report.notes.append(
            f"catalog: {scale.backups} backups, {scale.schedules} enabled schedules, inserted "
            f"in {time.perf_counter() - started:.1f} s"
        )
        token = (
            cli(env, "tokens", "create", "--name", "bench", "--role", "OWNER")
            .strip()
            .splitlines()[-1]
        )
        mix, plans = asyncio.run(inspect(url, scale))
        port = free_port()
        with server(env, port, folder / "server.log") as process:
            asyncio.run(drive(port, token, mix[: scale.warmup], scale.clients))
            measured = mix[scale.warmup :]
            cpu = cpu_seconds(process.pid)
            result = asyncio.run(drive(port, token, measured, scale.clients))
            cpu = cpu_seconds(process.pid) - cpu
            alone = asyncio.run(drive(port, token, measured[: scale.requests // 10], 1))
            paced = asyncio.run(
                drive_paced(port, token, measured[: scale.paced], scale.clients, PACED_INTERVAL)
            )
        latencies = result.all
        p50, p95, p99 = (percentile(latencies, q) * 1000 for q in (50, 95, 99))
        name = f"GET /backups, {scale.backups} backups, {scale.clients} closed-loop clients"
        report.row(name, "throughput", len(latencies) / result.seconds, "req/s")
        report.row(name, "p50 latency", p50, "ms")
        report.row(name, "p95 latency", p95, "ms")
        report.row(name, "p99 latency", p99, "ms", f"< {P99_TARGET_MS:.0f} ms", p99 < P99_TARGET_MS)
        errors = result.errors + alone.errors + paced.errors
        report.row(name, "non-200 answers", len(errors), "count", "0", not errors)
        report.row(
            "GET /backups, server process",
            "CPU time per request",
            cpu / len(latencies) * 1000,
            "ms",
        )
        report.row(
            "GET /backups, one client at a time",
            "p50 latency",
            percentile(alone.all, 50) * 1000,
            "ms",
        )
        report.row(
            "GET /backups, one client at a time",
            "p99 latency",
            percentile(alone.all, 99) * 1000,
            "ms",
        )
        paced_name = f"GET /backups, {scale.clients} clients each asking every {PACED_INTERVAL:g} s"
        report.row(
            paced_name,
            "throughput",
            len(paced.all) / paced.seconds,
            "req/s",
        )
        paced_p99 = percentile(paced.all, 99) * 1000
        report.row(paced_name, "p50 latency", percentile(paced.all, 50) * 1000, "ms")
        report.row(
            paced_name,
            "p99 latency",
            paced_p99,
            "ms",
            f"< {P99_TARGET_MS:.0f} ms",
            paced_p99 < P99_TARGET_MS,
        )
        for error in errors[:5]:
            report.notes.append(f"error: {error}")
        for kind, values in sorted(result.latencies.items()):
            middle, tail = (percentile(values, q) * 1000 for q in (50, 99))
            report.notes.append(
                f"closed loop, {kind}: {len(values)} requests, p50 {middle:.1f} ms, "
                f"p99 {tail:.1f} ms"
            )
        times = asyncio.run(ticks(env, scale.ticks))
        median = statistics.median(times)
        report.row(
            f"scheduler tick, {scale.schedules} enabled schedules, none due",
            "median time",
            median * 1000,
            "ms",
            f"< {TICK_TARGET_S * 1000:.0f} ms",
            median < TICK_TARGET_S,
        )
        report.notes.append("ticks (ms): " + ", ".join(f"{t * 1000:.1f}" for t in times))
        report.notes.extend(plans)
        report.notes.append(
            f"load: {scale.requests} requests after {scale.warmup} warm-up requests, from "
            f"{scale.clients} closed-loop clients (each sends its next request when the last is "
            "answered, no think time) on keep-alive connections, generated on the same machine "
            f"as the server; then {len(alone.all)} requests from one client, and "
            f"{len(paced.all)} from {scale.clients} clients each sending one request every "
            f"{PACED_INTERVAL:g} s. With closed-loop clients the latency is the queue: p50 is "
            "about clients / throughput, so p99 < 50 ms at 50 clients needs over 1,000 req/s, "
            "that is under 1 ms of server CPU time per request from one worker."
        )
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_scale", description=__doc__)
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="a tiny catalog: seconds")
    parser.add_argument("--requests", type=int, help="measured requests (default 6000)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 50)")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    if args.requests:
        scale = replace(scale, requests=args.requests)
    if args.clients:
        scale = replace(scale, clients=args.clients)
    report = Report("API and scheduler at scale", machine())
    run(scale, report)
    args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    for row in report.rows:
        met = "" if row["met"] is None else (" (met)" if row["met"] else " (MISSED)")
        target = f" target {row['target']}" if row["target"] else ""
        print(f"{row['name']}: {row['metric']} {row['value']} {row['unit']}{target}{met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
