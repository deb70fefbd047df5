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


# Catalog: system_backup.status, CHECK ck_system_backup_ck_system_backup_status.
class BackupStatus(StrEnum):
    """Where a backup is: pending, in_progress, then completed or failed."""

    pending = "pending"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"


# Catalog: system_backup.type, CHECK ck_system_backup_ck_system_backup_type.
class BackupType(StrEnum):
    """What started a backup: a person, a schedule, a deploy (pre_update) or a restore."""

    manual = "manual"
    scheduled = "scheduled"
    pre_update = "pre_update"
    pre_restore = "pre_restore"


# The types a person may ask for: POST /backups takes these two; `nexus-backup backup --type`
# also takes scheduled (for an outside scheduler). Only a restore takes a pre_restore backup.
API_BACKUP_TYPES = (BackupType.manual, BackupType.pre_update)
CLI_BACKUP_TYPES = (*API_BACKUP_TYPES, BackupType.scheduled)


# Catalog: system_backup.sync_status, CHECK ck_system_backup_sync_status.
class SyncStatus(StrEnum):
    """The cloud copy: none, pending (waiting or to be retried), syncing, synced."""

    none = "none"
    pending = "pending"  # waiting for its first upload, or to be retried
    syncing = "syncing"
    synced = "synced"


# Catalog: system_restore.status (no CHECK constraint).
class RestoreStatus(StrEnum):
    """Where a restore is: pending, in_progress, then completed or failed."""

    pending = "pending"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"


# Catalog: system_backup.phase, String(40), None once the backup ended. The runner writes
# `starting`; the progress flusher copies the tracker's labels, which people read.
class BackupPhase(StrEnum):
    """What a running backup is doing."""

    starting = "starting"
    dumping = "dumping database and archiving uploads"
    writing = "writing archive"
    verifying = "verifying"


# Catalog: system_restore.phase, String(40), None once the restore ended. The runner stores
# the first three; the others are the tracker's progress labels.
class RestorePhase(StrEnum):
    """What a running restore is doing."""

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
    recovery = "recovery"
    catalog_import = "import"


# Catalog: audit_log.outcome (no CHECK constraint).
class AuditOutcome(StrEnum):
    """How an audited action went: started, completed, failed, or refused before it began."""

    started = "started"
    completed = "completed"
    failed = "failed"
    refused = "refused"


def sql_in(column: str, values: type[StrEnum]) -> str:
    """`column IN ('a', 'b')`: the body of a CHECK constraint listing an enum's values, written
    as the migrations wrote it."""
    listed = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({listed})"
