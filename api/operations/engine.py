"""The one path every operation takes: check, lock, record, run, release, after-hooks.

An operation (backup, restore, verify, sync, delete, retention) says what it needs and does; the
engine does the rest the same way for all of them:

1. `check()`: validate and resolve, before any lock (may be slow: a cloud fetch).
2. Take the advisory lock the kind names (`lock`), or answer 409 naming the holder (`busy()`).
   A child operation (a restore's safety backup) runs under its parent's lock.
3. `prepare()`: write the pending record and audit the start. The submitter gets a `Handle` now:
   the API answers with the pending record, the CLI and the scheduler wait on it.
4. `run()`: the work, recording its own outcome; the engine flushes progress to the record.
5. Release the lock, then run the kind's after-hooks (sync, retention, ...: `api.operations.hooks`).

No lock object leaves this module. Recovery (`api.operations.recovery`) takes the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from api import logs
from api.audit.service import SYSTEM, Caller
from api.errors import Busy
from api.locks import MutationLock
from api.progress import ProgressView, Tracker
from api.services import Services

log = logging.getLogger("nexus_backup.operations")
R = TypeVar("R")
PROGRESS_FLUSH_SECONDS = 1.0


@dataclass
class Context:
    """What a running operation may use: the services, who asked, its progress tracker, and
    the engine (to run child operations under the same lock)."""

    services: Services
    caller: Caller
    tracker: Tracker
    operations: Operations
    holding: set[int] = field(default_factory=set)

    async def child(self, operation: Operation[R]) -> R:
        """Run `operation` to its end inside this one (its lock, if the same, is already ours)."""
        return await self.operations.run_inside(operation, self)


class Operation(Generic[R]):
    """One kind of operation. Subclasses set `kind` and `lock` and implement `run`."""

    kind: ClassVar[str]
    lock: ClassVar[int | None] = None  # the advisory lock held from prepare() to run()'s end
    id: str | None = None  # the catalog record's id once prepare() wrote it

    def lock_key(self) -> int | None:
        """The advisory lock this operation holds (the kind's `lock` unless it depends)."""
        return self.lock

    async def check(self, ctx: Context) -> None:
        """Validate and resolve before the lock; raise an AppError to refuse."""

    async def prepare(self, ctx: Context) -> None:
        """Under the lock: write the pending record and audit the start."""

    async def run(self, ctx: Context) -> R:
        raise NotImplementedError

    async def busy(self, ctx: Context) -> Busy:
        """The 409 while another operation holds this kind's lock."""
        return Busy("another operation is running; wait for it to finish")

    async def save_progress(
        self, ctx: Context, phase: str | None, done: int, total: int | None
    ) -> None:
        """Write the tracker's progress to the record (called about once a second)."""


Hook = Callable[[Context, Any, Any], Awaitable[Any]]
"""After-hook: (context, operation, result) -> result (possibly updated, e.g. synced)."""
FailedHook = Callable[[Context, Any, Exception], None]
"""Failure hook: (context, operation, error), for a kind whose failure raises; must not block."""


class Handle(Generic[R]):
    """A submitted operation: its id (the record's) and its end."""

    def __init__(self, operation: Operation[R], task: asyncio.Task[R]) -> None:
        self.operation = operation
        self.task = task

    @property
    def id(self) -> str | None:
        return self.operation.id

    @property
    def done(self) -> bool:
        return self.task.done()

    async def wait(self) -> R:
        """The result once the operation and its after-hooks ended. Cancelling the waiter (a
        client that hangs up) does not cancel the operation."""
        return await asyncio.shield(self.task)


class Operations:
    """The engine of one process. The API, the CLI and the scheduler all submit here."""

    def __init__(
        self, services: Services, hooks: Mapping[str, Sequence[Hook]] | None = None
    ) -> None:
        from api.notify.service import Notifier
        from api.operations.hooks import AFTER, FAILED

        self.services = services
        self._hooks = AFTER if hooks is None else hooks
        self._failed_hooks = FAILED
        self.notifier = Notifier(services.settings, services.sessions)
        self._running: dict[int, Handle[Any]] = {}

    async def submit(
        self,
        operation: Operation[R],
        caller: Caller = SYSTEM,
        views: list[ProgressView] | None = None,
    ) -> Handle[R]:
        """Check, lock and prepare `operation` (raising what refuses it), then run it in the
        background; the handle's `id` is its record's."""
        ctx = Context(self.services, caller, Tracker(views), self)
        await operation.check(ctx)
        lock = await self._take(operation, ctx)
        try:
            await operation.prepare(ctx)
        except BaseException:
            await _release(lock, ctx)
            raise
        task = asyncio.create_task(self._drive(operation, ctx, lock))
        handle = Handle(operation, task)
        self._running[id(task)] = handle
        task.add_done_callback(self._finished)
        return handle

    async def run(
        self,
        operation: Operation[R],
        caller: Caller = SYSTEM,
        views: list[ProgressView] | None = None,
    ) -> R:
        """Submit and wait for the end (CLI, scheduler, synchronous API routes)."""
        return await (await self.submit(operation, caller, views)).wait()

    async def run_inside(self, operation: Operation[R], parent: Context) -> R:
        """Run a child operation in the parent's task, under the parent's locks."""
        ctx = Context(self.services, parent.caller, Tracker(), self, parent.holding)
        await operation.check(ctx)
        lock = await self._take(operation, ctx)
        try:
            await operation.prepare(ctx)
            result = await self._work(operation, ctx)
        finally:
            await _release(lock, ctx)
        return await self._after(operation, ctx, result)

    def handle(self, record_id: str) -> Handle[Any] | None:
        """The handle of a running operation of this process, by its record's id."""
        for handle in self._running.values():
            if handle.id == record_id:
                return handle
        return None

    async def shutdown(self) -> None:
        """Cancel what still runs (each records itself as failed) and wait for it."""
        handles = list(self._running.values())
        for handle in handles:
            handle.task.cancel()
        for handle in handles:
            with contextlib.suppress(BaseException):
                await handle.task

    async def _take(self, operation: Operation[Any], ctx: Context) -> MutationLock | None:
        key = operation.lock_key()
        if key is None or key in ctx.holding:
            return None
        lock = MutationLock(self.services.engine, key)
        if not await lock.try_acquire():
            raise await operation.busy(ctx)
        ctx.holding.add(key)
        return lock

    async def _drive(self, operation: Operation[R], ctx: Context, lock: MutationLock | None) -> R:
        logs.operation_id.set(operation.id)  # this task's own context: its after-hooks too
        try:
            result = await self._work(operation, ctx)
        except Exception as error:
            self._failed(operation, ctx, error)
            raise
        finally:
            await _release(lock, ctx)
        return await self._after(operation, ctx, result)

    def _failed(self, operation: Operation[Any], ctx: Context, error: Exception) -> None:
        """An operation that raised (a restore): its kind's failure hooks (notifications)."""
        for hook in self._failed_hooks.get(operation.kind, ()):
            try:
                hook(ctx, operation, error)
            except Exception:
                log.exception("failure hook %s of %s failed", hook.__name__, operation.kind)

    async def _work(self, operation: Operation[R], ctx: Context) -> R:
        # Every line the work logs carries the operation's id (a child's own while it runs).
        operation_id = logs.operation_id.set(operation.id)
        flusher = asyncio.create_task(self._flush(operation, ctx))
        try:
            return await operation.run(ctx)
        finally:
            flusher.cancel()
            logs.operation_id.reset(operation_id)

    async def _after(self, operation: Operation[R], ctx: Context, result: R) -> R:
        for hook in self._hooks.get(operation.kind, ()):
            try:
                result = await hook(ctx, operation, result)
            except Exception:
                # An after-hook never undoes the operation it follows; it records its own failure.
                log.exception("after-hook %s of %s failed", hook.__name__, operation.kind)
        return result

    async def _flush(self, operation: Operation[Any], ctx: Context) -> None:
        while True:
            await asyncio.sleep(PROGRESS_FLUSH_SECONDS)
            phase, done, total = ctx.tracker.snapshot()
            with contextlib.suppress(Exception):
                await operation.save_progress(ctx, phase, done, total)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.pop(id(task), None)
        if not task.cancelled() and task.exception() is not None:
            log.info("background operation ended with: %s", task.exception())


async def _release(lock: MutationLock | None, ctx: Context | None = None) -> None:
    if lock is None:
        return
    if ctx is not None:
        ctx.holding.discard(lock.key)
    await lock.release()
