"""One mutation at a time across every process on one catalog: a PostgreSQL advisory lock.

The lock lives on a dedicated connection; if the process dies, PostgreSQL releases it.
"""

from __future__ import annotations

import contextlib
import hashlib
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MUTATION_LOCK = 0x6E6578_00  # "nex" + 0
DEEP_VERIFY_LOCK = 0x6E6578_01  # "nex" + 1: one scratch-database restore at a time


def sync_lock(backup_id: str) -> int:
    """The advisory lock a sync of this backup holds while it runs: a `syncing` record whose
    lock is free was left by a process that died (recovery sets it pending again)."""
    digest = hashlib.sha256(f"nexus-sync:{backup_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def is_free(engine: AsyncEngine, key: int) -> bool:
    """Whether no session holds the advisory lock `key` now (taken and given back at once)."""
    lock = MutationLock(engine, key)
    if not await lock.try_acquire():
        return False
    await lock.release()
    return True


class MutationLock:
    """The mutation lock by default; `key` names another advisory lock with the same rules."""

    def __init__(self, engine: AsyncEngine, key: int = MUTATION_LOCK) -> None:
        self._engine = engine
        self._key = key
        self._connection: AsyncConnection | None = None

    @property
    def key(self) -> int:
        return self._key

    @property
    def held(self) -> bool:
        return self._connection is not None

    async def try_acquire(self) -> bool:
        connection = await self._engine.connect()
        try:
            got = (
                await connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
                )
            ).scalar_one()
            await connection.commit()
        except BaseException:
            await connection.close()
            raise
        if not got:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(Exception):
            await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            await connection.commit()
        with contextlib.suppress(Exception):
            await connection.close()

    async def __aenter__(self) -> MutationLock:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.release()
