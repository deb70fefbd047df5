"""Fault points (api/faults.py): the real CLI SIGKILLs itself at each named point, then the next
command (which runs recovery first) must leave earlier archives byte-identical, no partial that
looks complete, the interrupted run failed, the live data entirely before or entirely after a
restore, and the next operation working (SPEC section 8, invariants 2 and 4; issue #13 item 2).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
from pathlib import Path

import pytest

from api import faults
from api.errors import ConfigError
from api.sources.postgres import restore_session_name
from tests.conftest import App, cloud_settings, database_state, tree_state
from tests.operations.test_crash import (
    _add_random_files,
    _list_json,
    _partials,
    _prepare_restore,
    _wait_lock_free,
)
from tests.s3server import S3Server

ROOT = Path(__file__).resolve().parents[2]
KILLED = -signal.SIGKILL


# ---------------------------------------------------------------------------------------------
# the registry and its guards


def test_every_registered_fault_point_is_called_somewhere_in_api() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "api").rglob("*.py"))
    called = set(re.findall(r"faults\.point\(\"([a-z_.]+)\"\)", source))
    assert called == set(faults.POINTS), (
        f"registered but never called: {sorted(set(faults.POINTS) - called)}; "
        f"called but not registered: {sorted(called - set(faults.POINTS))}"
    )


def test_point_does_nothing_when_no_fault_point_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.POINT_VARIABLE, raising=False)
    for name in faults.POINTS:
        faults.point(name)  # still alive
    monkeypatch.setenv(faults.POINT_VARIABLE, "backup.after_dump")
    faults.point("restore.mid_load")  # another point: still alive


def test_an_unknown_fault_point_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as refused:
        faults.check({faults.POINT_VARIABLE: "backup.somewhere"})
    for name in faults.POINTS:
        assert name in refused.value.detail


def test_an_unknown_fault_action_is_refused() -> None:
    with pytest.raises(ConfigError, match="kill, stop"):
        faults.check(
            {faults.POINT_VARIABLE: "backup.after_dump", faults.ACTION_VARIABLE: "explode"}
        )


def test_production_refuses_to_start_with_a_fault_point(app: App) -> None:
    result = app.cli(
        "list", check=False, NEXUS_ENV="production", NEXUS_FAULT_POINT="backup.after_dump"
    )
    assert result.returncode != 0
    assert "NEXUS_FAULT_POINT is set" in result.stderr, result.stderr
    assert "tests only" in result.stderr


def test_the_cli_refuses_an_unknown_fault_point(app: App) -> None:
    result = app.cli("list", check=False, NEXUS_FAULT_POINT="backup.nowhere")
    assert result.returncode == 1
    assert "backup.after_dump" in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# helpers


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in the backup folder, by name."""
    if not folder.is_dir():
        return {}
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


def _killed(result_returncode: int, output: str, point: str) -> None:
    assert result_returncode == KILLED, (
        f"the process was to SIGKILL itself at {point}, but exited {result_returncode}:\n{output}"
    )


def _no_partial_looks_complete(app: App) -> None:
    """No temporary file is left, and every archive in the folder has a completed record."""
    assert _partials(app.backups) == [], "recovery left temporary files"
    completed = {
        Path(str(row["filePath"])).name
        for row in _list_json(app).values()
        if row["status"] == "completed" and row["filePath"]
    }
    archives = {p.name for p in app.backups.iterdir() if p.name.endswith((".tar.gz", ".tar.zst"))}
    assert archives <= completed, f"archives without a completed record: {archives - completed}"
    sidecars = {p.name[: -len(".sha256")] for p in app.backups.glob("*.sha256")}
    assert sidecars <= completed, f"sidecars without a completed archive: {sidecars - completed}"


# ---------------------------------------------------------------------------------------------
# backups: a killed backup is failed, removed, and harms no earlier one


