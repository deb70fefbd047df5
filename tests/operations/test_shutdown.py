"""Graceful shutdown (issue #12, item 6; docs/ARCHITECTURE.md "Shutdown").

SIGTERM to `nexus-backup serve`, or SIGTERM/SIGINT to `nexus-backup backup`, while a backup is
in pg_dump: pg_dump is stopped and reaped (no process of it remains), partial files are removed,
the record is failed "interrupted by shutdown", earlier archives are untouched, all within 30 s,
and the next start works. During a cloud sync the multipart upload is aborted and the backup
stays completed and due for a retry. During a restore's load the restore is undone: the live
data is exactly as before, with no journal or staging folder left.

Everything is real: the server and the CLI are subprocesses, pg_dump and psql are real, the
cloud is moto's S3 server behind the fault proxy (tests/s3server.py). Nothing waits on the wall
clock: "still in pg_dump" is made certain by a lock another session holds on an app table
(pg_dump, or the restore's load, waits for it), and the tests wait on log lines and on the
proxy's held requests, with timeouts that only bound a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.archive.reader import Staging, read_archive
from api.archive.writer import PARTIAL_MARK, read_sidecar
from api.restores import runner, swap
from api.services import Services
from api.sources import postgres
from api.sources.postgres import DatabaseRestore
from tests.conftest import (
    App,
    Server,
    ServerOutput,
    cloud_settings,
    database_state,
    free_port,
    tree_state,
)
from tests.operations.test_crash import _prepare_restore
from tests.s3server import S3Server

SHUTDOWN_LIMIT = 30.0  # seconds from SIGTERM to the process's end (issue #12)
LOCKED_TABLE = "public.invoice_lines"  # an app table; pg_dump and the restore's load need it
PG_DUMP_STARTED = re.compile(r"pg_dump started \(pid (\d+)\)")


# ---------------------------------------------------------------------------------------------
# helpers


class TableLock:
    """Another session holding a lock on an app table until `release()`: a psql reading its
    commands from a pipe. The constructor returns once the lock is held (psql answered the
    query that follows the LOCK)."""

    def __init__(self, app: App, mode: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = app.cluster.password
        self.process = subprocess.Popen(
            [
                str(app.cluster.bin("psql")),
                *("-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"),
                *("-h", "127.0.0.1", "-p", str(app.cluster.port), "-U", "nexus", app.database),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"BEGIN;\nLOCK TABLE {LOCKED_TABLE} IN {mode} MODE;\n")
        self.process.stdin.write("SELECT 'locked';\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer == "locked", f"the lock was not taken: {answer!r}"

    def release(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write("COMMIT;\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        finally:
            assert self.process.stdout is not None
            self.process.stdout.close()


@contextmanager
def holding(app: App, mode: str) -> Iterator[TableLock]:
    lock = TableLock(app, mode)
    try:
        yield lock
    finally:
        lock.release()


@dataclass
class Running:
    """A server or CLI subprocess and what it writes."""

    process: subprocess.Popen[str]
    output: ServerOutput


def _popen(app: App, args: list[str], log: Path, **env: str) -> Running:
    process = subprocess.Popen(
        [sys.executable, "-m", "api", *args],
        cwd=app.root,
        env=app.env(PYTHONUNBUFFERED="1", **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert process.stdout is not None
    return Running(process, ServerOutput(process.stdout, log))


def _end(running: Running) -> None:
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(timeout=30)
    running.output.close()


@contextmanager
def server(app: App, log: Path, **env: str) -> Iterator[tuple[Running, Server]]:
    """`nexus-backup serve` as conftest's run_server starts it, with its process at hand (the
    test sends it the signal); killed afterwards if it still runs."""
    port = free_port()
    running = _popen(app, ["serve", "--port", str(port)], log, **env)
    try:
        running.output.wait_for("Uvicorn running on")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        yield running, Server(base, running.output)
    finally:
        _end(running)


def _stop(running: Running, signum: int = signal.SIGTERM) -> float:
    """Send `signum` and wait for the process to end; fail if that takes SHUTDOWN_LIMIT."""
    started = time.monotonic()
    running.process.send_signal(signum)
    try:
        running.process.wait(timeout=SHUTDOWN_LIMIT)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
        running.output.close()
        pytest.fail(
            f"the process did not end within {SHUTDOWN_LIMIT} s of {signal.Signals(signum).name}"
            f":\n{running.output.log.read_text(errors='replace')}"
        )
    running.output.close()
    return time.monotonic() - started


def _pg_dump_pid(output: ServerOutput) -> int:
    output.wait_for("pg_dump started (pid ")
    found = PG_DUMP_STARTED.findall(output.log.read_text(errors="replace"))
    return int(found[-1])


def _process_gone(pid: int) -> bool:
    """No process (not even an unreaped zombie) has this pid any more."""
    return not Path(f"/proc/{pid}").exists()


def _token(app: App) -> dict[str, str]:
    token = app.cli("tokens", "create", "--name", f"t-{uuid.uuid4().hex[:6]}").stdout.strip()
    return {"Authorization": f"Bearer {token}"}


def _backup_row(app: App, where: str) -> dict[str, str]:
    out = app.sql(
        "SELECT id || '|' || status || '|' || coalesce(error_message, '') || '|' || "
        "is_cloud_synced || '|' || coalesce(sync_status, '') || '|' || "
        "coalesce(sync_error, '') FROM nexus_backup.system_backup "
        f"WHERE {where} ORDER BY created_at DESC LIMIT 1"
    ).strip()
    assert out, f"no backup record where {where}"
    keys = ("id", "status", "error", "synced", "sync_status", "sync_error")
    return dict(zip(keys, out.split("|"), strict=True))


def _leftovers(app: App) -> list[str]:
    """Partial archives, spool files, FIFOs, journals and staging folders a run left."""
    found = []
    if app.backups.is_dir():
        for path in app.backups.iterdir():
            if PARTIAL_MARK in path.name or path.name.endswith((".fifo", ".journal", ".tmp")):
                found.append(path.name)
    for path in app.uploads.parent.iterdir():
        if ".restore-" in path.name:
            found.append(path.name)
    return sorted(found)


def _archives(app: App) -> dict[str, str]:
    """SHA-256 of every file in BACKUP_DIR, by name."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(app.backups.iterdir())
        if path.is_file()
    }


