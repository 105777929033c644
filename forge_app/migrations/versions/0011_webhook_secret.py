"""The webhook's signing secret (encrypted like ACCESS_TOKEN secrets).

Existing webhooks get none: deliveries to them fail with a note until an owner saves the
webhook again, which makes and shows a secret.

Revision ID: 0011_webhook_secret
Revises: 0010_invitations
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_webhook_secret"
down_revision = "0010_invitations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("project_webhooks") as batch:
        batch.add_column(sa.Column("secret_encrypted", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("project_webhooks") as batch:
        batch.drop_column("secret_encrypted")
