"""Multi-set channels: publications record every entry of a v2 pointer (issue 8).

Revision ID: 0004_multiset
Revises: 0003_instances
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0004_multiset"
down_revision = "0003_instances"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
