"""The one error hierarchy: errors that say what happened and what to do.

Every failure the product expects (a bad setting, a refused archive, an unreachable bucket or
catalog) is an `AppError` subclass with an HTTP status. `install(app)` maps them (and
FastAPI's own errors) to `{"error": "<Kind>", "detail": "<what and how to fix>"}` once; the
CLI turns them into one `nexus-backup: error: ...` line once (api/cli.py `_Group`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import JSONResponse

log = logging.getLogger("nexus_backup.http")


class AppError(Exception):
    status_code = 500
    kind = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(AppError):
    status_code = 400
    kind = "BadRequest"


class Unauthorized(AppError):
    status_code = 401
    kind = "Unauthorized"


class Forbidden(AppError):
    status_code = 403
    kind = "Forbidden"


class NotFound(AppError):
    status_code = 404
    kind = "NotFound"


class Conflict(AppError):
    status_code = 409
    kind = "Conflict"


class Unprocessable(AppError):
    status_code = 422
    kind = "Unprocessable"


class Unavailable(AppError):
    status_code = 503
    kind = "Unavailable"


class StorageError(Unavailable):
    """A storage operation (local folder or bucket) failed. The message says what failed and
    what to check (BACKUP_DIR, BACKUP_S3_ENDPOINT, the bucket, the credentials); it never
    contains a secret. Re-exported by api.storage.base."""

    kind = "StorageError"


class CatalogUnavailable(Unavailable):
    """The catalog database cannot be reached (refused, unknown host, wrong password, missing
    database). The message names host:port/database and the setting to check, never the
    password."""

    kind = "CatalogUnavailable"


class NotConfigured(AppError):
    """A feature the request needs is not set up on this server (e.g. cloud storage)."""

    status_code = 409
    kind = "NotConfigured"


class ConfigError(AppError):
    """A setting is missing or wrong; the message names it and the fix."""

    status_code = 503
    kind = "ConfigError"


class ArchiveError(AppError):
    """An archive is corrupt, truncated, tampered with, foreign or unsafe."""

    status_code = 422
    kind = "ArchiveError"


class SourceError(AppError):
    """pg_dump, psql or the uploads tree failed."""

    status_code = 500
    kind = "SourceError"


class Busy(Conflict):
    """Another backup or restore is running."""

    kind = "Busy"


class UnsafePath(Forbidden):
    """A path or key read back from the catalog, a journal or a bucket points outside where it
    must be (BACKUP_DIR, the staging folder, the bucket prefix): the action is refused (403,
    which every route documents) and audited as `security.refused`."""

    kind = "UnsafePath"

    def __init__(self, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.path = path


class TooManyRequests(AppError):
    """Too many attempts (failed logins): wait `retry_after` seconds; sent as Retry-After."""

    status_code = 429
    kind = "TooManyRequests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)


# -- HTTP: one place maps every error to the JSON error shape -------------------------------

# Kinds for the HTTP errors Starlette raises itself (unknown route, wrong method, ...).
_KINDS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    409: "Conflict",
    413: "TooLarge",
    422: "Unprocessable",
}


def error_response(status: int, kind: str, detail: str) -> JSONResponse:
    """The error shape every route answers with: {"error": kind, "detail": detail}."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


def install(app: FastAPI, *, max_body_bytes: int) -> None:
    """Install the app's exception handlers: AppError (with WWW-Authenticate on 401 and
    Retry-After on 429), request validation, Starlette's HTTP errors, and anything
    unexpected as a 500 that shows no internals (the log has the traceback)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from api.middleware import too_large

    @app.exception_handler(AppError)
    async def app_error(request: Request, error: AppError) -> JSONResponse:
        response = error_response(error.status_code, error.kind, error.detail)
        if error.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(error, TooManyRequests):
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for item in error.errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return error_response(422, "Unprocessable", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail if isinstance(error.detail, str) else "request refused"
        if error.status_code == 404:
            detail = f"no route {request.method} {request.url.path}: see /docs"
        if error.status_code == 413:
            detail = too_large(max_body_bytes)
        return error_response(error.status_code, _KINDS.get(error.status_code, "Error"), detail)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            500, "InternalError", "unexpected server error; the log has the details"
        )
