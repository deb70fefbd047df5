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

Shutdown (`stop()` at SIGTERM, then `shutdown()`): the engine is `stopping`: new submissions are
refused (`ShuttingDown`, a 503) and what runs is cancelled; each operation cleans up and records
itself failed with `INTERRUPTED_BY_SHUTDOWN` (a restore is finished or undone first).

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
from api.errors import Busy, Unavailable
from api.locks import MutationLock
from api.progress import ProgressView, Tracker
from api.services import Services

log = logging.getLogger("nexus_backup.operations")
R = TypeVar("R")
PROGRESS_FLUSH_SECONDS = 1.0
INTERRUPTED_BY_SHUTDOWN = "interrupted by shutdown"


class ShuttingDown(Unavailable):
    """The process is stopping: no new operation starts, and a waiter on one that shutdown
    interrupted gets this instead of a bare cancellation."""


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
        client that hangs up) does not cancel the operation; an operation that shutdown
        interrupted raises ShuttingDown (its record says what became of it)."""
        try:
            return await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if not self.task.cancelled():
                raise  # the waiter itself was cancelled: the operation goes on
            raise ShuttingDown(
                f"{self.operation.kind} {self.id or ''} was {INTERRUPTED_BY_SHUTDOWN}; its record "
                "says what became of it; start it again once the service is back"
            ) from None


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
        self.stopping = False
        self._deadline: float | None = None  # loop time by which shutdown() gives up waiting

    async def submit(
        self,
        operation: Operation[R],
        caller: Caller = SYSTEM,
        views: list[ProgressView] | None = None,
    ) -> Handle[R]:
        """Check, lock and prepare `operation` (raising what refuses it), then run it in the
        background; the handle's `id` is its record's. Refused (ShuttingDown) once the engine
        is stopping."""
        self._refuse_if_stopping()
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

    def stop(self) -> None:
        """Start stopping (SIGTERM): refuse new submissions and cancel what runs, once (a
        second cancellation would cut into its cleanup); each operation cleans up and records
        itself failed, "interrupted by shutdown". Returns at once; `shutdown()` waits."""
        if self.stopping:
            return
        self.stopping = True
        timeout = self.services.settings.shutdown_timeout_seconds
        self._deadline = asyncio.get_running_loop().time() + timeout
        if self._running:
            log.info("stopping: %d running operation(s) cancelled", len(self._running))
        for handle in list(self._running.values()):
            if not handle.task.done():
                handle.task.cancel(INTERRUPTED_BY_SHUTDOWN)

    def stop_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """`stop()` from a signal handler (or another thread): scheduled on `loop`."""
        loop.call_soon_threadsafe(self.stop)

    async def shutdown(self) -> None:
        """Stop (if not yet) and wait for what ran to clean up and record itself, at most
        SHUTDOWN_TIMEOUT_SECONDS from when stopping began; then log what is still running
        (recovery at the next start marks it)."""
        self.stop()
        handles = list(self._running.values())
        assert self._deadline is not None
        remaining = max(0.0, self._deadline - asyncio.get_running_loop().time())
        if handles:
            _, late = await asyncio.wait([h.task for h in handles], timeout=remaining)
            for task in late:
                log.error(
                    "an operation did not stop within SHUTDOWN_TIMEOUT_SECONDS; the next start "
                    "recovers it (%s)",
                    task.get_name(),
                )
        for handle in handles:
            if handle.task.done() and not handle.task.cancelled():
                handle.task.exception()  # retrieved: its failure is recorded, not "never seen"

    def _refuse_if_stopping(self) -> None:
        if self.stopping:
            raise ShuttingDown(
                "the service is shutting down and starts no new backup, restore or other "
                "operation; retry once it is back"
            )

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
