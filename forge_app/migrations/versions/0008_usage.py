"""Prompt usage from heartbeats (issue 11): time-bucketed counts, caller variables, report dedup.

Revision ID: 0008_usage
Revises: 0007_api_tokens
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_usage"
down_revision = "0007_api_tokens"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "prompt_usage",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("prompt_id", sa.String(128), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("bucket_start", sa.DateTime(), nullable=False),
        sa.Column("renders", sa.BigInteger(), nullable=False),
        sa.Column("render_errors", sa.BigInteger(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("call_errors", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("errors_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_prompt_usage_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_usage"),
        sa.UniqueConstraint(
            "project_id",
            "channel",
            "prompt_id",
            "content_sha256",
            "bucket_start",
            name="uq_prompt_usage_bucket",
        ),
    )
    op.create_index("ix_prompt_usage_bucket_start", "prompt_usage", ["bucket_start"])
    op.create_index(
        "ix_prompt_usage_project_id_bucket_start", "prompt_usage", ["project_id", "bucket_start"]
    )
    op.create_table(
        "caller_variables",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("prompt_id", sa.String(128), nullable=False),
        sa.Column("variables_json", sa.Text(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_caller_variables_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_caller_variables"),
        sa.UniqueConstraint(
            "project_id",
            "instance_id",
            "prompt_id",
            name="uq_caller_variables_project_id_instance_id_prompt_id",
        ),
    )
    op.create_index("ix_caller_variables_last_seen_at", "caller_variables", ["last_seen_at"])
    with op.batch_alter_table("live_instances") as batch:
        batch.add_column(sa.Column("last_usage_report_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("live_instances") as batch:
        batch.drop_column("last_usage_report_id")
    op.drop_index("ix_caller_variables_last_seen_at", table_name="caller_variables")
    op.drop_table("caller_variables")
    op.drop_index("ix_prompt_usage_project_id_bucket_start", table_name="prompt_usage")
    op.drop_index("ix_prompt_usage_bucket_start", table_name="prompt_usage")
    op.drop_table("prompt_usage")
