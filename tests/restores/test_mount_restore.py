"""Restore into a mount-point UPLOADS_DIR, as in production where it is a Docker volume.

UPLOADS_DIR is a real tmpfs mount in these tests. The archive is staged inside the mount and
the top-level entries are moved, never the mount (api/restores/swap.py, the contents swap),
under a journal whose phase says which side every entry is on. A kill at any point, also in
the middle of a phase, is finished (the restore committed) or undone (it did not) by the next
start's recovery, to exactly the state after or before, as the rename swap's are in
tests/operations/test_crash.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from api.archive.reader import read_archive
from api.errors import UnsafePath
from api.operations import Operations
from api.operations.recovery import recover
from api.restores import swap
from api.services import Services
from api.sources import postgres
from api.sources.postgres import restore_committed
from tests.archive.builders import build_v1
from tests.conftest import App, database_state, run_server, tree_state
from tests.operations.test_crash import (
    CHANGES_SQL,
    _kill_when_stopped,
    _list_json,
    _partials,
    _popen_cli,
    _prepare_restore,
    _Restore,
    _wait_lock_free,
)
from tests.test_confinement import _recover_refusing, _refusals, _restore_row, _write_journal

State = tuple[dict[str, tuple[object, ...]], tuple[str, str]]


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


def _mount_tmpfs(folder: Path) -> None:
    # Room for the uploads, their staged copy and the 64 MiB a restore keeps free
    # (api.archive.reader.STAGING_RESERVE_BYTES); tmpfs takes memory only for what it holds.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(folder)], check=True)


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], check=True)  # something still open


@pytest.fixture
def mounted(app: App) -> Iterator[App]:
    """`app` whose UPLOADS_DIR is a tmpfs mount point holding the demo uploads, plus top-level
    files and an empty folder (so a swap moves entries of every kind); unmounted at the end."""
    uploads = app.uploads
    copy = uploads.with_name("uploads-unmounted")
    uploads.rename(copy)
    uploads.mkdir()
    uploads.parent.chmod(0o755)  # searchable by postgres, like the rest of the path
    _mount_tmpfs(uploads)
    try:
        shutil.copytree(copy, uploads, copy_function=shutil.copy2, dirs_exist_ok=True)
        (uploads / "logo.png").write_bytes(b"\x89PNG not really\n")
        (uploads / "notes.txt").write_text("a top-level file\n")
        (uploads / "empty").mkdir(mode=0o750)
        shutil.copystat(copy, uploads)  # the root's mode and mtime, after the writes
        shutil.rmtree(copy)
        assert os.path.ismount(uploads)
        yield app
    finally:
        _unmount(uploads)


def _top(state: dict[str, tuple[object, ...]]) -> list[str]:
    return sorted(name for name in state if name != "." and "/" not in name)


def _staging_left(app: App) -> list[str]:
    return sorted(name for name in os.listdir(app.uploads) if name.startswith(".nexus-restore-"))


def _prepare(app: App) -> tuple[Path, State, State]:
    """`_prepare_restore`, and the mount's mode changed too: a restore gives it the backup's."""
    archive, at_backup, _live = _prepare_restore(app)
    os.chmod(app.uploads, 0o750)
    live = (tree_state(app.uploads), database_state(app))
    assert live[0]["."][1] == 0o750
    assert at_backup[0]["."][1] == 0o755
    return archive, at_backup, live


def _assert_exactly(app: App, expected: State, what: str) -> None:
    state = (tree_state(app.uploads), database_state(app))
    assert state[0] == expected[0], f"the uploads are not exactly {what}"
    assert state[1] == expected[1], f"the database is not exactly {what}"
    assert os.path.ismount(app.uploads), "UPLOADS_DIR is no longer a mount point"
    assert _staging_left(app) == [], "a staging folder survived"
    assert list(app.backups.glob(".restore-*.journal*")) == [], "a journal survived"


class Killed(BaseException):
    """kill -9 at this point: the code stops; nothing after it (no finally of the swap) runs."""


@contextmanager
def _killed_before(event: int) -> Iterator[list[str]]:
    """Raise Killed before the `event`-th step (0-based) of the swap code: a journal write, an
    entry moved, a staging folder removed, UPLOADS_DIR's metadata set. Yields the steps run."""
    steps: list[str] = []
    real = {
        "_move": swap._move,
        "remove_tree": swap.remove_tree,
        "_set_root": swap._set_root,
    }
    real_write = swap.Journal.write

    def step(name: str) -> None:
        if len(steps) == event:
            raise Killed(f"before step {event} ({name}); ran {steps}")
        steps.append(name)

    def hooked(name: str) -> Callable[..., None]:
        def call(*args: object) -> None:
            step(name)
            real[name](*args)

        return call

    def write(self: swap.Journal, folder: Path) -> None:
        step(f"journal {self.phase or self.mode}")
        real_write(self, folder)

    with pytest.MonkeyPatch.context() as patch:
        for name in real:
            patch.setattr(swap, name, hooked(name))
        patch.setattr(swap.Journal, "write", write)
        yield steps