def _post_in_thread(url: str, **kwargs: Any) -> tuple[threading.Thread, list[httpx.Response]]:
    """A request that stays open across the shutdown (e.g. ?wait=true): its answer lands in
    the list."""
    answers: list[httpx.Response] = []

    def post() -> None:
        with contextlib.suppress(httpx.HTTPError):
            answers.append(httpx.post(url, timeout=SHUTDOWN_LIMIT + 30, **kwargs))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answers


def _assert_backup_interrupted(app: App, record: dict[str, str], log: Path) -> None:
    assert record["status"] == "failed", record
    assert record["error"] == "interrupted by shutdown", record
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, f"the shutdown logged a traceback:\n{text}"


def _assert_one_line(log: Path, signal_name: str) -> None:
    """The CLI said why it stopped in one line (the rest of its output is -v's log)."""
    said = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("nexus-backup: ")
    ]
    assert len(said) == 1, said
    assert said[0].startswith(f"nexus-backup: error: interrupted by {signal_name}: "), said


# ---------------------------------------------------------------------------------------------
# backups: SIGTERM while pg_dump runs


def test_sigterm_to_serve_during_an_api_backup_stops_pg_dump_and_marks_it_interrupted(
    app: App, tmp_path: Path
) -> None:
    app.cli("backup", "earlier", "--quiet")
    earlier = _archives(app)
    headers = _token(app)
    with holding(app, "ACCESS EXCLUSIVE"):  # pg_dump waits for it: it is still dumping
        with server(app, tmp_path / "serve.log") as (running, srv):
            waiting, answers = _post_in_thread(
                f"{srv.base}/backups?wait=true", headers=headers, json={"name": "cut-short"}
            )
            pid = _pg_dump_pid(srv.output)
            took = _stop(running)
            waiting.join(timeout=30)
        assert _process_gone(pid), f"pg_dump {pid} outlived the server"
        record = _backup_row(app, "name = 'cut-short'")
        _assert_backup_interrupted(app, record, tmp_path / "serve.log")
        assert answers, "the waiting client got no answer before the server stopped"
        assert answers[0].status_code == 503, answers[0].text
        assert "interrupted by shutdown" in answers[0].json()["detail"]
    assert took < SHUTDOWN_LIMIT
    assert _leftovers(app) == []
    assert _archives(app) == earlier, "an earlier archive changed, or a partial one was left"

    with server(app, tmp_path / "serve-again.log") as (_running, srv):
        done = httpx.post(f"{srv.base}/backups?wait=true", headers=headers, timeout=300)
        assert done.status_code == 201, done.text
        assert done.json()["status"] == "completed"


