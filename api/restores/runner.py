"""The one place a restore runs.

1. Verify the whole archive while staging it beside the uploads folder (nothing live touched).
2. Refuse a newer app version's archive unless forced.
3. Take and verify a `pre_restore` backup of the live state (zstd level 1: it is written fast,
   `streams.SAFETY_CODEC`). Only then: nothing, not even a safety backup, happens for an
   archive that fails its checks.
4. psql loads database.sql inside one transaction (after dropping everything but the catalog).
5. Swap the staged uploads tree in, commit, then drop the old tree. If the commit fails, the
   old tree is swapped back: all or nothing. A plain UPLOADS_DIR is staged beside it and
   exchanged with renameat2; a mount point (a Docker volume) is staged inside it and its
   top-level entries are moved, never the mount (api.restores.swap).
6. Run POST_RESTORE_COMMAND.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from packaging.version import InvalidVersion, Version
from sqlalchemy import select

from api import faults, paths
from api.archive.manifest import DATABASE_NAME, UPLOADS_PREFIX, safe_mode
from api.archive.reader import Staging, VerifiedArchive, read_archive
from api.archive.writer import read_sidecar
from api.backups import service as backup_service
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import (
    AppError,
    ArchiveError,
    BadRequest,
    Conflict,
    NotFound,
    Unavailable,
    UnsafePath,
)
from api.progress import Tracker
from api.restores import swap as swapper
from api.restores.models import SystemRestore
from api.services import Services
from api.sources import postgres, uploads
from api.storage import service as storage
from api.storage.base import StorageError

log = logging.getLogger("nexus_backup.restores")


@dataclass
class RestoreRequest:
    archive: str
    dry_run: bool = False
    force: bool = False
    # The API's typed confirmation: `archive` is then a catalogued backup's id, and this must
    # be its name.
    confirm: str | None = None


@dataclass
class TableChange:
    table: str
    live: int | None
    archived: int | None


@dataclass
class RestorePlan:
    """What a restore would change; the answer of --dry-run."""

    archive: str
    name: str
    layout: str
    sha256: str
    app_version: str | None
    schema_version: str | None
    tables: list[TableChange] = field(default_factory=list)
    tables_known: bool = True
    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    restore: SystemRestore
    plan: RestorePlan | None = None
    pre_restore: SystemBackup | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Target:
    path: Path
    backup: SystemBackup | None
    expected_sha256: str | None
    source: str | None


async def resolve(
    services: Services, ref: str, actor: str = "cli", client_address: str | None = None
) -> Target:
    """An archive path, or the name or id of a catalogued backup, with its expected checksum.

    A catalogued backup's archive must lie inside BACKUP_DIR (its real path, links resolved)
    and its cloud key inside the bucket prefix: a row pointing elsewhere is refused
    (UnsafePath) and audited. An id is never taken for a path, whatever files exist."""
    path = Path(ref)
    async with transaction(services.sessions) as session:
        backup = await session.get(SystemBackup, ref)
        if backup is not None and backup.deleted_at is not None:
            backup = None
        if backup is None and path.is_file():
            # A file the operator names; when the catalog knows it, its checksum applies.
            backup = await backup_service.by_file(session, str(path.resolve()))
        else:
            backup = backup or await backup_service.find(session, ref)
            if backup is None:
                raise NotFound(
                    f"{ref!r} is neither an archive file nor the name or id of a catalogued "
                    "backup; `nexus-backup list` shows the backups"
                )
            if backup.status != "completed":
                raise Conflict(
                    f"backup {backup.name!r} is {backup.status}; only completed "
                    "backups can be restored"
                )
            local = await paths.archive_path(
                services, backup, action="restore", actor=actor, client_address=client_address
            )
            if local is not None and local.is_file():
                path = local
            elif backup.is_cloud_synced and backup.cloud_path and services.storage is not None:
                path = local or services.settings.backup_dir / PurePosixPath(backup.cloud_path).name
            else:
                raise NotFound(
                    f"the archive of backup {backup.name!r} is missing at {backup.file_path} "
                    "and there is no cloud copy; copy it back there, or give the path of a copy"
                )
    if backup is not None and not path.is_file():
        # Local archive gone, cloud copy confirmed: fetch it; it is verified like any archive.
        log.info("fetching %s from cloud storage", backup.cloud_path)
        try:
            await storage.fetch(services, backup, path, actor=actor)
        except StorageError as error:
            raise Unavailable(
                f"the local archive of {backup.name!r} is gone and its cloud copy could not be "
                f"downloaded: {error}"
            ) from None
        path = path.resolve()
        async with transaction(services.sessions) as session:
            (await backup_service.get(session, backup.id)).file_path = str(path)
    if backup is not None and backup.checksum:
        return Target(path, backup, backup.checksum, "catalog")
    try:
        sidecar = read_sidecar(path)
    except ValueError as error:
        raise ArchiveError(str(error)) from None
    return Target(path, backup, sidecar, "sidecar" if sidecar else None)


def check_version(archive_version: str | None, current: str | None, force: bool) -> str | None:
    """None when the archive may be restored over this code; else why not (and how to override)."""
    if archive_version is None or force:
        return None
    if current is None:
        return (
            f"the archive was made by app version {archive_version} and APP_VERSION is not set, "
            "so the running code's version is unknown: set APP_VERSION, or pass --force"
        )
    try:
        newer = Version(archive_version) > Version(current)
    except InvalidVersion:
        newer = archive_version != current
    if newer:
        return (
            f"the archive was made by app version {archive_version}, newer than the running "
            f"APP_VERSION {current}: restoring it over older code can break the app; deploy "
            f"{archive_version} first, or pass --force"
        )
    return None


class Steps(Protocol):
    """What a restore asks of its operation (api.operations.restore): record a phase, and take
    the pre_restore safety backup under the lock the restore holds."""

    async def phase(self, name: str) -> None: ...

    async def safety_backup(self, description: str) -> SystemBackup: ...


@dataclass
class Outcome:
    """What a restore did: a plan (dry run), or the safety backup and what the command said."""

    plan: RestorePlan | None = None
    pre_restore: SystemBackup | None = None
    warnings: list[str] = field(default_factory=list)
    command_error: str | None = None


class FinishedOnShutdown(asyncio.CancelledError):
    """A cancellation (a shutdown) that reached a restore after its commit point: the restore
    was finished, not undone, but POST_RESTORE_COMMAND did not run to its end. (A cancellation
    before the commit point goes on as itself, once the restore was undone.)"""


def unexpected(error: BaseException) -> str:
    """What a restore's record says of an error that is not an AppError."""
    if isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    if isinstance(error, OSError):
        return str(error)
    log.exception("unexpected error during restore", exc_info=error)
    return f"internal error: {type(error).__name__}: {error}"