# ---------------------------------------------------------------------------------------------
# 1. the rename swap's fault tests, with UPLOADS_DIR a mount point


async def test_mount_restore_killed_before_commit_is_undone_by_recovery(
    mounted: App, services: Services
) -> None:
    app = mounted
    archive, at_backup, live = _prepare(app)
    restore = _Restore(app, services, archive)
    assert restore.mode == swap.CONTENTS
    await restore.up_to_swap()
    assert restore.journal_file.exists(), "the swap happened without a journal"
    uploads = {k: v for k, v in tree_state(app.uploads).items() if ".nexus-restore-" not in k}
    del uploads["."]  # the mount's own mode and mtime are given after the commit
    assert uploads == {k: v for k, v in at_backup[0].items() if k != "."}, (
        "the staged entries are not the ones swapped in"
    )

    await restore.crash()
    assert not await restore_committed(app.url, restore.id)
    notes = await recover(Operations(services))

    assert any("undid interrupted restore" in note for note in notes), notes
    _assert_exactly(app, live, "as before the restore")
    status, message = restore.record()
    assert status == "failed"
    assert "interrupted" in message


async def test_mount_restore_killed_after_commit_is_finished_by_recovery(
    mounted: App, services: Services
) -> None:
    app = mounted
    archive, at_backup, _live = _prepare(app)
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.database is not None
    await restore.database.commit()
    await restore.crash()  # before discard_old and the journal's removal
    assert restore.journal_file.exists()
    assert (restore.staging.root / "old").is_dir(), "the old entries should still be parked"

    notes = await recover(Operations(services))

    assert any("finished interrupted restore" in note for note in notes), notes
    _assert_exactly(app, at_backup, "the backup's")


async def test_mount_restore_finished_by_recovery_is_not_recorded_as_a_plain_failure(
    mounted: App, services: Services
) -> None:
    app = mounted
    archive, at_backup, _live = _prepare(app)
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.database is not None
    await restore.database.commit()
    await restore.crash()

    await recover(Operations(services))

    _assert_exactly(app, at_backup, "the backup's")
    assert restore.record() == ("completed", "")


