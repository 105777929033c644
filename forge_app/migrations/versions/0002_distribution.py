"""FORGE distribution: ACCESS_TOKENs, channels and the pointers the FORGE published.

Revision ID: 0002_distribution
Revises: 0001_core
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_distribution"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def _user_fk(column: str, table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["users.id"], name=f"fk_{table}_{column}_users", ondelete="SET NULL"
    )


def _project_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["project_id"],
        ["projects.id"],
        name=f"fk_{table}_project_id_projects",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "access_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("token_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_by_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_access_tokens"),
        _project_fk("access_tokens"),
        _user_fk("created_by_id", "access_tokens"),
        _user_fk("revoked_by_id", "access_tokens"),
    )
    op.create_index("ix_access_tokens_project_id", "access_tokens", ["project_id"])
    op.create_index("ix_access_tokens_token_id", "access_tokens", ["token_id"], unique=True)

    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_channels"),
        _project_fk("channels"),
        _user_fk("created_by_id", "channels"),
        sa.UniqueConstraint("project_id", "name", name="uq_channels_project_id_name"),
    )
    op.create_index("ix_channels_project_id", "channels", ["project_id"])

    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("prompt_set_id", sa.String(128), nullable=False),
        sa.Column("prompt_set_version_id", sa.Integer(), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("object_path", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rollout_percent", sa.Integer(), nullable=True),
        sa.Column("published_by_id", sa.Integer(), nullable=True),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_publications"),
        _project_fk("publications"),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name="fk_publications_channel_id_channels",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_set_version_id"],
            ["prompt_set_versions.id"],
            name="fk_publications_prompt_set_version_id_prompt_set_versions",
            ondelete="SET NULL",
        ),
        _user_fk("published_by_id", "publications"),
        sa.UniqueConstraint("channel_id", "sequence", name="uq_publications_channel_id_sequence"),
    )
    op.create_index("ix_publications_project_id", "publications", ["project_id"])
    op.create_index("ix_publications_channel_id", "publications", ["channel_id"])


def downgrade() -> None:
    op.drop_table("publications")
    op.drop_table("channels")
    op.drop_table("access_tokens")
