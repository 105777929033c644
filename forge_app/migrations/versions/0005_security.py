"""Security hardening: sessions, sign-in throttling, approvals (issue 9).

Revision ID: 0005_security
Revises: 0004_multiset
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0005_security"
down_revision = "0004_multiset"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