async def execute(
    services: Services,
    request: RestoreRequest,
    target: Target,
    restore_id: str,
    tracker: Tracker,
    steps: Steps,
) -> Outcome:
    """Verify and stage the archive, then (unless a dry run) take the safety backup, load and
    swap in one transaction, and run POST_RESTORE_COMMAND. Raises AppError when the restore does
    not happen; nothing live is changed then."""
    settings = services.settings
    url = settings.require_database_url()
    uploads_dir = settings.uploads_dir.absolute()
    tracker.phase("verifying archive", target.path.stat().st_size)
    if request.dry_run:
        verified = await asyncio.to_thread(
            read_archive,
            target.path,
            expected_sha256=target.expected_sha256,
            checksum_source=target.source,
            on_progress=tracker.advance,
        )
        refusal = check_version(verified.app_version, settings.app_version, request.force)
        plan = await _plan(url, uploads_dir, verified)
        if refusal:
            plan.warnings.append(refusal)
        return Outcome(plan=plan, warnings=verified.warnings)

    if not uploads_dir.parent.is_dir():
        raise BadRequest(f"the parent folder of UPLOADS_DIR ({uploads_dir.parent}) does not exist")
    # Decided now, recorded in the journal: a mount point's contents are swapped, not the mount.
    mode = swapper.CONTENTS if swapper.is_mount_point(uploads_dir) else swapper.RENAME
    if mode == swapper.CONTENTS:
        with swapper.keeping_mtime(uploads_dir):
            staging = Staging(swapper.contents_root(uploads_dir, restore_id))
    else:
        staging = Staging(swapper.staging_root(uploads_dir, restore_id))
    try:
        verified = await asyncio.to_thread(
            read_archive,
            target.path,
            expected_sha256=target.expected_sha256,
            checksum_source=target.source,
            stage=staging,
            on_progress=tracker.advance,
        )
        refusal = check_version(verified.app_version, settings.app_version, request.force)
        if refusal:
            raise Conflict(refusal)
        await asyncio.to_thread(staging.apply_metadata, verified)
        if DATABASE_NAME not in verified.members:
            raise ArchiveError("the archive has no database.sql")
        if not (staging.uploads).exists():
            staging.uploads.mkdir(mode=0o755)
        reserved = [
            name for name in os.listdir(staging.uploads) if uploads.is_restore_staging(name)
        ]
        if reserved:
            raise ArchiveError(
                f"the archive's uploads hold {reserved[0]!r}, the name of a restore's staging "
                "folder, which no backup contains: the archive is crafted"
            )

        await steps.phase("safety backup")
        tracker.phase("taking the pre_restore safety backup", None)
        safety = await steps.safety_backup(
            f"automatic safety backup before restoring {target.path.name}"
        )
        if safety.status != "completed":
            raise AppError(
                f"the pre_restore safety backup failed ({safety.error_message}); nothing was "
                "changed. Fix that first; if the live database is beyond saving, recreate it "
                "empty (createdb) and restore again"
            )

        await steps.phase("restoring")
        tracker.phase("restoring database and uploads", None)
        await _apply(services, restore_id, url, uploads_dir, staging, mode)
    finally:
        if mode == swapper.CONTENTS:
            with swapper.keeping_mtime(uploads_dir):
                staging.remove()
        else:
            staging.remove()
    try:
        command_error = await _post_restore(settings.post_restore_command, url)
    except asyncio.CancelledError:
        raise FinishedOnShutdown("POST_RESTORE_COMMAND was interrupted") from None
    return Outcome(
        pre_restore=safety, warnings=list(verified.warnings), command_error=command_error
    )


