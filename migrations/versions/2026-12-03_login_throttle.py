"""login_throttle: failed-login counters per account and client address

Revision ID: 2026_12_03_login_throttle
Revises: 2026_11_26_cloud_sync
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_03_login_throttle"
down_revision = "2026_11_26_cloud_sync"
branch_labels = None
depends_on = None

SCHEMA = "nexus_backup"


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_login_throttle"),
        schema=SCHEMA,
    )
    op.create_index("ix_login_throttle_first_at", "login_throttle", ["first_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_login_throttle_first_at", table_name="login_throttle", schema=SCHEMA)
    op.drop_table("login_throttle", schema=SCHEMA)
