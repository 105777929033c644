"""LIVE instances reported by heartbeats (issue 5).

Revision ID: 0003_instances
Revises: 0002_distribution
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_instances"
down_revision = "0002_distribution"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("token_id", sa.String(12), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.String(256), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("client_version", sa.String(64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("token_rejected_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_live_instances"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_live_instances_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "project_id", "instance_id", name="uq_live_instances_project_id_instance_id"
        ),
    )
    op.create_index("ix_live_instances_token_id", "live_instances", ["token_id"])
    op.create_index(
        "ix_live_instances_project_id_channel", "live_instances", ["project_id", "channel"]
    )


def downgrade() -> None:
    op.drop_table("live_instances")