async def test_mount_restore_whose_commit_is_still_in_flight_is_never_left_mixed(
    mounted: App, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As test_crash's: psql outlives the killed process, held before it reads the COMMIT."""
    app = mounted
    monkeypatch.setattr(postgres, "SESSION_WAIT_SECONDS", 2.0)
    archive, at_backup, live = _prepare(app)
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.database is not None
    process = restore.database._process
    assert process is not None
    assert process.stdin is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        process.stdin.write(b"COMMIT;\n\\q\n")
        await process.stdin.drain()
        await recover(Operations(services))
    finally:
        os.kill(process.pid, signal.SIGCONT)
    await process.wait()
    await restore.crash()

    state = (tree_state(app.uploads), database_state(app))
    names = {id(live): "as before", id(at_backup): "the backup's"}
    uploads = next((names[id(s)] for s in (live, at_backup) if s[0] == state[0]), "mixed")
    database = next((names[id(s)] for s in (live, at_backup) if s[1] == state[1]), "mixed")
    assert state in (live, at_backup), f"the uploads are {uploads}, the database {database}"
    assert os.path.ismount(app.uploads)
    assert _staging_left(app) == []


def test_mount_restore_killed_during_its_safety_backup_changes_nothing(
    mounted: App, tmp_path: Path
) -> None:
    """kill -9 of `restore --yes` while the staging folder is inside the mount."""
    app = mounted
    archive = Path(app.cli("backup", "base", "--quiet").stdout.strip())
    app.sql(CHANGES_SQL)
    (app.uploads / "added-after-backup.txt").write_text("not in the backup\n")
    live = (tree_state(app.uploads), database_state(app))

    log = tmp_path / "r.log"
    process = _popen_cli(
        app,
        *("restore", str(archive), "--yes", "--quiet"),
        log=log,
        stop_at=("archive opened", "pre-restore-"),
    )
    _kill_when_stopped(process, log, "the pre_restore backup started writing")
    assert _staging_left(app), "the restore should be staging inside the mount"
    assert any(name.startswith(".pre-restore-") for name in _partials(app.backups))

    _wait_lock_free(app)
    _list_json(app)  # recovery
    _assert_exactly(app, live, "as before the restore")


# ---------------------------------------------------------------------------------------------
# 2. kills in the middle of the contents swap, before and after the commit


def _forward_kill_points(n_old: int, n_new: int) -> dict[str, int]:
    """Steps of swap_in: journal (parking), n_old moves, journal (placing), n_new moves."""
    return {
        "parking, none moved": 1,
        "parking, one moved": 2,
        "parking, all but one moved": n_old,
        "parking, all moved, journal not yet updated": n_old + 1,
        "placing, none moved": n_old + 2,
        "placing, one moved": n_old + 3,
        "placing, all but one moved": n_old + n_new + 1,
    }


FORWARD_POINTS = list(_forward_kill_points(5, 5))


@pytest.mark.parametrize("committed", [False, True], ids=["not committed", "committed"])
@pytest.mark.parametrize("point", FORWARD_POINTS)
async def test_mount_swap_killed_midway_is_undone_or_finished_exactly(
    mounted: App, services: Services, point: str, committed: bool
) -> None:
    app = mounted
    archive, at_backup, live = _prepare(app)
    n_old, n_new = len(_top(live[0])), len(_top(at_backup[0]))
    assert min(n_old, n_new) >= 4, "too few top-level entries to stop in the middle"
    event = _forward_kill_points(n_old, n_new)[point]
    restore = _Restore(app, services, archive)
    with _killed_before(event) as steps, pytest.raises(Killed):
        await restore.up_to_swap()
    # The kill landed where it is said to: k entries moved, the journal in that phase.
    moved = steps.count("_move")
    parked = restore.staging.root / "old"
    placed = sorted(set(os.listdir(app.uploads)) - {restore.staging.root.name})
    phase = swap.load(restore.journal_file).phase
    if point.startswith("parking"):
        assert (phase, sorted(os.listdir(parked))) == (swap.PARKING, _top(live[0])[:moved]), steps
    else:
        assert (phase, len(os.listdir(parked))) == (swap.PLACING, n_old), steps
        assert placed == _top(at_backup[0])[: moved - n_old], steps
    assert restore.database is not None
    if committed:  # the database's commit decides, wherever the swap stopped
        await restore.database.commit()
    await restore.crash()

    notes = await recover(Operations(services))

    if committed:
        assert any("finished interrupted restore" in note for note in notes), notes
        _assert_exactly(app, at_backup, "the backup's")
        assert restore.record() == ("completed", "")
    else:
        assert any("undid interrupted restore" in note for note in notes), notes
        _assert_exactly(app, live, "as before the restore")
        assert restore.record()[0] == "failed"


def _backward_kill_points(n_old: int, n_new: int) -> dict[str, int]:
    """Steps of swap_back from a complete swap: n_new moves back into the staging folder,
    journal (parking), n_old moves back into UPLOADS_DIR, staging folder removed, mtime."""
    return {
        "taking back, one moved": 1,
        "taking back, all moved, journal not yet updated": n_new,
        "putting back, none moved": n_new + 1,
        "putting back, one moved": n_new + 2,
        "putting back, all moved": n_new + 1 + n_old,
        "staging folder removed, mtime not yet given back": n_new + n_old + 2,
    }


@pytest.mark.parametrize("rerun_by", ["runner", "recovery"])
@pytest.mark.parametrize("point", list(_backward_kill_points(5, 5)))
async def test_mount_swap_killed_while_being_undone_is_undone_exactly(
    mounted: App, services: Services, point: str, rerun_by: str
) -> None:
    """The undo is stopped too (the runner's after a failed commit, or recovery's own), and
    the next recovery completes it."""
    app = mounted
    archive, at_backup, live = _prepare(app)
    event = _backward_kill_points(len(_top(live[0])), len(_top(at_backup[0])))[point]
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.journal is not None
    if rerun_by == "runner":  # the commit failed: the runner rolls back and swaps back
        assert restore.database is not None
        await restore.database.rollback()
        with _killed_before(event), pytest.raises(Killed):
            swap.swap_back(restore.journal, app.backups)
    else:  # killed, then recovery is killed while it undoes
        await restore.crash()
        with _killed_before(event), pytest.raises(Killed):
            await recover(Operations(services))
    await restore.crash()

    notes = await recover(Operations(services))

    assert any("undid interrupted restore" in note for note in notes), notes
    _assert_exactly(app, live, "as before the restore")


@pytest.mark.parametrize(
    "point", ["before the old entries go", "in the middle of removing them", "before the mtime"]
)
async def test_mount_restore_killed_while_discarding_after_commit_is_finished_exactly(
    mounted: App, services: Services, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = mounted
    archive, at_backup, _live = _prepare(app)
    restore = _Restore(app, services, archive)
    await restore.up_to_swap()
    assert restore.database is not None
    assert restore.journal is not None
    await restore.database.commit()
    await restore.crash()
    if point == "in the middle of removing them":
        rmtree = shutil.rmtree

        def partly(path: str | Path, ignore_errors: bool = False) -> None:
            parked = Path(path) / "old"
            rmtree(parked / sorted(os.listdir(parked))[0])
            raise Killed("in the middle of removing the parked entries")

        monkeypatch.setattr(swap.shutil, "rmtree", partly)
        with pytest.raises(Killed):
            swap.discard_old(restore.journal)
        monkeypatch.undo()
    else:
        event = 0 if point == "before the old entries go" else 1
        with _killed_before(event), pytest.raises(Killed):
            swap.discard_old(restore.journal)

    notes = await recover(Operations(services))

    assert any("finished interrupted restore" in note for note in notes), notes
    _assert_exactly(app, at_backup, "the backup's")


# ---------------------------------------------------------------------------------------------
# 3. whole restores: CLI and the service as production runs it


def test_cli_restore_into_a_mount_point_and_back(mounted: App) -> None:
    app = mounted
    archive, at_backup, live = _prepare(app)

    app.cli("restore", str(archive), "--yes", "--quiet")

    _assert_exactly(app, at_backup, "the backup's")
    (safety,) = [row for row in _list_json(app).values() if row["type"] == "pre_restore"]
    names = read_archive(Path(str(safety["filePath"]))).members
    assert not [n for n in names if ".nexus-restore-" in n], "the safety backup took staging"
    # Invariant 4: restoring the pre_restore backup gives back the state before.
    app.cli("restore", str(safety["name"]), "--yes", "--quiet")
    _assert_exactly(app, live, "as before the first restore")


def test_a_staging_folder_in_the_mount_is_never_taken_for_uploads(mounted: App) -> None:
    app = mounted
    planted = app.uploads / ".nexus-restore-planted"
    before = tree_state(app.uploads)
    (planted / "deep").mkdir(parents=True)
    (planted / "deep" / "not-an-upload.txt").write_text("staging\n")
    (app.uploads / "2024" / ".nexus-restore-x").write_text("a real upload, below the top\n")
    os.utime(app.uploads, ns=(before["."][2], before["."][2]))  # type: ignore[arg-type]

    archive = Path(app.cli("backup", "with-staging", "--quiet").stdout.strip())
    names = read_archive(archive).members
    assert "uploads/2024/.nexus-restore-x" in names
    assert not [n for n in names if n.startswith("uploads/.nexus-restore-")], names

    plan = app.cli("restore", str(archive), "--dry-run").stdout
    assert "files that would be removed: 0" in plan, plan
    assert "files that would be added: 0" in plan, plan

    app.cli("list")  # recovery removes the leftover, keeping the mount's mtime
    assert not planted.exists()
    (app.uploads / "2024" / ".nexus-restore-x").unlink()
    os.utime(app.uploads / "2024", ns=(before["2024"][2], before["2024"][2]))  # type: ignore[arg-type]
    assert tree_state(app.uploads) == before


def test_an_archive_holding_a_staging_folder_name_is_refused_before_anything_changes(
    mounted: App, tmp_path: Path
) -> None:
    app = mounted
    crafted = build_v1(
        tmp_path / "crafted.tar.gz", {".nexus-restore-abc/x.txt": b"x", "ok.txt": b"ok"}
    )
    live = (tree_state(app.uploads), database_state(app))
    result = app.cli("restore", str(crafted.path), "--yes", "--force", check=False)
    assert result.returncode != 0
    assert "staging folder" in result.stderr, result.stderr
    _assert_exactly(app, live, "as before")


def test_production_service_restores_into_a_mounted_uploads_volume(
    mounted: App, tmp_path: Path
) -> None:
    """`nexus-backup serve` as production runs it, UPLOADS_DIR a real mount point: back up over
    the API, change the data, restore over the API."""
    app = mounted
    app.backups.mkdir(parents=True, exist_ok=True)
    env = {"NEXUS_ENV": "production", "NEXUS_JWT_SECRET": secrets.token_hex(32)}
    assert len(env["NEXUS_JWT_SECRET"]) == 64
    token = app.cli("tokens", "create", "--name", "e2e", **env).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    with (
        run_server(app, tmp_path / "server.log", **env) as server,
        httpx.Client(base_url=server.base, headers=headers, timeout=300) as client,
    ):
        made = client.post("/backups", params={"wait": "true"}, json={"name": "nightly"})
        assert made.status_code == 201, made.text
        at_backup = (tree_state(app.uploads), database_state(app))

        app.sql(CHANGES_SQL)
        (app.uploads / "added-after-backup.txt").write_text("not in the backup\n")
        shutil.rmtree(app.uploads / "2023")
        live = (tree_state(app.uploads), database_state(app))
        assert live != at_backup

        started = client.post(f"/backups/{made.json()['id']}/restore", json={"confirm": "nightly"})
        assert started.status_code == 202, started.text
        _wait_lock_free(app, timeout_seconds=240)  # the restore holds it until it ends
        record = client.get(f"/restores/{started.json()['id']}").json()
        assert record["status"] == "completed", record
    _assert_exactly(app, at_backup, "the backup's")


# ---------------------------------------------------------------------------------------------
# 4. a contents swap's journal is untrusted input too


def _contents_staging(app: App, restore_id: str) -> Path:
    """The staging folder of an interrupted contents swap (placing): staged tree, parked
    entries."""
    uploads = app.uploads.absolute()
    with swap.keeping_mtime(uploads):
        swap.contents_staged(uploads, restore_id).mkdir(parents=True, mode=0o700)
        parked = swap.contents_parked(uploads, restore_id)
        parked.mkdir(mode=0o700)
        (parked / "old.txt").write_text("parked\n")
    return swap.contents_root(uploads, restore_id)


def _contents_data(app: App, restore_id: str, **changes: object) -> dict[str, object]:
    """A contents swap's journal, as the runner writes it (before the swap's first move)."""
    uploads = app.uploads.absolute()
    staged = swap.contents_staged(uploads, restore_id)
    data: dict[str, object] = {
        "restore_id": restore_id,
        "uploads_dir": str(uploads),
        "staged": str(staged),
        "staged_inode": os.stat(staged).st_ino if staged.exists() else 1,
        "uploads_existed": True,
        "mode": swap.CONTENTS,
        "phase": swap.PLACING,
        "parked": str(swap.contents_parked(uploads, restore_id)),
        "old_mtime_ns": os.stat(uploads).st_mtime_ns,
        "new_mode": 0o755,
        "new_mtime_ns": 1_700_000_000_000_000_000,
    }
    data.update(changes)
    return data


async def _forged(app: App, services: Services, restore_id: str, data: dict[str, object]) -> Path:
    journal = swap.journal_path(app.backups, restore_id)
    _write_journal(journal, data)
    await _recover_refusing(app, services, journal)
    return journal


async def test_a_legitimate_contents_journal_is_acted_on(mounted: App, services: Services) -> None:
    """The checks accept what the runner writes (the baseline of every refusal below)."""
    app = mounted
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    before = tree_state(app.uploads)
    _contents_staging(app, restore_id)
    data = _contents_data(app, restore_id, phase=swap.PARKING)
    _write_journal(swap.journal_path(app.backups, restore_id), data)

    notes = await recover(Operations(services))

    assert any("undid interrupted restore" in note for note in notes), notes
    assert (app.uploads / "old.txt").read_text() == "parked\n"
    (app.uploads / "old.txt").unlink()
    os.utime(app.uploads, ns=(0, before["."][2]))  # type: ignore[arg-type]
    assert tree_state(app.uploads) == before
    assert _refusals(app) == []


@pytest.mark.parametrize("field", ["uploads_dir", "staged", "parked"])
async def test_a_contents_journal_naming_other_paths_is_refused(
    mounted: App, services: Services, field: str
) -> None:
    app = mounted
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    _contents_staging(app, restore_id)
    victim = app.root / "important"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious\n")
    await _forged(
        app, services, restore_id, _contents_data(app, restore_id, **{field: str(victim)})
    )
    assert sorted(os.listdir(victim)) == ["keep.txt"]
    assert (swap.contents_parked(app.uploads, restore_id) / "old.txt").exists(), (
        "the staging folder of a refused journal must be kept for the operator"
    )


@pytest.mark.parametrize("planted", ["staging folder", "staged folder", "parking folder"])
async def test_a_link_planted_as_a_contents_staging_folder_is_never_followed(
    mounted: App, services: Services, planted: str
) -> None:
    """On the mount's own filesystem (a folder of the live uploads), so only the link checks
    stand in the way."""
    app = mounted
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    uploads = app.uploads.absolute()
    victim = uploads / "victim"
    (victim / "uploads").mkdir(parents=True)
    (victim / "old").mkdir()
    (victim / "uploads" / "keep.txt").write_text("precious\n")
    (victim / "old" / "keep.txt").write_text("precious\n")
    root = _contents_staging(app, restore_id)
    target = {
        "staging folder": root,
        "staged folder": swap.contents_staged(uploads, restore_id),
        "parking folder": swap.contents_parked(uploads, restore_id),
    }[planted]
    with swap.keeping_mtime(uploads):
        shutil.rmtree(target)
        target.symlink_to(victim if target == root else victim / target.name)
    data = _contents_data(app, restore_id)
    if planted != "parking folder":
        data["staged_inode"] = os.stat(victim / "uploads").st_ino
    await _forged(app, services, restore_id, data)
    assert sorted(p.name for p in victim.rglob("*")) == ["keep.txt", "keep.txt", "old", "uploads"]


async def test_a_contents_staging_folder_on_another_filesystem_is_refused(
    mounted: App, services: Services
) -> None:
    """Something mounted at the parking folder: moves into it would cross filesystems."""
    app = mounted
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    _contents_staging(app, restore_id)
    parked = swap.contents_parked(app.uploads, restore_id)
    (parked / "old.txt").unlink()
    _mount_tmpfs(parked)
    try:
        (parked / "keep.txt").write_text("on another filesystem\n")
        await _forged(app, services, restore_id, _contents_data(app, restore_id))
        assert (parked / "keep.txt").exists()
    finally:
        _unmount(parked)


async def test_a_contents_journal_of_another_staged_folder_is_refused(
    mounted: App, services: Services
) -> None:
    app = mounted
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    _contents_staging(app, restore_id)
    data = _contents_data(app, restore_id)
    data["staged_inode"] = int(data["staged_inode"]) + 1  # type: ignore[call-overload]
    await _forged(app, services, restore_id, data)


async def test_a_contents_journal_for_a_plain_uploads_folder_is_refused(
    app: App, services: Services
) -> None:
    """Mode contents, but UPLOADS_DIR is not a mount point: the wrong mode."""
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    _contents_staging(app, restore_id)
    await _forged(app, services, restore_id, _contents_data(app, restore_id))


async def test_a_rename_journal_for_a_mount_point_is_refused(
    mounted: App, services: Services
) -> None:
    """A rename swap's journal (five fields, as older versions wrote), but UPLOADS_DIR is a
    mount point: the wrong mode."""
    app = mounted
    restore_id = uuid.uuid4().hex
    _restore_row(app, restore_id)
    uploads = app.uploads.absolute()
    staged = swap.staged_uploads(uploads, restore_id)
    staged.mkdir(parents=True)
    data = {
        "restore_id": restore_id,
        "uploads_dir": str(uploads),
        "staged": str(staged),
        "staged_inode": os.stat(uploads).st_ino,
        "uploads_existed": True,
    }
    await _forged(app, services, restore_id, data)
    assert staged.exists()


def _load_refuses(tmp_path: Path, data: dict[str, object]) -> str:
    path = swap.journal_path(tmp_path, "r1")
    _write_journal(path, data)
    with pytest.raises(UnsafePath) as refused:
        swap.load(path)
    return refused.value.detail


_VALID = {
    "restore_id": "r1",
    "uploads_dir": "/u",
    "staged": "/u/.nexus-restore-r1/uploads",
    "staged_inode": 5,
    "uploads_existed": True,
    "mode": "contents",
    "phase": "placing",
    "parked": "/u/.nexus-restore-r1/old",
    "old_mtime_ns": 1,
    "new_mode": 0o755,
    "new_mtime_ns": 2,
}


def test_a_valid_contents_journal_loads(tmp_path: Path) -> None:
    path = swap.journal_path(tmp_path, "r1")
    swap.Journal(**_VALID).write(tmp_path)  # type: ignore[arg-type]
    assert swap.load(path) == swap.Journal(**_VALID)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"mode": "exchange"}, "mode"),
        ({"mode": "Contents"}, "mode"),
        ({"phase": "done"}, "phase"),
        ({"phase": ""}, "phase"),
        ({"new_mode": 0o4755}, "grant"),
        ({"new_mode": 0o1755}, "grant"),
        ({"new_mode": 0o777}, "grant"),
        ({"new_mode": 0o775}, "grant"),
        ({"new_mode": -1}, "grant"),
        ({"new_mode": "755"}, "wrong type"),
        ({"new_mode": True}, "wrong type"),
        ({"old_mtime_ns": -1}, "range"),
        ({"new_mtime_ns": 2**63}, "range"),
        ({"old_mtime_ns": 1.5}, "wrong type"),
        ({"phase": 1}, "wrong type"),
        ({"parked": None}, "wrong type"),
        ({"uploads_existed": False}, "always exists"),
        ({"mode": "rename"}, "contents-swap fields"),
        ({"extra": 1}, "not a journal"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value),
)
def test_a_contents_journal_with_impossible_values_is_refused(
    tmp_path: Path, changes: dict[str, object], reason: str
) -> None:
    assert reason in _load_refuses(tmp_path, {**_VALID, **changes})


@pytest.mark.parametrize("mode", ["rename", "contents"])
def test_a_journal_with_only_some_contents_fields_is_refused(tmp_path: Path, mode: str) -> None:
    """Either a rename swap's five fields (what older versions wrote) or all of them."""
    five = {k: _VALID[k] for k in list(_VALID)[:5]}
    assert "not a journal" in _load_refuses(tmp_path, {**five, "mode": mode})
    all_but_parked = {k: v for k, v in _VALID.items() if k != "parked"}
    assert "not a journal" in _load_refuses(tmp_path, {**all_but_parked, "mode": mode})