def test_sigterm_to_serve_during_a_scheduled_backup_stops_it_the_same_way(
    app: App, tmp_path: Path
) -> None:
    headers = _token(app)
    with holding(app, "ACCESS EXCLUSIVE"):
        log = tmp_path / "serve.log"
        with server(app, log, SCHEDULER_TICK_SECONDS="0.5") as (running, srv):
            created = httpx.post(
                f"{srv.base}/schedules",
                headers=headers,
                json={"name": "nightly", "cronExpression": "0 3 29 2 *"},  # never due by itself
                timeout=10,
            )
            assert created.status_code == 201, created.text
            due = datetime(2026, 1, 1, tzinfo=UTC)  # long past: due at the server's next tick
            app.sql(
                f"UPDATE nexus_backup.backup_schedule SET next_run_at = '{due.isoformat()}' "
                f"WHERE id = '{created.json()['id']}'"
            )
            pid = _pg_dump_pid(srv.output)
            _stop(running)
        assert _process_gone(pid), f"pg_dump {pid} outlived the server"
        _assert_backup_interrupted(app, _backup_row(app, "type = 'scheduled'"), log)
    assert _leftovers(app) == []
    assert not [p for p in app.backups.iterdir() if p.name.startswith("scheduled")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_backup_interrupted_by_a_signal_cleans_up_and_exits_non_zero(
    app: App, tmp_path: Path, signum: int
) -> None:
    app.cli("backup", "earlier", "--quiet")
    earlier = _archives(app)
    log = tmp_path / "cli.log"
    with holding(app, "ACCESS EXCLUSIVE"):
        running = _popen(app, ["-v", "backup", "cut-short"], log)
        try:
            pid = _pg_dump_pid(running.output)
            _stop(running, signum)
        finally:
            _end(running)
        assert _process_gone(pid), f"pg_dump {pid} outlived the CLI"
        _assert_backup_interrupted(app, _backup_row(app, "name = 'cut-short'"), log)
    assert running.process.returncode == 128 + signum
    _assert_one_line(log, signal.Signals(signum).name)
    assert _leftovers(app) == []
    assert _archives(app) == earlier
    app.cli("backup", "after", "--quiet")  # the next run works


# ---------------------------------------------------------------------------------------------
# cloud sync: SIGTERM while a multipart upload is in flight


def test_sigterm_during_a_cloud_sync_aborts_the_multipart_upload_and_leaves_it_retryable(
    app: App, s3: S3Server, tmp_path: Path
) -> None:
    with open(app.uploads / "large.bin", "wb") as handle:  # incompressible: several 5 MiB parts
        handle.write(os.urandom(12 * 1024 * 1024))
    app.cli("backup", "big", "--quiet")
    record = _backup_row(app, "name = 'big'")
    s3.reset()
    bucket = s3.create_bucket(f"b-{uuid.uuid4().hex[:12]}")
    cloud = {key.upper(): str(value) for key, value in cloud_settings(s3, bucket).items()}
    headers = _token(app)
    s3.fail("PUT", "partNumber=2", mode="hang")  # part 2 stays in flight until reset()
    try:
        with server(app, tmp_path / "serve.log", **cloud) as (running, srv):
            waiting, answers = _post_in_thread(
                f"{srv.base}/backups/{record['id']}/sync", headers=headers
            )
            assert s3.wait_until_held(timeout=60), "the upload never reached part 2"
            _stop(running)
            waiting.join(timeout=30)
        assert asyncio.run(s3.pending_uploads(bucket)) == [], "an incomplete upload was left"
    finally:
        s3.reset()
    after = _backup_row(app, f"id = '{record['id']}'")
    assert after["status"] == "completed", after
    assert after["synced"] == "false", after
    assert after["sync_status"] == "pending", after
    assert after["sync_error"] == "interrupted by shutdown", after
    assert answers, "the waiting client got no answer before the server stopped"
    assert answers[0].status_code == 503, answers[0].text
    assert _leftovers(app) == []

    with server(app, tmp_path / "serve-again.log", **cloud) as (_running, srv):
        retried = httpx.post(
            f"{srv.base}/backups/{record['id']}/sync", headers=headers, timeout=120
        )
    assert retried.status_code == 200, retried.text
    assert retried.json()["isCloudSynced"] is True


# ---------------------------------------------------------------------------------------------
# restore: SIGTERM while the database loads


def test_sigterm_during_a_restore_load_undoes_it(app: App, tmp_path: Path) -> None:
    app.cli("backup", "snapshot", "--quiet")
    record = _backup_row(app, "name = 'snapshot'")
    # The live state moves on after the backup: the restore would change it back.
    app.sql("DELETE FROM public.invoice_lines WHERE id IN (SELECT min(id) FROM invoice_lines)")
    (app.uploads / "added-after-the-backup.txt").write_text("new\n")
    live = (tree_state(app.uploads), database_state(app))
    headers = _token(app)
    log = tmp_path / "serve.log"
    # ACCESS SHARE lets the safety backup's pg_dump through, but not the load's DROP: the
    # restore is held inside its load transaction.
    with holding(app, "ACCESS SHARE"):
        with server(app, log) as (running, srv):
            started = httpx.post(
                f"{srv.base}/backups/{record['id']}/restore",
                headers=headers,
                json={"confirm": "snapshot"},
                timeout=30,
            )
            assert started.status_code == 202, started.text
            restore_id = started.json()["id"]
            srv.output.wait_for(f"restore {restore_id}: restoring")
            _stop(running)
        sessions = app.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'nexus-restore-%'"
        )
        assert sessions.strip() == "0", "the restore's database session outlived the server"
    assert (tree_state(app.uploads), database_state(app)) == live, "the restore was not undone"
    assert _leftovers(app) == [], "a journal or staging folder was left behind"
    status, message = (
        app.sql(
            "SELECT status || '|' || coalesce(error_message, '') FROM nexus_backup.system_restore "
            f"WHERE id = '{restore_id}'"
        )
        .strip()
        .split("|")
    )
    assert status == "failed"
    assert message.startswith("interrupted by shutdown; the restore was undone"), message
    safety = _backup_row(app, "type = 'pre_restore'")
    assert safety["status"] == "completed", safety
    assert "Traceback" not in log.read_text(errors="replace")

    with server(app, tmp_path / "serve-again.log") as (_running, srv):
        listed = httpx.get(f"{srv.base}/backups", headers=headers, timeout=10)
        assert listed.status_code == 200


