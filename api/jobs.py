"""Backups and restores running in the background of the serving process.

Each job holds the mutation lock from before its record is written until it ends, so a second
request, from this process or another, gets a 409 that names the running job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from api.backups import runner as backups
from api.backups.models import SystemBackup
from api.locks import MutationLock
from api.restores import runner as restores
from api.restores.models import SystemRestore
from api.services import Services

log = logging.getLogger("nexus_backup.jobs")


class Jobs:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._tasks: set[asyncio.Task[object]] = set()

    async def start_backup(
        self, request: backups.BackupRequest
    ) -> tuple[SystemBackup, asyncio.Task[SystemBackup]]:
        lock = await backups.acquire(self._services)
        try:
            backup = await backups.create_pending(self._services, request)
        except BaseException:
            await lock.release()
            raise
        task = asyncio.create_task(
            self._backup(lock, backup.id, request.client_address, request.actor)
        )
        self._track(task)
        return backup, task

    async def _backup(
        self, lock: MutationLock, backup_id: str, client: str | None, actor: str
    ) -> SystemBackup:
        try:
            backup = await backups.run(self._services, backup_id, None, client)
        finally:
            await lock.release()
        return await backups.after_backup(self._services, backup, actor)

    async def start_restore(
        self, request: restores.RestoreRequest
    ) -> tuple[SystemRestore, asyncio.Task[restores.RestoreResult]]:
        target = await restores.resolve(
            self._services, request.archive, request.actor, request.client_address
        )
        lock = await backups.acquire(self._services)
        try:
            started = await restores.begin(self._services, request, target)
        except BaseException:
            await lock.release()
            raise
        task = asyncio.create_task(self._restore(lock, request, started))
        self._track(task)
        return started.record, task

    async def _restore(
        self, lock: MutationLock, request: restores.RestoreRequest, started: restores.Started
    ) -> restores.RestoreResult:
        try:
            return await restores.execute(self._services, request, started, lock)
        finally:
            await lock.release()

    def _track(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)

        def done(finished: asyncio.Task[object]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.info("background job ended with: %s", finished.exception())

        task.add_done_callback(done)

    async def shutdown(self) -> None:
        """Cancel what still runs (each records itself as failed) and wait for it."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
