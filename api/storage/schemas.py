"""What /storage answers: the storage's status and a round-trip test's result."""

from __future__ import annotations

from datetime import datetime

from api.schemas import Schema


class StorageStatus(Schema):
    configured: bool
    provider: str | None
    bucket: str | None
    endpoint_host: str | None
    region: str | None
    prefix: str | None
    last_successful_sync_at: datetime | None
    pending_syncs: int
    last_sync_error: str | None


class StorageTest(Schema):
    ok: bool
    latency_ms: int | None
    detail: str