# ---------------------------------------------------------------------------------------------
# a stopping engine takes no new work


async def test_a_stopping_service_answers_new_mutations_with_503(api: Any) -> None:
    headers = await api.headers()
    api.operations.stop()
    answer = await api.client.post("/backups", headers=headers)
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["error"] == "Unavailable"
    assert "shutting down" in body["detail"]


def test_sigterm_to_cli_restore_while_it_loads_undoes_it(app: App, tmp_path: Path) -> None:
    app.cli("backup", "snapshot", "--quiet")
    app.sql("DELETE FROM public.invoice_lines WHERE id IN (SELECT min(id) FROM invoice_lines)")
    (app.uploads / "added-after-the-backup.txt").write_text("new\n")
    live = (tree_state(app.uploads), database_state(app))
    log = tmp_path / "cli.log"
    with holding(app, "ACCESS SHARE"):
        running = _popen(app, ["-v", "restore", "snapshot", "--yes"], log)
        try:
            running.output.wait_for(": restoring")  # the restore's log line for that phase
            _stop(running)
        finally:
            _end(running)
    assert running.process.returncode == 128 + signal.SIGTERM
    _assert_one_line(log, "SIGTERM")
    assert (tree_state(app.uploads), database_state(app)) == live, "the restore was not undone"
    assert _leftovers(app) == [], "a journal or staging folder was left behind"
    status, message = (
        app.sql(
            "SELECT status || '|' || coalesce(error_message, '') FROM nexus_backup.system_restore "
            "ORDER BY created_at DESC LIMIT 1"
        )
        .strip()
        .split("|")
    )
    assert status == "failed"
    assert message.startswith("interrupted by shutdown; the restore was undone"), message


async def test_a_shutdown_during_the_commit_lets_the_commit_decide_and_finishes_the_restore(
    app: App, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap-and-commit section is shielded: cancelled while COMMIT is on its way, the
    restore is finished (not left mixed) and says so (FinishedOnShutdown)."""
    archive, at_backup, _live = _prepare_restore(app)
    restore_id = uuid.uuid4().hex
    uploads = app.uploads.absolute()
    staging = Staging(swap.staging_root(uploads, restore_id))
    verified = read_archive(
        archive, expected_sha256=read_sidecar(archive), checksum_source="sidecar", stage=staging
    )
    staging.apply_metadata(verified)
    committing, go_on = asyncio.Event(), asyncio.Event()
    commit = DatabaseRestore.commit

    async def held_commit(self: DatabaseRestore) -> None:  # a slow COMMIT, held by the test
        committing.set()
        await go_on.wait()
        await commit(self)

    monkeypatch.setattr(DatabaseRestore, "commit", held_commit)
    applying = asyncio.create_task(
        runner._apply(services, restore_id, app.url, uploads, staging, swap.RENAME)
    )
    await committing.wait()  # the uploads are swapped in and COMMIT is about to be sent
    applying.cancel("interrupted by shutdown")  # delivered at once: the commit is not done
    go_on.set()
    with pytest.raises(runner.FinishedOnShutdown):
        await applying
    staging.remove()
    assert await postgres.restore_committed(app.url, restore_id)
    assert (tree_state(app.uploads), database_state(app)) == at_backup, "left mixed"
    assert _leftovers(app) == [], "the journal or the old uploads tree was left behind"