async def _apply(
    services: Services,
    restore_id: str,
    url: str,
    uploads_dir: Path,
    staging: Staging,
    mode: str,
) -> None:
    database = postgres.DatabaseRestore(url, services.settings, staging.database, restore_id)
    journal = swapper.new_journal(uploads_dir, restore_id, mode)
    folder = services.settings.backup_dir
    committed = interrupted = False
    try:
        await database.apply()
        faults.point("restore.before_swap")
        # From the swap to the commit's answer a cancellation (a shutdown) cannot cut in: it
        # waits for the commit to decide, then the restore is finished, or undone below.
        critical = asyncio.ensure_future(_swap_and_commit(database, journal, folder))
        try:
            await asyncio.shield(critical)
        except asyncio.CancelledError:
            interrupted = True
            await asyncio.wait({critical})
            critical.result()
        committed = True
    finally:
        if not committed:
            await database.rollback()
            if not await postgres.restore_committed(url, restore_id):
                swapper.swap_back(journal, folder)
                journal.remove(folder)
    swapper.discard_old(journal)
    journal.remove(folder)
    if interrupted:
        raise FinishedOnShutdown("the commit was under way: the restore was finished")


async def _swap_and_commit(
    database: postgres.DatabaseRestore, journal: swapper.Journal, folder: Path
) -> None:
    swapper.swap_in(journal, folder)
    faults.point("restore.before_commit")
    await database.commit()


async def _post_restore(command: str | None, url: str) -> str | None:
    if not command:
        return None
    try:
        args = shlex.split(command)
    except ValueError as error:
        return f"cannot parse POST_RESTORE_COMMAND ({error})"
    env = {**os.environ, "DATABASE_URL": url}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)

    try:
        result = await asyncio.to_thread(run)
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        return f"exit {result.returncode}: {tail}"
    return None


async def _plan(url: str, uploads_dir: Path, verified: VerifiedArchive) -> RestorePlan:
    manifest = verified.manifest
    plan = RestorePlan(
        archive=str(verified.path),
        name=verified.name,
        layout=verified.layout,
        sha256=verified.sha256,
        app_version=verified.app_version,
        schema_version=manifest.schema_version if manifest else None,
        warnings=list(verified.warnings),
    )
    live = await postgres.table_row_counts(url)
    if DATABASE_NAME in verified.members:
        archived = verified.dump_tables  # counted in database.sql, not taken from the manifest
        for table in sorted(set(live) | set(archived)):
            if live.get(table) != archived.get(table):
                plan.tables.append(TableChange(table, live.get(table), archived.get(table)))
    else:
        plan.tables_known = False
    wanted = {m.name[len(UPLOADS_PREFIX) + 1 :]: m for m in verified.upload_files()}
    present: dict[str, tuple[int, int]] = {}
    if uploads_dir.is_dir():
        for entry in uploads.walk(uploads_dir, []):
            if entry.kind == "file":
                present[entry.rel] = (entry.size, entry.mode)
    plan.files_added = sorted(set(wanted) - set(present))
    plan.files_removed = sorted(set(present) - set(wanted))
    for rel in sorted(set(wanted) & set(present)):
        member = wanted[rel]
        size, mode = present[rel]
        if size != member.size or mode != safe_mode(member.mode):
            plan.files_changed.append(rel)
            continue
        digest = await asyncio.to_thread(_sha256_of, uploads_dir / os.fsdecode(os.fsencode(rel)))
        if digest != member.sha256:
            plan.files_changed.append(rel)
    return plan


def _sha256_of(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1024 * 1024):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


