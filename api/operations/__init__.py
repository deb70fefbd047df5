"""Operations: the one path every backup, restore, verify, sync, deletion and retention takes.

Entry points (api/*/router.py, api/cli.py, api/scheduler.py) build an operation and submit it
to the process's `Operations` engine (api.operations.engine); each kind's module owns its
record's states and audit, and calls a runner for the work (api.backups.runner,
api.restores.runner, api.backups.verify, api.storage.service). After-hooks: hooks.py.
Recovery: recovery.py.
"""

from api.operations.backup import BackupOp, ScheduledBackupOp
from api.operations.delete import DeleteOp, RetentionOp
from api.operations.engine import Context, Handle, Operation, Operations
from api.operations.imports import ImportOp
from api.operations.restore import RestoreOp
from api.operations.sync import SyncOp
from api.operations.verify import ArchiveVerifyOp, VerifyOp

__all__ = [
    "ArchiveVerifyOp",
    "BackupOp",
    "Context",
    "DeleteOp",
    "Handle",
    "ImportOp",
    "Operation",
    "Operations",
    "RestoreOp",
    "RetentionOp",
    "ScheduledBackupOp",
    "SyncOp",
    "VerifyOp",
]
