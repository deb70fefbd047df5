"""Crashes and concurrency: kill -9 during a backup or a restore, startup recovery, one mutation
at a time (SPEC section 4 and section 8, invariants 2, 4 and 9).

Everything is real: the CLI runs as a subprocess and is killed with SIGKILL, the restore pieces
run against the real cluster and the real uploads tree, and recovery runs as it does at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from api.archive.reader import Staging, read_archive
from api.archive.writer import PARTIAL_MARK, read_sidecar
from api.locks import MUTATION_LOCK, MutationLock
from api.operations import Operations
from api.operations.recovery import recover
from api.restores import swap
from api.services import Services
from api.sources import postgres
from api.sources.postgres import DatabaseRestore, restore_committed
from tests.conftest import App, database_state, tree_state

RANDOM_MB = 8  # per file: large uploads, so a killed backup dies with megabytes written

# alembic.ini has no `path_separator`, so Alembic >= 1.16 warns on every in-process catalog
# migration (the `services` fixture). That is a configuration defect reported separately; it
# is not what these tests are about, so it must not turn their setup into an error.


# ---------------------------------------------------------------------------------------------
# helpers


def _fingerprint(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def _add_random_files(uploads: Path, count: int = 2, megabytes: int = RANDOM_MB) -> None:
    """Incompressible files: what the archive holds when a backup is killed after one."""
    folder = uploads / "big"
    folder.mkdir(exist_ok=True)
    for n in range(count):
        with open(folder / f"random-{n}.bin", "wb") as handle:
            for _ in range(megabytes):
                handle.write(os.urandom(1024 * 1024))


def _partials(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if PARTIAL_MARK in p.name)


def _record(app: App, name: str) -> tuple[str, str] | None:
    """(status, error_message) of the newest catalog record named `name`."""
    out = app.sql(
        "SELECT status || '|' || coalesce(error_message, '') FROM nexus_backup.system_backup "
        f"WHERE name = '{name}' ORDER BY created_at DESC LIMIT 1"
    ).strip()
    if not out:
        return None
    status, _, message = out.partition("|")
    return status, message


def _wait_lock_free(app: App, timeout_seconds: int = 15) -> None:
    """After kill -9 the server drops the dead session's advisory lock once it sees the socket
    close; wait for that by taking the lock, blocking (lock_timeout bounds a hang), then
    giving it back."""
    app.sql(
        f"SET lock_timeout = '{timeout_seconds}s'; "
        f"SELECT pg_advisory_lock({MUTATION_LOCK}); SELECT pg_advisory_unlock({MUTATION_LOCK});"
    )


# `python -c STOPPING_CLI POINT PREFIX ARGS...` is the CLI with one test-only change: at POINT,
# for the archive whose file name starts with PREFIX, the process stops itself (SIGSTOP). The
# test blocks in waitpid until it has stopped there, then kills it: the kill lands exactly at
# that point, however fast or slow the machine is.
STOPPING_CLI = """
import os, signal, sys
from api.archive import writer

point, prefix = sys.argv[1:3]
del sys.argv[1:3]


def stop(final):
    if final.name.startswith(prefix):
        os.kill(os.getpid(), signal.SIGSTOP)


if point == "archive opened":  # its temporary file exists, nothing written yet
    opened = writer.ArchiveWriter.__init__

    def init(self, final, compression):
        opened(self, final, compression)
        stop(final)

    writer.ArchiveWriter.__init__ = init
elif point == "large file added":  # a large upload is in the temporary file
    add_file = writer.ArchiveWriter.add_file

    def add(self, name, source, size, *args):
        sha = add_file(self, name, source, size, *args)
        if size >= 1024 * 1024:
            stop(self.final)
        return sha

    writer.ArchiveWriter.add_file = add
elif point == "published":  # the archive has its final name, not yet its sidecar
    publish = writer.publish

    def published(temporary, final):
        publish(temporary, final)
        stop(final)

    writer.publish = published
else:
    raise SystemExit(f"unknown stop point {point!r}")

from api.cli import main

