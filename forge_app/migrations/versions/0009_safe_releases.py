"""Safe releases: guard policies, scheduled jobs, webhooks (issue 11).

Revision ID: 0009_safe_releases
Revises: 0008_usage
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_safe_releases"
down_revision = "0008_usage"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "guard_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("max_error_rate", sa.Float(), nullable=False),
        sa.Column("min_calls", sa.Integer(), nullable=False),
        sa.Column("window_minutes", sa.Integer(), nullable=False),
        sa.Column("stages_json", sa.Text(), nullable=False),
        sa.Column("hold_minutes", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        _fk("guard_policies", "project_id", "projects", "CASCADE"),
        _fk("guard_policies", "channel_id", "channels", "CASCADE"),
        _fk("guard_policies", "updated_by_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_guard_policies"),
        sa.UniqueConstraint("channel_id", name="uq_guard_policies_channel_id"),
    )
    op.create_index("ix_guard_policies_project_id", "guard_policies", ["project_id"])
    op.create_table(
        "guard_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("judged_sequence", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("result_sequence", sa.Integer(), nullable=True),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("figures_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _fk("guard_actions", "project_id", "projects", "CASCADE"),
        _fk("guard_actions", "channel_id", "channels", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_guard_actions"),
        sa.UniqueConstraint(
            "channel_id",
            "judged_sequence",
            "kind",
            name="uq_guard_actions_channel_id_judged_sequence_kind",
        ),
    )
    op.create_index("ix_guard_actions_project_id", "guard_actions", ["project_id"])
    op.create_index("ix_guard_actions_channel_id", "guard_actions", ["channel_id"])
    op.create_table(
        "scheduled_jobs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("prompt_set_version_id", sa.Integer(), nullable=True),
        sa.Column("percent", sa.Integer(), nullable=True),
        sa.Column("to_sequence", sa.Integer(), nullable=True),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("run_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("result_sequence", sa.Integer(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _fk("scheduled_jobs", "project_id", "projects", "CASCADE"),
        _fk("scheduled_jobs", "channel_id", "channels", "CASCADE"),
        _fk("scheduled_jobs", "prompt_set_version_id", "prompt_set_versions", "CASCADE"),
        _fk("scheduled_jobs", "created_by_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_scheduled_jobs"),
    )
    op.create_index("ix_scheduled_jobs_project_id", "scheduled_jobs", ["project_id"])
    op.create_index("ix_scheduled_jobs_channel_id", "scheduled_jobs", ["channel_id"])
    op.create_index("ix_scheduled_jobs_status_run_at", "scheduled_jobs", ["status", "run_at"])
    op.create_table(
        "project_webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        _fk("project_webhooks", "project_id", "projects", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_project_webhooks"),
        sa.UniqueConstraint("project_id", name="uq_project_webhooks_project_id"),
    )


def downgrade() -> None:
    op.drop_table("project_webhooks")
    op.drop_index("ix_scheduled_jobs_status_run_at", table_name="scheduled_jobs")
    op.drop_index("ix_scheduled_jobs_channel_id", table_name="scheduled_jobs")
    op.drop_index("ix_scheduled_jobs_project_id", table_name="scheduled_jobs")
    op.drop_table("scheduled_jobs")
    op.drop_index("ix_guard_actions_channel_id", table_name="guard_actions")
    op.drop_index("ix_guard_actions_project_id", table_name="guard_actions")
    op.drop_table("guard_actions")
    op.drop_index("ix_guard_policies_project_id", table_name="guard_policies")
    op.drop_table("guard_policies")
