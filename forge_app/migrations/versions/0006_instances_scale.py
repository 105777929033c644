"""Instances at scale: archiving, per-token caps (issue 9).

Revision ID: 0006_instances_scale
Revises: 0005_security
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0006_instances_scale"
down_revision = "0005_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
