"""backup_purge: a deleted backup's files are removed after its deletion commits

Revision ID: 2026_12_03_backup_purge
Revises: 2026_12_03_login_throttle
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_03_backup_purge"
down_revision = "2026_12_03_login_throttle"
branch_labels = None
depends_on = None

SCHEMA = "nexus_backup"


def upgrade() -> None:
    op.add_column(
        "system_backup",
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )
    # Deletions before this revision removed the files first: they are purged.
    op.execute(
        f"UPDATE {SCHEMA}.system_backup SET purged_at = deleted_at WHERE deleted_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("system_backup", "purged_at", schema=SCHEMA)