main()
"""


def _popen_cli(
    app: App, *args: str, log: Path, stop_at: tuple[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The CLI as a subprocess; with `stop_at` (point, archive name prefix) it stops itself
    there (see STOPPING_CLI)."""
    launch = ["-m", "api"] if stop_at is None else ["-c", STOPPING_CLI, *stop_at]
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, *launch, *args],
            cwd=app.root,
            env=app.env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _stopped(process: subprocess.Popen[bytes], timeout: float = 120) -> bool:
    """Block until `process` stops itself (True) or exits (False, its returncode set).

    waitpid(WUNTRACED) returns the moment the process stops or ends; the thread only lets a
    process that does neither fail the test after `timeout` instead of hanging it.
    """
    statuses: list[int] = []
    waiter = threading.Thread(
        target=lambda: statuses.append(os.waitpid(process.pid, os.WUNTRACED)[1]), daemon=True
    )
    waiter.start()
    waiter.join(timeout)
    if not statuses:
        process.kill()
        waiter.join()
        process.wait()
        pytest.fail(f"the process neither stopped nor exited in {timeout} s")
    if os.WIFSTOPPED(statuses[0]):
        return True
    process.returncode = os.waitstatus_to_exitcode(statuses[0])  # reaped: tell Popen
    return False


def _kill_when_stopped(process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """kill -9 `process` once it has stopped itself at its stop point."""
    if not _stopped(process):
        pytest.fail(
            f"the process ended (exit {process.returncode}) before {what}:\n"
            f"{log.read_text(errors='replace')}"
        )
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def _list_json(app: App) -> dict[str, dict[str, object]]:
    result = app.cli("list", "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {str(row["name"]): row for row in rows}


# ---------------------------------------------------------------------------------------------
# 1. kill -9 during a backup never damages an earlier one (invariant 2)


@pytest.mark.parametrize(
    "kill_point",
    ["while the archive is being written", "once the archive has its final name"],
)
def test_kill_during_backup_leaves_earlier_backup_intact_and_is_recovered(
    app: App, tmp_path: Path, kill_point: str
) -> None:
    first = Path(app.cli("backup", "first", "--quiet").stdout.strip())
    sidecar = first.with_name(first.name + ".sha256")
    before = {path: _fingerprint(path) for path in (first, sidecar)}
    _add_random_files(app.uploads)

    point = "large file added" if kill_point.startswith("while") else "published"
    log = tmp_path / "second.log"
    process = _popen_cli(app, "backup", "second", "--quiet", log=log, stop_at=(point, "second."))
    _kill_when_stopped(process, log, kill_point)

    record = _record(app, "second")
    assert record is not None
    assert record[0] == "in_progress", f"killed {kill_point}, yet the record is {record}"
    for path, (digest, data) in before.items():
        assert path.read_bytes() == data, f"{path.name} changed when a later backup was killed"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    second = app.backups / "second.tar.gz"
    if kill_point.startswith("while"):
        assert not second.exists(), "a half-written archive is visible under its final name"
        assert not second.with_name("second.tar.gz.sha256").exists()
        assert _partials(app.backups), "the killed backup left no temporary file to clean up"

    _wait_lock_free(app)
    rows = _list_json(app)  # runs crash recovery first
    assert rows["second"]["status"] == "failed"
    assert "interrupted" in str(rows["second"]["errorMessage"])
    assert rows["first"]["status"] == "completed"
    assert _partials(app.backups) == [], "recovery left temporary files behind"
    assert not second.exists(), "recovery kept the archive of an interrupted backup"
    assert not second.with_name("second.tar.gz.sha256").exists()
    for path, (_digest, data) in before.items():
        assert path.read_bytes() == data
    verified = app.cli("verify", "first")
    assert verified.stdout.startswith("OK ")


# ---------------------------------------------------------------------------------------------
# 2./3. a restore interrupted around its commit point is undone or finished (invariant 4)


CHANGES_SQL = """
DELETE FROM public.invoices WHERE id % 3 = 0;
INSERT INTO public.clients (name, email) VALUES ('Late Arrival', 'late@example.test');
SELECT nextval('public.invoice_number_seq');
CREATE TABLE public.scratch (x integer);
"""


class _Restore:
    """The restore runner's steps up to the uploads swap, done by hand so we can stop anywhere."""

    def __init__(self, app: App, services: Services, archive: Path) -> None:
        self.id = uuid.uuid4().hex
        self.app = app
        self.services = services
        self.archive = archive
        uploads = app.uploads.absolute()
        # A mount-point UPLOADS_DIR is staged inside it (tests/restores/test_mount_restore.py).
        self.mode = swap.CONTENTS if swap.is_mount_point(uploads) else swap.RENAME
        if self.mode == swap.CONTENTS:
            with swap.keeping_mtime(uploads):
                self.staging = Staging(swap.contents_root(uploads, self.id))
        else:
            self.staging = Staging(uploads.parent / f".{uploads.name}.restore-{self.id}")
        self.database: DatabaseRestore | None = None
        self.journal: swap.Journal | None = None

    async def up_to_swap(self) -> None:
        self.app.sql(  # the runner's record of the restore; recovery marks what it finds
            "INSERT INTO nexus_backup.system_restore (id, archive_path, status, phase, dry_run, "
            f"forced, requested_by, started_at, created_at) VALUES ('{self.id}', "
            f"'{self.archive}', 'in_progress', 'restoring', false, false, 'cli', now(), now())"
        )
        verified = read_archive(
            self.archive,
            expected_sha256=read_sidecar(self.archive),
            checksum_source="sidecar",
            stage=self.staging,
        )
        self.staging.apply_metadata(verified)
        self.database = DatabaseRestore(
            self.app.url, self.services.settings, self.staging.database, self.id
        )
        self.journal = swap.new_journal(self.app.uploads.absolute(), self.id, self.mode)
        assert self.journal.staged == str(self.staging.uploads)
        await self.database.apply()
        swap.swap_in(self.journal, self.app.backups)

    async def crash(self) -> None:
        """What kill -9 of the whole process does to psql: its session just ends."""
        assert self.database is not None
        process = self.database._process
        assert process is not None
        if process.returncode is None:
            process.kill()
        await process.wait()
        if self.database._stderr_task is not None:
            await self.database._stderr_task

    @property
    def journal_file(self) -> Path:
        return swap.journal_path(self.app.backups, self.id)

    def record(self) -> tuple[str, str]:
        status, _, message = (
            self.app.sql(
                "SELECT status || '|' || coalesce(error_message, '') "
                f"FROM nexus_backup.system_restore WHERE id = '{self.id}'"
            )
            .strip()
            .partition("|")
        )
        return status, message


State = tuple[dict[str, tuple[object, ...]], tuple[str, str]]  # (uploads tree, database)


def _prepare_restore(app: App) -> tuple[Path, State, State]:
    """Back up, then change the live data; return (archive, state at backup, live state)."""
    archive = Path(app.cli("backup", "base", "--quiet").stdout.strip())
    at_backup = (tree_state(app.uploads), database_state(app))
    app.sql(CHANGES_SQL)
    (app.uploads / "added-after-backup.txt").write_text("not in the backup\n")
    victim = next(p for p in sorted(app.uploads.rglob("*")) if p.is_file())
    victim.unlink()
    live = (tree_state(app.uploads), database_state(app))
    assert live != at_backup
    return archive, at_backup, live


async def test_restore_killed_before_commit_is_undone_by_recovery(
    app: App, services: Services
) -> None:
    archive, at_backup, live = _prepare_restore(app)
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.journal_file.exists(), "the swap happened without a journal"
    assert tree_state(app.uploads) == at_backup[0], "the staged tree is not the one swapped in"

    await restore.crash()
    assert not await restore_committed(app.url, restore.id)
    notes = await recover(Operations(services))

    assert any("undid interrupted restore" in note for note in notes), notes
    assert tree_state(app.uploads) == live[0], "uploads were not put back after the crash"
    assert database_state(app) == live[1], "the database changed although nothing committed"
    assert not restore.journal_file.exists(), "recovery kept the journal"
    assert not restore.staging.root.exists(), "recovery left the staging folder behind"
    status, message = restore.record()
    assert status == "failed"
    assert "interrupted" in message


async def test_restore_killed_after_commit_is_finished_by_recovery(
    app: App, services: Services
) -> None:
    archive, at_backup, _live = _prepare_restore(app)
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.database is not None
    await restore.database.commit()
    await restore.crash()  # before discard_old and the journal's removal
    assert restore.journal_file.exists()
    assert restore.staging.uploads.exists(), "the old tree should still be parked"

    notes = await recover(Operations(services))

    assert any("finished interrupted restore" in note for note in notes), notes
    assert tree_state(app.uploads) == at_backup[0], "recovery did not keep the restored uploads"
    assert database_state(app) == at_backup[1], "recovery did not keep the restored database"
    assert not restore.journal_file.exists(), "recovery kept the journal"
    assert not restore.staging.root.exists(), "recovery kept the old uploads tree"


async def test_restore_finished_by_recovery_is_not_recorded_as_a_plain_failure(
    app: App, services: Services
) -> None:
    archive, at_backup, _live = _prepare_restore(app)
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.database is not None
    await restore.database.commit()
    await restore.crash()

    await recover(Operations(services))

    assert (tree_state(app.uploads), database_state(app)) == at_backup
    status, message = restore.record()
    # The database and the uploads ARE the backup's now; the record must not say otherwise.
    assert status == "completed" or "restored" in message, (status, message)


async def test_restore_whose_commit_is_still_in_flight_is_never_left_mixed(
    app: App, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of the process right after it sent COMMIT: psql, its child, lives on.

    SIGSTOP holds psql before it reads the COMMIT (as a slow COMMIT would, e.g. waiting for a
    synchronous standby), so recovery runs while the commit is still to come.
    """
    # Recovery waits this long for the orphaned session before it terminates it.
    monkeypatch.setattr(postgres, "SESSION_WAIT_SECONDS", 2.0)
    archive, at_backup, live = _prepare_restore(app)
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.database is not None
    process = restore.database._process
    assert process is not None
    assert process.stdin is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        process.stdin.write(b"COMMIT;\n\\q\n")  # what commit() sends; then the runner dies
        await process.stdin.drain()
        await recover(Operations(services))  # the next start, while psql has not yet run the COMMIT
    finally:
        os.kill(process.pid, signal.SIGCONT)
    # psql either ran the COMMIT first or found its session terminated by recovery.
    await asyncio.wait_for(process.wait(), timeout=60)
    await restore.crash()

    state = (tree_state(app.uploads), database_state(app))
    assert state in (live, at_backup), (
        "after recovery the uploads are "
        + ("as before" if state[0] == live[0] else "the backup's")
        + " but the database is "
        + ("as before" if state[1] == live[1] else "the backup's")
    )


def test_restore_killed_during_its_safety_backup_changes_nothing(app: App, tmp_path: Path) -> None:
    """kill -9 of `restore --yes` while it writes the pre_restore backup, then the next start."""
    archive = Path(app.cli("backup", "base", "--quiet").stdout.strip())
    app.sql(CHANGES_SQL)
    (app.uploads / "added-after-backup.txt").write_text("not in the backup\n")
    live = (tree_state(app.uploads), database_state(app))
    base = {path: _fingerprint(path) for path in app.backups.iterdir()}

    log = tmp_path / "r.log"
    process = _popen_cli(
        app,
        *("restore", str(archive), "--yes", "--quiet"),
        log=log,
        stop_at=("archive opened", "pre-restore-"),
    )
    _kill_when_stopped(process, log, "the pre_restore backup started writing")
    assert any(name.startswith(".pre-restore-") for name in _partials(app.backups))
    assert (tree_state(app.uploads), database_state(app)) == live

    _wait_lock_free(app)
    rows = _list_json(app)  # recovery
    (safety,) = [row for row in rows.values() if row["type"] == "pre_restore"]
    assert safety["status"] == "failed"
    assert "interrupted" in str(safety["errorMessage"])
    restores = app.sql(
        "SELECT status || '|' || coalesce(error_message, '') FROM nexus_backup.system_restore"
    ).splitlines()
    assert len(restores) == 1
    assert restores[0].startswith("failed|interrupted")
    assert (tree_state(app.uploads), database_state(app)) == live, "a killed restore changed data"
    assert {path: _fingerprint(path) for path in app.backups.iterdir()} == base
    staging = [p.name for p in app.uploads.parent.iterdir() if ".restore-" in p.name]
    assert staging == [], "recovery left the restore's staging folder"


# ---------------------------------------------------------------------------------------------
# 4. one mutation at a time (invariant 9)


def _archives(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if ".tar." in p.name)


async def test_backup_is_refused_while_another_process_holds_the_mutation_lock(
    app: App, services: Services
) -> None:
    lock = MutationLock(services.engine)
    assert await lock.try_acquire()
    try:
        result = app.cli("backup", "x", check=False)
    finally:
        await lock.release()
    assert result.returncode != 0
    assert "another backup or restore is running" in result.stderr, result.stderr
    assert _archives(app.backups) == []
    assert _record(app, "x") is None, "a refused backup left a catalog record"


async def test_restore_is_refused_while_another_process_holds_the_mutation_lock(
    app: App, services: Services
) -> None:
    archive = Path(app.cli("backup", "base", "--quiet").stdout.strip())
    app.sql(CHANGES_SQL)
    (app.uploads / "added-after-backup.txt").write_text("not in the backup\n")
    live = (tree_state(app.uploads), database_state(app))
    archives = _archives(app.backups)

    lock = MutationLock(services.engine)
    assert await lock.try_acquire()
    try:
        result = app.cli("restore", str(archive), "--yes", check=False)
    finally:
        await lock.release()

    assert result.returncode != 0
    assert "another backup or restore is running" in result.stderr, result.stderr
    assert tree_state(app.uploads) == live[0], "a refused restore changed the uploads"
    assert database_state(app) == live[1], "a refused restore changed the database"
    assert _archives(app.backups) == archives, "a refused restore took a safety backup"
    assert app.sql("SELECT count(*) FROM nexus_backup.system_restore").strip() == "0"
    siblings = [p.name for p in app.uploads.parent.iterdir() if ".restore-" in p.name]
    assert siblings == [], "a refused restore staged files"


def test_two_backups_started_together_one_runs_one_is_refused(app: App, tmp_path: Path) -> None:
    # Each stops itself once it has opened its archive: if both could write at once, both
    # would stop there.
    processes = {
        name: _popen_cli(
            app,
            *("backup", name, "--quiet"),
            log=tmp_path / f"{name}.log",
            stop_at=("archive opened", f"{name}."),
        )
        for name in ("left", "right")
    }
    writing = [name for name, process in processes.items() if _stopped(process)]
    # .left.database.sql.partial-*, .left.tar.gz.partial-*: which backups are writing
    being_written = {name[1:].split(".")[0] for name in _partials(app.backups)}
    for name in writing:
        os.kill(processes[name].pid, signal.SIGCONT)
        processes[name].wait(timeout=120)
    assert len(writing) == 1, f"{writing} were writing their archives at once"
    assert being_written == set(writing), f"partial files of {being_written} while {writing} ran"
    codes = {name: p.returncode for name, p in processes.items()}
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in processes}
    winners = [name for name, code in codes.items() if code == 0]
    assert len(winners) == 1, f"exit codes {codes}; output {logs}"
    (loser,) = set(processes) - set(winners)
    # Either the generic refusal, or one naming the winner ("backup 'left' (...) is
    # in_progress; wait for it to finish"), depending on how far the winner had got.
    assert re.search(
        rf"another backup or restore is running|backup '{winners[0]}' .* is "
        r"(pending|in_progress); wait for it to finish",
        logs[loser],
    ), logs[loser]
    assert _archives(app.backups) == [f"{winners[0]}.tar.gz", f"{winners[0]}.tar.gz.sha256"]
    rows = _list_json(app)
    assert rows[winners[0]]["status"] == "completed"
    assert loser not in rows, "the refused backup left a catalog record"


# ---------------------------------------------------------------------------------------------
# 5. startup recovery marks what a dead process left, but never touches a live one's work


def _insert_in_progress(app: App, name: str) -> str:
    backup_id = str(uuid.uuid4())
    app.sql(
        "INSERT INTO nexus_backup.system_backup (id, name, type, status, compression, "
        "is_cloud_synced, progress_bytes, created_at, started_at, phase) VALUES "
        f"('{backup_id}', '{name}', 'manual', 'in_progress', 'gzip', false, 12345, now(), "
        "now(), 'writing archive')"
    )
    return backup_id


async def test_startup_recovery_marks_abandoned_backup_failed_and_removes_partials(
    app: App, services: Services
) -> None:
    backup_id = _insert_in_progress(app, "x")
    app.backups.mkdir(parents=True, exist_ok=True)
    stray = app.backups / f".x.tar.gz{PARTIAL_MARK}abc"
    stray.write_bytes(b"half an archive")

    result = app.cli("list")

    assert "interrupted" in result.stderr, "recovery should say what it did"
    assert _record(app, "x") == (
        "failed",
        "interrupted: the process running it stopped before it finished",
    )
    assert not stray.exists(), "recovery left the partial file"
    audit = app.sql(
        "SELECT actor || '|' || action || '|' || outcome || '|' || (detail->>'error') "
        f"FROM nexus_backup.audit_log WHERE target = 'x' AND detail->>'id' = '{backup_id}'"
    ).splitlines()
    assert len(audit) == 1, audit
    actor, action, outcome, error = audit[0].split("|")
    assert (actor, action, outcome) == ("system", "backup.run", "failed")
    assert "interrupted" in error


async def test_startup_recovery_leaves_a_live_backup_alone_while_the_lock_is_held(
    app: App, services: Services
) -> None:
    _insert_in_progress(app, "live")
    app.backups.mkdir(parents=True, exist_ok=True)
    being_written = app.backups / f".live.tar.gz{PARTIAL_MARK}abc"
    being_written.write_bytes(b"still being written")

    lock = MutationLock(services.engine)
    assert await lock.try_acquire()
    try:
        app.cli("list")
        assert _record(app, "live") == ("in_progress", "")
        assert being_written.exists(), "recovery removed a live backup's temporary file"
    finally:
        await lock.release()

    app.cli("list")  # the holder is gone: now it is abandoned
    assert _record(app, "live") == (
        "failed",
        "interrupted: the process running it stopped before it finished",
    )
    assert not being_written.exists()
