"""GET /metrics: Prometheus text, read from the CATALOG at scrape time.

Every replica on one catalog reports the same backups, schedules and restores (a counter kept in
memory would only know what its own process did). Each scrape reads a `CatalogSnapshot` (a few
aggregate queries on indexed columns: cheap at 10,000 backups), then renders it with the process
metrics through a registry of its own: the global `prometheus_client.REGISTRY` is never used, so
two apps in one process (the tests) never share or collide. Only nexus_scheduler_lag_seconds is
this process's own (api.scheduler.Scheduler.lag_seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api import __version__
from api.backups.models import SystemBackup
from api.deps import AdminDep, SessionDep, request_time
from api.restores.models import SystemRestore
from api.schedules.models import BackupSchedule
from api.schemas import errors
from api.states import BackupStatus, BackupType, RestoreStatus, SyncStatus

if TYPE_CHECKING:
    from api.scheduler import Scheduler


@dataclass
class CatalogSnapshot:
    """What the catalog says at one scrape."""

    backups: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, type): count
    last_success: datetime | None = None
    schedule_success: list[tuple[str, str, datetime]] = field(default_factory=list)
    latest_duration_seconds: float | None = None
    latest_size_bytes: int | None = None
    local_bytes: int = 0
    cloud_bytes: int = 0
    sync_backlog: int = 0
    restores: dict[str, int] = field(default_factory=dict)


async def read_catalog(session: AsyncSession) -> CatalogSnapshot:
    """One pass over the visible (not deleted) backups, grouped by status, type and schedule (a
    few dozen groups whatever the number of backups), folded here; the schedules' names; the
    newest completed backup through the listing's index; the restores."""
    b = SystemBackup
    visible = b.deleted_at.is_(None)
    completed = b.status == BackupStatus.completed.value
    snapshot = CatalogSnapshot()
    groups = await session.execute(
        select(
            b.status,
            b.type,
            b.schedule_id,
            func.count(),
            func.max(b.completed_at).filter(completed),
            func.coalesce(func.sum(b.file_size).filter(completed, b.file_path.is_not(None)), 0),
            func.coalesce(func.sum(b.file_size).filter(completed, b.is_cloud_synced), 0),
            func.count().filter(
                completed, b.sync_requested, b.sync_status != SyncStatus.synced.value
            ),
        )
        .where(visible)
        .group_by(b.status, b.type, b.schedule_id)
    )
    by_schedule: dict[str, datetime] = {}
    for status, kind, schedule_id, count, last, local, cloud, backlog in groups:
        snapshot.backups[(status, kind)] = snapshot.backups.get((status, kind), 0) + int(count)
        if last is not None:
            if snapshot.last_success is None or last > snapshot.last_success:
                snapshot.last_success = last
            if schedule_id is not None and (
                schedule_id not in by_schedule or last > by_schedule[schedule_id]
            ):
                by_schedule[schedule_id] = last
        snapshot.local_bytes += int(local or 0)
        snapshot.cloud_bytes += int(cloud or 0)
        snapshot.sync_backlog += int(backlog)
    if by_schedule:
        names = await session.execute(
            select(BackupSchedule.id, BackupSchedule.name)
            .where(BackupSchedule.id.in_(by_schedule))
            .order_by(BackupSchedule.name, BackupSchedule.id)
        )
        snapshot.schedule_success = [(i, name, by_schedule[i]) for i, name in names]
    # The newest completed backup, through the (status, created_at) index of the listing.
    latest = (
        await session.execute(
            select(b.started_at, b.completed_at, b.file_size)
            .where(visible, completed)
            .order_by(b.created_at.desc(), b.id)
            .limit(1)
        )
    ).first()
    if latest is not None:
        started, ended, size = latest
        if started is not None and ended is not None:
            snapshot.latest_duration_seconds = max(0.0, (ended - started).total_seconds())
        snapshot.latest_size_bytes = size
    restores = await session.execute(
        select(SystemRestore.status, func.count()).group_by(SystemRestore.status)
    )
    snapshot.restores = {status: int(count) for status, count in restores}
    return snapshot


