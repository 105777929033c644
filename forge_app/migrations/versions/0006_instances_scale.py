"""Instances at scale: the served entry list (pointer v2), archiving, shared heartbeat limits
(issues 8 and 9).

Revision ID: 0006_instances_scale
Revises: 0005_security
Create Date: 2026-11-30

``live_instances.version``/``content_sha256`` (one release, pointer v1) become
``releases_json`` (the entries served); rows start with an empty list and get theirs with the
instance's next heartbeat (v1 heartbeats name no prompt set, so nothing can be carried over).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_instances_scale"
down_revision = "0005_security"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("live_instances") as batch:
        batch.add_column(
            sa.Column("releases_json", JSON, nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(sa.Column("archived_at", sa.DateTime(), nullable=True))
        batch.drop_column("version")
        batch.drop_column("content_sha256")
        batch.create_index(
            "ix_live_instances_project_id_last_seen_at", ["project_id", "last_seen_at"]
        )
    op.create_table(
        "heartbeat_counters",
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("window_index", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_heartbeat_counters"),
    )
    op.create_index("ix_heartbeat_counters_window_index", "heartbeat_counters", ["window_index"])


def downgrade() -> None:
    op.drop_index("ix_heartbeat_counters_window_index", table_name="heartbeat_counters")
    op.drop_table("heartbeat_counters")
    with op.batch_alter_table("live_instances") as batch:
        batch.drop_index("ix_live_instances_project_id_last_seen_at")
        batch.add_column(sa.Column("content_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("version", sa.String(256), nullable=True))
        batch.drop_column("archived_at")
        batch.drop_column("releases_json")
