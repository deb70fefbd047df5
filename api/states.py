"""States, types and phases, defined once.

The catalog models build their CHECK constraints from these, the API schemas expose them as
OpenAPI enums (so the web's generated types are unions), and the CLI builds its choices from
them. The values are the strings the catalog stores: CHECK constraints and existing rows depend
on them, so a value never changes; a new one needs a migration where a constraint lists them.
"""

from __future__ import annotations

from enum import StrEnum

from api.config import Compression

__all__ = [
    "API_BACKUP_TYPES",
    "CLI_BACKUP_TYPES",
    "AuditOutcome",
    "BackupPhase",
    "BackupStatus",
    "BackupType",
    "Compression",
    "OperationKind",
    "RestorePhase",
    "RestoreStatus",
    "SyncStatus",
    "sql_in",
]


class BackupStatus(StrEnum):
    """system_backup.status (CHECK ck_system_backup_status)."""

    pending = "pending"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"


class BackupType(StrEnum):
    """system_backup.type (CHECK ck_system_backup_type): what started the backup."""

    manual = "manual"
    scheduled = "scheduled"
    pre_update = "pre_update"
    pre_restore = "pre_restore"


# The types a person may ask for: POST /backups takes these two; `nexus-backup backup --type`
# also takes scheduled (for an outside scheduler). Only a restore takes a pre_restore backup.
API_BACKUP_TYPES = (BackupType.manual, BackupType.pre_update)
CLI_BACKUP_TYPES = (*API_BACKUP_TYPES, BackupType.scheduled)


class SyncStatus(StrEnum):
    """system_backup.sync_status (CHECK ck_system_backup_sync_status): the cloud copy."""

    none = "none"
    pending = "pending"  # waiting for its first upload, or to be retried
    syncing = "syncing"
    synced = "synced"


class RestoreStatus(StrEnum):
    """system_restore.status (no CHECK constraint in the catalog)."""

    pending = "pending"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"


class BackupPhase(StrEnum):
    """system_backup.phase while a backup runs (None once it ended). The runner writes
    `starting`; the progress flusher copies the tracker's labels, which people read."""

    starting = "starting"
    dumping = "dumping database and archiving uploads"
    writing = "writing archive"
    verifying = "verifying"


class RestorePhase(StrEnum):
    """system_restore.phase while a restore runs (None once it ended): the first three are
    what the runner stores; the others are the progress labels people see."""

    verifying = "verifying"
    safety_backup = "safety backup"
    restoring = "restoring"
    verifying_archive = "verifying archive"
    taking_safety_backup = "taking the pre_restore safety backup"
    restoring_data = "restoring database and uploads"


class OperationKind(StrEnum):
    """What one queued operation does."""

    backup = "backup"
    restore = "restore"
    verify = "verify"
    deep_verify = "deep_verify"
    sync = "sync"
    delete = "delete"
    retention = "retention"


class AuditOutcome(StrEnum):
    """audit_log.outcome: how the audited action ended (no CHECK constraint)."""

    started = "started"
    completed = "completed"
    failed = "failed"
    refused = "refused"


def sql_in(column: str, values: type[StrEnum]) -> str:
    """`column IN ('a', 'b')`: the body of a CHECK constraint listing an enum's values, written
    as the migrations wrote it."""
    listed = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({listed})"
