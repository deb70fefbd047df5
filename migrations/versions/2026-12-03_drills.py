"""drills: the last deep verify (restore drill) of each backup, its outcome and duration

Revision ID: 2026_12_03_drills
Revises: 2026_12_03_notify
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_03_drills"
down_revision = "2026_12_03_notify"
branch_labels = None
depends_on = None

SCHEMA = "nexus_backup"


def upgrade() -> None:
    op.add_column(
        "system_backup", sa.Column("verified_at", sa.DateTime(timezone=True)), schema=SCHEMA
    )
    op.add_column("system_backup", sa.Column("verify_outcome", sa.Text()), schema=SCHEMA)
    op.add_column("system_backup", sa.Column("verify_duration_ms", sa.Integer()), schema=SCHEMA)
    op.add_column("system_backup", sa.Column("verify_error", sa.Text()), schema=SCHEMA)


def downgrade() -> None:
    for column in ("verify_error", "verify_duration_ms", "verify_outcome", "verified_at"):
        op.drop_column("system_backup", column, schema=SCHEMA)
