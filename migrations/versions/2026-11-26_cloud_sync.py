"""cloud sync state on system_backup

Revision ID: 2026_11_26_cloud_sync
Revises: 2026_11_26_auth
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_11_26_cloud_sync"
down_revision = "2026_11_26_auth"
branch_labels = None
depends_on = None

SCHEMA = "nexus_backup"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "system_backup",
        sa.Column("sync_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )
    op.add_column(
        "system_backup",
        sa.Column("sync_status", sa.String(20), nullable=False, server_default="none"),
        schema=SCHEMA,
    )
    op.add_column("system_backup", sa.Column("sync_error", sa.Text(), nullable=True), schema=SCHEMA)
    op.add_column(
        "system_backup",
        sa.Column("sync_attempts", sa.Integer(), nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    op.add_column("system_backup", sa.Column("next_sync_at", TS, nullable=True), schema=SCHEMA)
    op.add_column("system_backup", sa.Column("synced_at", TS, nullable=True), schema=SCHEMA)
    op.execute(
        f"ALTER TABLE {SCHEMA}.system_backup ADD CONSTRAINT ck_system_backup_sync_status "
        "CHECK (sync_status IN ('none', 'pending', 'syncing', 'synced'))"
    )
    op.create_index(
        "ix_system_backup_next_sync_at", "system_backup", ["next_sync_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("ix_system_backup_next_sync_at", "system_backup", schema=SCHEMA)
    op.execute(
        f"ALTER TABLE {SCHEMA}.system_backup DROP CONSTRAINT IF EXISTS ck_system_backup_sync_status"
    )
    for column in (
        "synced_at",
        "next_sync_at",
        "sync_attempts",
        "sync_error",
        "sync_status",
        "sync_requested",
    ):
        op.drop_column("system_backup", column, schema=SCHEMA)
