"""A verify's life: resolve the archive, check it (api.backups.verify, api.archive.reader),
audit the outcome. A deep verify test-restores into a scratch database, one at a time across
every process (its own advisory lock); a plain verify needs no lock. A deep verify that runs
to its end is a restore drill: its outcome, duration and reason are written on the backup, and a
failed one is reported to the notifier (a refusal before it starts, or a cancellation, writes
nothing)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from api import logs, paths
from api.archive.reader import read_archive
from api.audit import service as audit
from api.backups import service as backups
from api.backups import verify as verifier
from api.backups.models import SystemBackup
from api.backups.verify import Verification
from api.db import transaction
from api.errors import AppError, ArchiveError, Busy
from api.locks import DEEP_VERIFY_LOCK
from api.notify import report
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
        if self.deep and self.backup.status == "completed":
            result = await self._drill(ctx, self.backup)
        else:
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

    async def _drill(self, ctx: Context, backup: SystemBackup) -> Verification:
        """The deep verify of a completed backup, its outcome recorded on the backup whether it
        passed or failed (an error that stops it is a failure too, recorded and raised)."""
        started = time.monotonic()
        try:
            result = await verifier.verify(ctx.services, backup, self.path, deep=True)
        except Exception as error:
            reason = error.detail if isinstance(error, AppError) else str(error)
            await self._record(ctx, backup, started, problem=reason or type(error).__name__)
            raise
        await self._record(ctx, backup, started, problem=None if result.ok else result.problem)
        return result

    async def _record(
        self, ctx: Context, backup: SystemBackup, started: float, *, problem: str | None
    ) -> None:
        at = backups.now()
        passed = problem is None
        if problem is not None:
            problem = logs.scrub(ctx.services.settings, problem)
        async with transaction(ctx.services.sessions) as session:
            await verifier.record_drill(
                session,
                backup.id,
                at=at,
                passed=passed,
                duration_ms=round((time.monotonic() - started) * 1000),
                error=problem,
            )
        if not passed:
            report.drill_failed(
                ctx.operations.notifier,
                backup=backup.name,
                error=problem or "the restore drill failed",
                at=at,
                link=f"/backups/{backup.id}",
            )


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
