"""Personal API tokens and connected remote projects (issue 10).

Revision ID: 0007_api_tokens
Revises: 0006_instances_scale
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_api_tokens"
down_revision = "0006_instances_scale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("create_key", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_id", name="uq_api_tokens_token_id"),
        sa.UniqueConstraint("user_id", "create_key", name="uq_api_tokens_user_id_create_key"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])

    op.create_table(
        "remote_projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("forge_name", sa.String(80), nullable=False),
        sa.Column("remote_project_id", sa.String(64), nullable=False),
        sa.Column("remote_org_name", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_remote_projects"),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name="fk_remote_projects_org_id_organisations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name="fk_remote_projects_created_by_id_users",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint(
            "org_id",
            "forge_name",
            "remote_project_id",
            name="uq_remote_projects_org_id_forge_name_remote_project_id",
        ),
    )
    op.create_index("ix_remote_projects_org_id", "remote_projects", ["org_id"])


def downgrade() -> None:
    op.drop_index("ix_remote_projects_org_id", table_name="remote_projects")
    op.drop_table("remote_projects")
    op.drop_index("ix_api_tokens_user_id", table_name="api_tokens")
    op.drop_table("api_tokens")