@pytest.mark.parametrize(
    "point",
    [
        "backup.after_dump",
        "backup.mid_archive",
        "backup.before_publish",
        "backup.after_publish",
    ],
)
def test_backup_killed_at_fault_point_is_failed_and_harms_no_earlier_archive(
    app: App, point: str
) -> None:
    app.cli("backup", "first", "--quiet")
    earlier = _digests(app.backups)
    assert set(earlier) == {"first.tar.gz", "first.tar.gz.sha256"}

    killed = app.cli("backup", "second", "--quiet", check=False, NEXUS_FAULT_POINT=point)
    _killed(killed.returncode, killed.stderr, point)
    if point == "backup.after_publish":
        # the kill really came after the publish: the archive is there, its record is not done
        assert (app.backups / "second.tar.gz").exists()
    elif point != "backup.after_dump":
        assert any(name.startswith(".second.tar.gz") for name in _partials(app.backups))

    _wait_lock_free(app)
    rows = _list_json(app)  # the next command: recovery runs first
    assert rows["second"]["status"] == "failed", rows["second"]
    assert "interrupted" in str(rows["second"]["errorMessage"])
    assert rows["first"]["status"] == "completed"
    assert _digests(app.backups) == earlier, "the earlier archive changed or a new file stayed"
    _no_partial_looks_complete(app)

    path = Path(app.cli("backup", "third", "--quiet").stdout.strip())
    assert path.name == "third.tar.gz"
    assert app.cli("verify", "third").stdout.startswith("OK ")
    assert _list_json(app)["third"]["status"] == "completed"
    after = _digests(app.backups)
    assert {k: after[k] for k in earlier} == earlier


def _kill_orphaned_psql(app: App) -> None:
    """A restore killed before the FIFO of its dump was opened leaves its psql blocked opening
    it (recovery ended its server session; the process is not the product's to find): end it,
    so that the test leaves no process behind."""
    (restore_id,) = app.sql("SELECT id FROM nexus_backup.system_restore").split()
    wanted = f"PGAPPNAME={restore_session_name(restore_id)}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# restores: a killed restore leaves the live data entirely as it was; the retry restores it


@pytest.mark.parametrize(
    "point", ["restore.mid_load", "restore.before_swap", "restore.before_commit"]
)
def test_restore_killed_at_fault_point_changes_nothing_and_the_retry_works(
    app: App, point: str
) -> None:
    archive, at_backup, live = _prepare_restore(app)
    earlier = _digests(app.backups)

    killed = app.cli(
        "restore", str(archive), "--yes", "--quiet", check=False, NEXUS_FAULT_POINT=point
    )
    _killed(killed.returncode, killed.stderr, point)
    if point == "restore.before_commit":
        # the kill really came after the swap: the backup's uploads are in place, uncommitted
        assert tree_state(app.uploads) == at_backup[0]

    _wait_lock_free(app)
    app.cli("list")  # the next command: recovery undoes the uncommitted restore
    _kill_orphaned_psql(app)
    state = (tree_state(app.uploads), database_state(app))
    assert state[0] == live[0], "the uploads are not as they were before the killed restore"
    assert state[1] == live[1], "the database is not as it was before the killed restore"
    restores = app.sql(
        "SELECT status || '|' || coalesce(error_message, '') FROM nexus_backup.system_restore"
    ).splitlines()
    assert len(restores) == 1
    assert restores[0].startswith("failed|interrupted"), restores
    now = _digests(app.backups)
    assert {k: now[k] for k in earlier} == earlier, "an earlier archive changed"
    _no_partial_looks_complete(app)  # the safety backup it took is complete and recorded
    staging = [p.name for p in app.uploads.parent.iterdir() if ".restore-" in p.name]
    assert staging == [], "recovery left the restore's staging folder"

    app.cli("restore", str(archive), "--yes", "--quiet")  # the same restore, again
    assert tree_state(app.uploads) == at_backup[0]
    assert database_state(app) == at_backup[1]


# ---------------------------------------------------------------------------------------------
# sync: a killed upload leaves the backup completed, its sync pending, and the next sync works


def _cloud_env(s3: S3Server, bucket: str) -> dict[str, str]:
    return {key.upper(): str(value) for key, value in cloud_settings(s3, bucket).items()}


async def test_sync_killed_mid_upload_leaves_the_backup_and_the_next_sync_works(
    app: App, s3: S3Server, bucket: str
) -> None:
    env = _cloud_env(s3, bucket)
    _add_random_files(app.uploads, count=1, megabytes=12)  # > 2 parts of 5 MiB
    app.cli("backup", "first", "--quiet", **env)
    earlier = _digests(app.backups)

    killed = app.cli("sync", "first", check=False, NEXUS_FAULT_POINT="sync.mid_upload", **env)
    _killed(killed.returncode, killed.stderr, "sync.mid_upload")
    assert await s3.pending_uploads(bucket), "the kill came before the multipart upload began"

    _wait_lock_free(app)
    row = _list_json(app)["first"]  # recovery
    assert row["status"] == "completed"
    assert _digests(app.backups) == earlier
    sync_status = app.sql(
        "SELECT sync_status FROM nexus_backup.system_backup WHERE name = 'first'"
    ).strip()
    assert sync_status == "pending", f"the interrupted sync is {sync_status!r}, not pending"

    synced = app.cli("sync", "first", check=False, **env)
    assert synced.returncode == 0, synced.stderr
    assert "synced to" in synced.stdout
