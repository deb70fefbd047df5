"""/backups: list, read, create, delete, download, restore, verify."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import Row

from api.backups import downloads, service
from api.backups import verify as drills
from api.backups.models import SystemBackup
from api.backups.schemas import (
    BackupCreate,
    BackupList,
    BackupOut,
    DownloadLink,
    LatestDrill,
    Progress,
    RestoreRequestIn,
    VerifyOut,
)
from api.deps import (
    AdminDep,
    BackupDeleterDep,
    DestroyerDep,
    OperationsDep,
    ServicesDep,
    SessionDep,
    caller,
    client_address,
)
from api.operations import BackupOp, DeleteOp, RestoreOp, SyncOp, VerifyOp
from api.restores.runner import RestoreRequest
from api.restores.schemas import RestoreOut
from api.schemas import errors
from api.states import BackupStatus, BackupType
from api.storage import service as storage
from api.storage.base import content_disposition

router = APIRouter(prefix="/backups", tags=["backups"])


def to_out(backup: SystemBackup) -> BackupOut:
    return _progress(
        BackupOut.model_validate(backup),
        backup.phase,
        backup.progress_bytes,
        backup.progress_total,
    )


def _listed_out(row: Row[Any]) -> BackupOut:
    """A listed row, as to_out makes it of a SystemBackup (validated from a dict: the fastest
    input pydantic reads)."""
    values = row._asdict()
    return _progress(
        BackupOut.model_validate(values),
        values["phase"],
        values["progress_bytes"],
        values["progress_total"],
    )


def _progress(out: BackupOut, phase: str | None, done: int, total: int | None) -> BackupOut:
    if out.status in ("pending", "in_progress"):
        out.progress = Progress(phase=phase, bytes_done=done, bytes_total=total)
    return out


@router.get(
    "",
    operation_id="backup_list",
    response_model=BackupList,
    responses=errors(401, 403, 422),
)
async def list_backups(
    session: SessionDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    status: BackupStatus | None = None,
    type: BackupType | None = None,
) -> BackupList:
    """Backups, newest first."""
    rows, total = await service.list_page(
        session, limit=limit, offset=offset, status=status, kind=type
    )
    return BackupList(items=[_listed_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/drills/latest",
    operation_id="backup_latestDrill",
    response_model=LatestDrill | None,
    responses=errors(401, 403),
)
async def latest_drill(session: SessionDep, _: AdminDep) -> LatestDrill | None:
    """The newest backup proven restorable (its last restore drill, a deep verify, passed), or
    null when none is."""
    backup = await drills.latest_drill(session)
    if backup is None or backup.verified_at is None:
        return None
    return LatestDrill(id=backup.id, name=backup.name, verified_at=backup.verified_at)


@router.get(
    "/{backup_id}",
    operation_id="backup_getById",
    response_model=BackupOut,
    responses=errors(401, 403, 404),
)
async def get_backup(backup_id: str, session: SessionDep, _: AdminDep) -> BackupOut:
    """One backup, with its progress while it runs."""
    return to_out(await service.get_visible(session, backup_id))


@router.post(
    "",
    operation_id="backup_create",
    status_code=202,
    response_model=BackupOut,
    responses={
        201: {"model": BackupOut, "description": "wait=true: the backup completed"},
        **errors(400, 401, 403, 409, 422, 500),
    },
)
async def create_backup(
    request: Request,
    operations: OperationsDep,
    principal: AdminDep,
    body: BackupCreate | None = None,
    wait: bool = False,
) -> Response:
    """Start a backup: 202 with the pending record. With wait=true, answer when it ends:
    201 completed, or 500 failed with the reason and the backup id."""
    body = body or BackupCreate()
    if body.sync_to_cloud:
        storage.require(operations.services.storage)
    backup = BackupOp(
        name=body.name,
        type=body.type,
        description=body.description,
        sync_to_cloud=body.sync_to_cloud,
    )
    handle = await operations.submit(backup, caller(request, principal))
    if not wait:
        assert backup.record is not None
        pending = to_out(backup.record)
        return JSONResponse(pending.model_dump(mode="json", by_alias=True), status_code=202)
    finished = await handle.wait()
    if finished.status != "completed":
        return JSONResponse(
            {
                "error": "BackupFailed",
                "detail": finished.error_message or "the backup failed",
                "backupId": finished.id,
            },
            status_code=500,
        )
    return JSONResponse(to_out(finished).model_dump(mode="json", by_alias=True), status_code=201)


@router.delete(
    "/{backup_id}",
    operation_id="backup_delete",
    response_model=BackupOut,
    responses=errors(401, 403, 404, 409),
)
async def delete_backup(
    backup_id: str,
    request: Request,
    operations: OperationsDep,
    principal: BackupDeleterDep,
) -> BackupOut:
    """Delete the archive and its sidecar, here and in the cloud, and mark the record deleted;
    409 while it runs; 503 (nothing deleted) when the cloud copy cannot be deleted."""
    return to_out(await operations.run(DeleteOp(backup_id), caller(request, principal)))


@router.get(
    "/{backup_id}/download",
    operation_id="backup_download",
    response_model=DownloadLink,
    responses=errors(401, 403, 404, 409),
)
async def download_link(
    backup_id: str,
    request: Request,
    services: ServicesDep,
    principal: AdminDep,
) -> DownloadLink:
    """A short-lived link to the archive: a signed link to this server while the local file
    exists, else a presigned GET of the cloud copy (the bucket stays private)."""

    def file_url(backup_id: str, expires: int, signature: str) -> str:
        url = request.url_for("backup_file", backup_id=backup_id)
        return str(url.include_query_params(expires=expires, signature=signature))

    return await downloads.link(services, caller(request, principal), backup_id, file_url)


@router.get(
    "/{backup_id}/file",
    operation_id="backup_file",
    name="backup_file",
    responses={
        200: {
            "content": {"application/gzip": {}, "application/zstd": {}},
            "description": "The archive",
        },
        **errors(403, 404),
    },
    response_class=Response,
)
async def download_file(
    backup_id: str,
    request: Request,
    services: ServicesDep,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    signature: Annotated[str, Query(min_length=1, max_length=128)],
) -> Response:
    """The archive itself, for a signed link from backup_download; 403 once expired or altered."""
    download = await downloads.open_archive(
        services, client_address(request), backup_id, expires=expires, signature=signature
    )
    return StreamingResponse(
        download.chunks(),
        media_type=download.media_type,
        headers={
            "Content-Length": str(download.size),
            "Content-Disposition": content_disposition(download.name),
        },
    )


@router.post(
    "/{backup_id}/restore",
    operation_id="backup_restore",
    status_code=202,
    response_model=RestoreOut,
    responses=errors(400, 401, 403, 404, 409, 422),
)
async def restore_backup(
    backup_id: str,
    body: RestoreRequestIn,
    request: Request,
    operations: OperationsDep,
    principal: DestroyerDep,
) -> RestoreOut:
    """Restore this backup (database and uploads). The backup's name must be typed back in
    `confirm`. A pre_restore safety backup is taken first; follow it on GET /restores/{id}."""
    restore = RestoreOp(RestoreRequest(archive=backup_id, force=body.force, confirm=body.confirm))
    await operations.submit(restore, caller(request, principal))
    return RestoreOut.model_validate(restore.record)


@router.post(
    "/{backup_id}/verify",
    operation_id="backup_verify",
    response_model=VerifyOut,
    responses=errors(401, 403, 404, 409, 503),
)
async def verify_backup(
    backup_id: str,
    request: Request,
    operations: OperationsDep,
    principal: AdminDep,
    deep: bool = False,
) -> VerifyOut:
    """Re-check the archive's checksums and manifest; `deep` also test-restores the database
    into a scratch database and compares row counts (one deep verify at a time: 409 while
    another runs). `ok` says whether it passed."""
    result = await operations.run(VerifyOp(backup_id, deep=deep), caller(request, principal))
    return VerifyOut(
        ok=result.ok,
        backup_id=backup_id,
        sha256=result.sha256,
        layout=result.layout,
        problem=result.problem,
        warnings=result.warnings,
        deep=deep,
        tables_checked=result.tables_checked,
    )


@router.post(
    "/{backup_id}/sync",
    operation_id="backup_sync",
    response_model=BackupOut,
    responses=errors(401, 403, 404, 409, 503),
)
async def sync_backup(
    backup_id: str, request: Request, operations: OperationsDep, principal: AdminDep
) -> BackupOut:
    """Upload this backup to cloud storage now and confirm the remote copy's size and SHA-256.
    A cloud failure leaves the backup completed with syncStatus pending and the reason."""
    return to_out(await operations.run(SyncOp(backup_id), caller(request, principal)))
