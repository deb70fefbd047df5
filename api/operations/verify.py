"""A verify's life: resolve the archive, check it (api.backups.verify, api.archive.reader),
audit the outcome. A deep verify test-restores into a scratch database, one at a time across
every process (its own advisory lock); a plain verify needs no lock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from api import paths
from api.archive.reader import read_archive
from api.audit import service as audit
from api.backups import service as backups
from api.backups import verify as verifier
from api.backups.models import SystemBackup
from api.backups.verify import Verification
from api.db import transaction
from api.errors import ArchiveError, Busy
from api.locks import DEEP_VERIFY_LOCK
from api.operations.engine import Context, Operation
from api.restores import runner as restores
from api.states import AuditOutcome, OperationKind


@dataclass
class VerifyOp(Operation[Verification]):
    """Check a catalogued backup by id: the result says `ok` or the problem (a corrupt archive
    is an outcome, not an error)."""

    backup_id: str
    deep: bool = False
    backup: SystemBackup | None = field(default=None, init=False)
    path: Path | None = field(default=None, init=False)

    kind = OperationKind.verify

    def lock_key(self) -> int | None:
        return DEEP_VERIFY_LOCK if self.deep else None

    async def busy(self, ctx: Context) -> Busy:
        return Busy(
            "a deep verify is already running (one at a time: each test-restores a whole "
            "database); try again when it has finished"
        )

    async def check(self, ctx: Context) -> None:
        async with transaction(ctx.services.sessions) as session:
            self.backup = await backups.get_visible(session, self.backup_id)
        self.id = self.backup.id
        self.path = await paths.archive_path(
            ctx.services,
            self.backup,
            action="backup.verify",
            actor=ctx.caller.actor,
            client_address=ctx.caller.address,
        )

    async def run(self, ctx: Context) -> Verification:
        assert self.backup is not None
        result = await verifier.verify(ctx.services, self.backup, self.path, deep=self.deep)
        await audit.record_apart(
            ctx.services.sessions,
            ctx.caller,
            action="backup.verify",
            target=self.backup.name,
            outcome=AuditOutcome.completed if result.ok else AuditOutcome.failed,
            detail={"id": self.backup.id, "deep": self.deep, "problem": result.problem},
        )
        return result


@dataclass
class ArchiveVerifyOp(Operation[Verification]):
    """Check any archive: a path, or a catalogued backup's name or id (the CLI's verify).
    A corrupt archive raises ArchiveError (after the audit) so the command fails."""

    ref: str

    kind = OperationKind.verify

    async def run(self, ctx: Context) -> Verification:
        target = await restores.resolve(ctx.services, self.ref, ctx.caller.actor)
        self.id = target.backup.id if target.backup else None
        try:
            result = await asyncio.to_thread(
                read_archive,
                target.path,
                expected_sha256=target.expected_sha256,
                checksum_source=target.source,
            )
        except ArchiveError as error:
            await _audit(ctx, target.path.name, AuditOutcome.failed, {"error": error.detail})
            raise
        await _audit(ctx, target.path.name, AuditOutcome.completed, {"sha256": result.sha256})
        return Verification(
            ok=True,
            sha256=result.sha256,
            layout=result.layout,
            warnings=result.warnings,
            path=target.path,
            checksum_source=target.source,
            upload_files=len(result.upload_files()),
            database_size=result.members["database.sql"].size
            if "database.sql" in result.members
            else None,
        )


async def _audit(
    ctx: Context, target: str, outcome: AuditOutcome, detail: dict[str, object]
) -> None:
    await audit.record_apart(
        ctx.services.sessions,
        ctx.caller,
        action="backup.verify",
        target=target,
        outcome=outcome,
        detail=detail,
    )
