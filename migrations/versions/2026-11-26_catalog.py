"""catalog: system_backup, backup_schedule, system_restore, audit_log, restore_commit

Revision ID: 2026_11_26_catalog
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_26_catalog"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "nexus_backup"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "backup_schedule",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cron_expression", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("is_enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("sync_to_cloud", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_run_at", TS, nullable=True),
        sa.Column("next_run_at", TS, nullable=True),
        sa.Column("success_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failure_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_backup_schedule"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_backup_schedule_next_run_at", "backup_schedule", ["next_run_at"], schema=SCHEMA
    )
    op.create_table(
        "system_backup",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(64), nullable=True),
        sa.Column("compression", sa.String(10), nullable=False, server_default="gzip"),
        sa.Column("cloud_path", sa.Text(), nullable=True),
        sa.Column("cloud_provider", sa.String(10), nullable=True),
        sa.Column("is_cloud_synced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("table_count", sa.Integer(), nullable=True),
        sa.Column("record_count", sa.BigInteger(), nullable=True),
        sa.Column("uploaded_files_count", sa.Integer(), nullable=True),
        sa.Column("app_version", sa.String(100), nullable=True),
        sa.Column("schema_version", sa.String(200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("phase", sa.String(40), nullable=True),
        sa.Column("progress_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("progress_total", sa.BigInteger(), nullable=True),
        sa.Column("schedule_id", sa.String(36), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", TS, nullable=True),
        sa.CheckConstraint(
            "type IN ('manual', 'scheduled', 'pre_update', 'pre_restore')",
            name="ck_system_backup_type",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'in_progress', 'completed', 'failed')",
            name="ck_system_backup_status",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            [f"{SCHEMA}.backup_schedule.id"],
            name="fk_system_backup_schedule_id_backup_schedule",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_system_backup"),
        schema=SCHEMA,
    )
    op.create_index("ix_system_backup_name", "system_backup", ["name"], schema=SCHEMA)
    op.create_index("ix_system_backup_status", "system_backup", ["status"], schema=SCHEMA)
    op.create_index("ix_system_backup_created_at", "system_backup", ["created_at"], schema=SCHEMA)
    op.create_index("ix_system_backup_schedule_id", "system_backup", ["schedule_id"], schema=SCHEMA)
    op.create_table(
        "system_restore",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("backup_id", sa.String(36), nullable=True),
        sa.Column("archive_path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("phase", sa.String(40), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("pre_restore_backup_id", sa.String(36), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(200), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.ForeignKeyConstraint(
            ["backup_id"],
            [f"{SCHEMA}.system_backup.id"],
            name="fk_system_restore_backup_id_system_backup",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["pre_restore_backup_id"],
            [f"{SCHEMA}.system_backup.id"],
            name="fk_system_restore_pre_restore_backup_id_system_backup",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_system_restore"),
        schema=SCHEMA,
    )
    op.create_index("ix_system_restore_backup_id", "system_restore", ["backup_id"], schema=SCHEMA)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", postgresql.JSONB(), nullable=True),
        sa.Column("client_address", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        schema=SCHEMA,
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], schema=SCHEMA)
    op.create_index("ix_audit_log_action", "audit_log", ["action"], schema=SCHEMA)
    op.execute(
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.restore_commit ("
        "restore_id text PRIMARY KEY, committed_at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute(f"DROP TABLE IF EXISTS {SCHEMA}.restore_commit")
    op.drop_table("audit_log", schema=SCHEMA)
    op.drop_table("system_restore", schema=SCHEMA)
    op.drop_table("system_backup", schema=SCHEMA)
    op.drop_table("backup_schedule", schema=SCHEMA)
