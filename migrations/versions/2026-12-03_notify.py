"""notify: the no-backup alert's shared state and each channel's last delivery

Revision ID: 2026_12_03_notify
Revises: 2026_12_03_backup_list_indexes
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_03_notify"
down_revision = "2026_12_03_backup_list_indexes"
branch_labels = None
depends_on = None

SCHEMA = "nexus_backup"


def upgrade() -> None:
    op.create_table(
        "notify_alert",
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("watching_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alerted_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_notify_alert"),
        schema=SCHEMA,
    )
    op.create_table(
        "notify_delivery",
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("channel", name="pk_notify_delivery"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("notify_delivery", schema=SCHEMA)
    op.drop_table("notify_alert", schema=SCHEMA)