async def recover(services: Services) -> tuple[list[str], dict[str, bool]]:
    """Finish or undo interrupted uploads swaps (journals), then drop leftover staging folders.

    A journal is untrusted input: it is acted on only if `swap.load` and `swap.check_paths`
    accept it and the catalog has its restore in progress (the caller holds the mutation lock,
    so that restore's process is gone). Any other journal is moved aside, logged and audited;
    nothing it names is touched. Returns notes for the log and, by restore id, whether each
    interrupted restore committed.
    """
    notes: list[str] = []
    outcomes: dict[str, bool] = {}
    folder = services.settings.backup_dir
    if not folder.is_dir():
        return notes, outcomes
    url = services.settings.require_database_url()
    uploads_dir = services.settings.uploads_dir.absolute()
    async with transaction(services.sessions) as session:
        in_progress = set(
            (
                await session.execute(
                    select(SystemRestore.id).where(SystemRestore.status == "in_progress")
                )
            )
            .scalars()
            .all()
        )
    refused: set[str] = set()
    for path in swapper.journal_files(folder):
        try:
            journal = swapper.load(path)
            if journal.restore_id not in in_progress:
                raise UnsafePath(
                    f"refused journal {path}: the catalog has no restore {journal.restore_id} "
                    "in progress",
                    str(path),
                )
            swapper.check_paths(journal, uploads_dir)
        except (UnsafePath, OSError) as error:
            notes.append(await _refuse_journal(services, path, error))
            refused.add(path.name.removeprefix(".restore-").removesuffix(".journal"))
            continue
        committed = await postgres.restore_committed(url, journal.restore_id)
        outcomes[journal.restore_id] = committed
        try:
            if committed:
                swapper.finish(journal, folder)
                note = f"finished interrupted restore {journal.restore_id} (it had committed)"
            else:
                swapper.swap_back(journal, folder)
                note = f"undid interrupted restore {journal.restore_id} (it had not committed)"
        except UnsafePath as error:
            # A folder replaced (by a link, a mount) since check_paths: checked again as it is
            # opened, before anything moves through it.
            notes.append(await _refuse_journal(services, path, error))
            refused.add(journal.restore_id)
            continue
        notes.append(note)
        journal.remove(folder)
        if journal.mode == swapper.RENAME:
            swapper.remove_tree(swapper.staging_root(uploads_dir, journal.restore_id))
    for restore_id in in_progress - outcomes.keys() - refused:
        # Stopped before its swap, so before COMMIT was sent; its psql may outlive it (blocked
        # opening the dump's FIFO), holding the live tables' locks: end that session.
        await postgres.end_sessions(url, postgres.restore_session_name(restore_id))
    notes += _remove_leftovers(uploads_dir, refused)
    return notes, outcomes


def _remove_leftovers(uploads_dir: Path, refused: set[str]) -> list[str]:
    """Staging folders no journal accounts for (a restore stopped before its swap): beside
    UPLOADS_DIR (rename swaps) and inside it (contents swaps; its mtime is kept)."""
    notes: list[str] = []
    if uploads_dir.is_dir() and not uploads_dir.is_symlink():
        for name in sorted(os.listdir(uploads_dir)):
            if not uploads.is_restore_staging(name):
                continue
            leftover = uploads_dir / name
            if name.removeprefix(uploads.STAGING_PREFIX) in refused:
                notes.append(f"kept staging folder {leftover} of a refused journal: inspect it")
                continue
            with swapper.keeping_mtime(uploads_dir):
                swapper.remove_tree(leftover)  # a link is unlinked, never followed
            notes.append(f"removed leftover staging folder {leftover}")
    if uploads_dir.parent.is_dir():
        for leftover in uploads_dir.parent.glob(f".{uploads_dir.name}.restore-*"):
            restore_id = leftover.name.removeprefix(f".{uploads_dir.name}.restore-")
            if not swapper.RESTORE_ID.fullmatch(restore_id):
                continue  # not a name the runner makes
            if restore_id in refused:
                # It may hold the only copy of a tree: the operator decides, not a forged file.
                notes.append(f"kept staging folder {leftover} of a refused journal: inspect it")
                continue
            swapper.remove_tree(leftover)  # a link is unlinked, never followed
            notes.append(f"removed leftover staging folder {leftover}")
    return notes


async def _refuse_journal(services: Services, path: Path, error: Exception) -> str:
    """Move a refused journal aside (so it is not read again), log and audit it."""
    reason = error.detail if isinstance(error, UnsafePath) else str(error)
    aside = path.with_name(path.name + ".refused")
    with contextlib.suppress(OSError):
        os.replace(path, aside)  # renames a link itself, never its target
    refusal = error if isinstance(error, UnsafePath) else UnsafePath(reason, str(path))
    await paths.record_refusal(
        services,
        refusal,
        actor="system",
        action="restore.recover",
        target=path.name,
        detail={"journal": str(path), "movedTo": str(aside)},
    )
    return f"{reason}; nothing it names was touched (moved aside to {aside.name})"
