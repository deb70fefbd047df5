"""Every catalog table, imported once so that the metadata is complete."""

from api.audit.models import AuditLog
from api.auth.models import ApiToken, AppUser, AuthSession, CatalogSecret
from api.backups.models import SystemBackup
from api.db import Base
from api.notify.models import NotifyAlert, NotifyDelivery
from api.restores.models import SystemRestore
from api.schedules.models import BackupSchedule

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "AppUser",
    "AuditLog",
    "AuthSession",
    "BackupSchedule",
    "CatalogSecret",
    "NotifyAlert",
    "NotifyDelivery",
    "SystemBackup",
    "SystemRestore",
    "metadata",
]