def scheduler_lag(scheduler: Scheduler | None, now: datetime) -> float | None:
    """How late this process's ticker is: the last tick's lag, or longer while the next tick is
    overdue (a tick still running a long backup). None when no ticker runs here."""
    if scheduler is None or scheduler.due_at is None:
        return None
    overdue = (now - scheduler.due_at).total_seconds()
    return max(scheduler.lag_seconds or 0.0, overdue, 0.0)


class CatalogCollector:
    """A prometheus_client Collector over one CatalogSnapshot."""

    def __init__(self, snapshot: CatalogSnapshot, lag: float | None) -> None:
        self.snapshot = snapshot
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        yield InfoMetricFamily(
            "nexus_backup_build", "Nexus Backup version", {"version": __version__}
        )
        backups = GaugeMetricFamily(
            "nexus_backups",
            "Backups in the catalog (not deleted), by status and type",
            labels=["status", "type"],
        )
        for status in BackupStatus:
            for kind in BackupType:
                backups.add_metric([status.value, kind.value], s.backups.get((status, kind), 0))
        yield backups
        last = GaugeMetricFamily(
            "nexus_backup_last_success_timestamp_seconds",
            'When the newest completed backup completed (Unix time): schedule="" over all '
            "backups, else per schedule that has one",
            labels=["schedule", "schedule_id"],
        )
        if s.last_success is not None:
            last.add_metric(["", ""], s.last_success.timestamp())
        for schedule_id, name, when in s.schedule_success:
            last.add_metric([name, schedule_id], when.timestamp())
        yield last
        if s.latest_duration_seconds is not None:
            yield GaugeMetricFamily(
                "nexus_backup_last_duration_seconds",
                "How long the newest completed backup took",
                value=s.latest_duration_seconds,
            )
        if s.latest_size_bytes is not None:
            yield GaugeMetricFamily(
                "nexus_backup_last_size_bytes",
                "Archive size of the newest completed backup",
                value=s.latest_size_bytes,
            )
        stored = GaugeMetricFamily(
            "nexus_backup_stored_bytes",
            "Bytes of completed backups: in BACKUP_DIR (local) and confirmed in the bucket (cloud)",
            labels=["location"],
        )
        stored.add_metric(["local"], s.local_bytes)
        stored.add_metric(["cloud"], s.cloud_bytes)
        yield stored
        yield GaugeMetricFamily(
            "nexus_backup_sync_backlog",
            "Completed backups asked to sync to the bucket and not synced yet",
            value=s.sync_backlog,
        )
        restores = GaugeMetricFamily(
            "nexus_restores", "Restores (and dry runs) in the catalog, by status", labels=["status"]
        )
        for state in RestoreStatus:
            restores.add_metric([state.value], s.restores.get(state, 0))
        yield restores
        if self.lag is not None:
            yield GaugeMetricFamily(
                "nexus_scheduler_lag_seconds",
                "How late this process's scheduler tick ran after its due time",
                value=self.lag,
            )


def render(snapshot: CatalogSnapshot, lag: float | None, accept: str | None) -> tuple[bytes, str]:
    """The exposition (text format, or OpenMetrics when `accept` asks for it) of the snapshot and
    this process's metrics, through a registry made for this scrape; (body, content type)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogCollector(snapshot, lag))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **errors(401, 403, 503),
    },
)
async def metrics(request: Request, _: AdminDep, session: SessionDep) -> Response:
    """Prometheus metrics (backups by status and type, last success per schedule, durations,
    bytes, sync backlog, restores, scheduler lag, process). Needs a Bearer API token of an admin
    role: Prometheus sends it with `authorization: {credentials_file: ...}`."""
    snapshot = await read_catalog(session)
    scheduler: Scheduler | None = getattr(request.app.state, "scheduler", None)
    lag = scheduler_lag(scheduler, request_time(request))
    body, content_type = render(snapshot, lag, request.headers.get("accept"))
    return Response(body, media_type=content_type)
