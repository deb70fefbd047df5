"""A restore's life: resolve the archive (before the lock: it may be fetched from the cloud),
the in_progress record under the mutation lock, the work (api.restores.runner) with its safety
backup run as a child operation under the same lock, then completed or failed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from api import logs
from api.audit import service as audit
from api.backups import service as backups
from api.backups.models import SystemBackup
from api.db import transaction
from api.errors import AppError, BadRequest
from api.operations.backup import BackupOp, Mutation
from api.operations.engine import INTERRUPTED_BY_SHUTDOWN, Context
from api.restores import runner, service
from api.restores.models import SystemRestore
from api.restores.runner import RestoreRequest, RestoreResult, Target
from api.states import AuditOutcome, BackupType, OperationKind, RestorePhase, RestoreStatus

log = logging.getLogger("nexus_backup.restores")


@dataclass
class RestoreOp(Mutation[RestoreResult]):
    """Restore (or, with dry_run, plan) an archive: a path, or a catalogued backup's name or
    id. Raises AppError, after recording it, when the restore does not happen."""

    request: RestoreRequest
    target: Target | None = field(default=None, init=False)
    record: SystemRestore | None = field(default=None, init=False)
    phase: str | None = field(default=None, init=False)  # the last phase recorded

    kind = OperationKind.restore

    async def check(self, ctx: Context) -> None:
        if self.request.confirm is not None:
            async with transaction(ctx.services.sessions) as session:
                backup = await backups.get_visible(session, self.request.archive)
            if self.request.confirm != backup.name:
                raise BadRequest(
                    f"confirm must be the backup's name, {backup.name!r}, typed back: a restore "
                    "replaces the live database and uploads"
                )
        self.target = await runner.resolve(
            ctx.services, self.request.archive, ctx.caller.actor, ctx.caller.address
        )

    async def prepare(self, ctx: Context) -> None:
        assert self.target is not None
        target, request = self.target, self.request
        async with transaction(ctx.services.sessions) as session:
            record = SystemRestore(
                id=backups.new_id(),
                backup_id=target.backup.id if target.backup else None,
                archive_path=str(target.path.resolve()),
                status=RestoreStatus.in_progress,
                phase=RestorePhase.verifying,
                dry_run=request.dry_run,
                forced=request.force,
                requested_by=ctx.caller.actor,
                started_at=backups.now(),
                created_at=backups.now(),
            )
            session.add(record)
            await audit.record(
                session,
                ctx.caller,
                action="restore.dry_run" if request.dry_run else "restore.start",
                target=target.path.name,
                outcome=AuditOutcome.started,
                detail={"id": record.id},
            )
        self.id, self.record = record.id, record

    async def run(self, ctx: Context) -> RestoreResult:
        assert self.target is not None
        assert self.id is not None
        name = self.target.path.name
        try:
            outcome = await runner.execute(
                ctx.services, self.request, self.target, self.id, ctx.tracker, _Steps(self, ctx)
            )
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError) and ctx.operations.stopping:
                status, reason = self._interrupted(ctx, error)
                await self._finish(ctx, status, reason, action="restore.run")
                log.error("restore of %s: %s", name, reason)
                raise
            reason = error.detail if isinstance(error, AppError) else runner.unexpected(error)
            await self._finish(ctx, RestoreStatus.failed, reason, action="restore.run")
            log.error("restore of %s failed: %s", name, reason)
            raise
        if outcome.plan is not None:
            done = await self._finish(ctx, RestoreStatus.completed, None, action="restore.dry_run")
            return RestoreResult(restore=done, plan=outcome.plan, warnings=outcome.warnings)
        safety = outcome.pre_restore
        assert safety is not None
        problem = None
        if outcome.command_error:
            problem = (
                f"database and uploads were restored from {name}, but POST_RESTORE_COMMAND "
                f"failed: {outcome.command_error}; fix it and run it by hand (the previous state "
                f"is in pre_restore backup {safety.name})"
            )
        done = await self._finish(
            ctx,
            RestoreStatus.failed if problem else RestoreStatus.completed,
            problem,
            action="restore.run",
            detail={"preRestoreBackupId": safety.id},
        )
        if problem:
            log.error("restore %s: %s", self.id, problem)
            raise AppError(problem)
        log.info("restored %s (pre_restore backup %s)", name, safety.name)
        return RestoreResult(restore=done, pre_restore=safety, warnings=outcome.warnings)

    def _interrupted(self, ctx: Context, error: asyncio.CancelledError) -> tuple[str, str]:
        """What the record of a restore that shutdown interrupted says: finished (the commit
        was under way) or undone, as recovery would have it."""
        if isinstance(error, runner.FinishedOnShutdown):
            if ctx.services.settings.post_restore_command:
                return RestoreStatus.failed, (
                    f"{INTERRUPTED_BY_SHUTDOWN} after its commit point: the database and uploads "
                    "WERE restored (the restore was finished, not undone), but "
                    "POST_RESTORE_COMMAND did not run to its end: run it by hand"
                )
            return RestoreStatus.completed, (
                f"{INTERRUPTED_BY_SHUTDOWN} after its commit point: the restore was finished "
                "(not undone); the database and uploads are the backup's"
            )
        if self.phase == RestorePhase.restoring:
            return RestoreStatus.failed, (
                f"{INTERRUPTED_BY_SHUTDOWN}; the restore was undone: the live database and "
                "uploads are as they were before it"
            )
        return RestoreStatus.failed, (
            f"{INTERRUPTED_BY_SHUTDOWN} before it changed anything: the live database and "
            "uploads are as they were"
        )

    async def _finish(
        self,
        ctx: Context,
        status: str,
        error: str | None,
        *,
        action: str,
        detail: dict[str, object] | None = None,
    ) -> SystemRestore:
        assert self.target is not None
        assert self.id is not None
        error = None if error is None else logs.scrub(ctx.services.settings, error)
        async with transaction(ctx.services.sessions) as session:
            done = await service.get(session, self.id)
            done.status, done.error_message = status, error
            done.completed_at, done.phase = backups.now(), None
            extra = (
                {"error": error}
                if status == RestoreStatus.failed or action == "restore.run"
                else {}
            )
            await audit.record(
                session,
                ctx.caller,
                action=action,
                target=self.target.path.name,
                outcome=AuditOutcome(status),
                detail={"id": self.id, **(detail or {}), **extra},
            )
        return done


class _Steps:
    def __init__(self, operation: RestoreOp, ctx: Context) -> None:
        self._operation = operation
        self._ctx = ctx

    async def phase(self, name: str) -> None:
        assert self._operation.id is not None
        self._operation.phase = name
        async with transaction(self._ctx.services.sessions) as session:
            (await service.get(session, self._operation.id)).phase = name
        log.info("restore %s: %s", self._operation.id, name)

    async def safety_backup(self, description: str) -> SystemBackup:
        safety = await self._ctx.child(
            BackupOp(type=BackupType.pre_restore, description=description)
        )
        assert self._operation.id is not None
        async with transaction(self._ctx.services.sessions) as session:
            (await service.get(session, self._operation.id)).pre_restore_backup_id = safety.id
        return safety
