"""backup_list_indexes: the backup listing, its counts and the purge scan read indexes

The listing shows the backups not deleted, newest first (created_at DESC, id), optionally of
one status or type, and counts them: partial indexes on exactly that order, with the filter
column first, serve each page and each count from the index alone, at any offset. The purge
scan (deleted but not yet purged) reads a partial index of the few such rows.

Revision ID: 2026_12_03_backup_list_indexes
Revises: 2026_12_03_backup_purge
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_03_backup_list_indexes"
down_revision = "2026_12_03_backup_purge"
branch_labels = None
depends_on = None

SCHEMA = "nexus_backup"
VISIBLE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_system_backup_visible",
        "system_backup",
        [sa.text("created_at DESC"), "id"],
        schema=SCHEMA,
        postgresql_where=VISIBLE,
    )
    op.create_index(
        "ix_system_backup_visible_status",
        "system_backup",
        ["status", sa.text("created_at DESC"), "id"],
        schema=SCHEMA,
        postgresql_where=VISIBLE,
    )
    op.create_index(
        "ix_system_backup_visible_type",
        "system_backup",
        ["type", sa.text("created_at DESC"), "id"],
        schema=SCHEMA,
        postgresql_where=VISIBLE,
    )
    op.create_index(
        "ix_system_backup_unpurged",
        "system_backup",
        ["id"],
        schema=SCHEMA,
        postgresql_where=sa.text("deleted_at IS NOT NULL AND purged_at IS NULL"),
    )


def downgrade() -> None:
    for name in (
        "ix_system_backup_unpurged",
        "ix_system_backup_visible_type",
        "ix_system_backup_visible_status",
        "ix_system_backup_visible",
    ):
        op.drop_index(name, table_name="system_backup", schema=SCHEMA)
