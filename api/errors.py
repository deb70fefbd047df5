"""Errors that say what happened and what to do. Each maps to an HTTP status."""

from __future__ import annotations


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
