"""Security hardening: sessions, sign-in throttling, approvals (issue 9).

- ``users.session_generation``: "Sign out everywhere" raises it; it is part of the session stamp.
- ``revoked_sessions``: signed-out sessions, refused until they would have expired.
- ``login_throttles``: failed sign-ins per account, address, device, counted before the check.
- ``prompt_set_contributors``: who changed a set since its last version (the four-eyes rule).
  Filled from the prompts and sets changed after each set's newest version.

Revision ID: 0005_security
Revises: 0004_multiset
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005_security"
down_revision = "0004_multiset"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("session_generation", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "revoked_sessions",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_revoked_sessions"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_revoked_sessions_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_revoked_sessions_user_id", "revoked_sessions", ["user_id"])
    op.create_index("ix_revoked_sessions_expires_at", "revoked_sessions", ["expires_at"])
    op.create_table(
        "login_throttles",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(), nullable=True),
        sa.Column("blocked_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_login_throttles"),
    )
    op.create_table(
        "prompt_set_contributors",
        sa.Column("prompt_set_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("prompt_set_id", "user_id", name="pk_prompt_set_contributors"),
        sa.ForeignKeyConstraint(
            ["prompt_set_id"],
            ["prompt_sets.id"],
            name="fk_prompt_set_contributors_prompt_set_id_prompt_sets",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_prompt_set_contributors_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_prompt_set_contributors_user_id", "prompt_set_contributors", ["user_id"])
    _record_contributors()


def _record_contributors() -> None:
    """Who last changed a prompt, or the set, after the set's newest version."""
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    op.get_bind().execute(
        sa.text(
            "INSERT INTO prompt_set_contributors (prompt_set_id, user_id, since) "
            "SELECT p.prompt_set_id, p.updated_by_id, :now FROM prompts p "
            "WHERE p.updated_by_id IS NOT NULL AND NOT EXISTS ("
            "  SELECT 1 FROM prompt_set_versions v"
            "  WHERE v.prompt_set_id = p.prompt_set_id AND v.created_at >= p.updated_at) "
            "UNION "
            "SELECT s.id, s.updated_by_id, :now FROM prompt_sets s "
            "WHERE s.updated_by_id IS NOT NULL AND NOT EXISTS ("
            "  SELECT 1 FROM prompt_set_versions v"
            "  WHERE v.prompt_set_id = s.id AND v.created_at >= s.updated_at)"
        ).bindparams(sa.bindparam("now", now, type_=sa.DateTime()))
    )


def downgrade() -> None:
    op.drop_index("ix_prompt_set_contributors_user_id", table_name="prompt_set_contributors")
    op.drop_table("prompt_set_contributors")
    op.drop_table("login_throttles")
    op.drop_index("ix_revoked_sessions_expires_at", table_name="revoked_sessions")
    op.drop_index("ix_revoked_sessions_user_id", table_name="revoked_sessions")
    op.drop_table("revoked_sessions")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_generation")
