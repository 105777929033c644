"""Multi-set channels: publications record every entry of a v2 pointer (issue 8).

Revision ID: 0004_multiset
Revises: 0003_instances
Create Date: 2026-11-30
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004_multiset"
down_revision = "0003_instances"
branch_labels = None
depends_on = None

_SINGLE_ENTRY = (
    ("version", sa.String(256)),
    ("prompt_set_id", sa.String(128)),
    ("content_sha256", sa.String(64)),
    ("object_path", sa.String(512)),
)


def upgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("releases_json", sa.Text(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("previous_json", sa.Text(), nullable=True))
        batch.add_column(sa.Column("summary", sa.String(500), nullable=False, server_default=""))
        for name, type_ in _SINGLE_ENTRY:
            batch.alter_column(name, existing_type=type_, nullable=True)
    # A v1 publication served exactly its one entry: carry it over as a one-entry list.
    publications = sa.table(
        "publications",
        sa.column("id", sa.Integer()),
        sa.column("prompt_set_id", sa.String()),
        sa.column("version", sa.String()),
        sa.column("content_sha256", sa.String()),
        sa.column("object_path", sa.String()),
        sa.column("releases_json", sa.Text()),
        sa.column("summary", sa.String()),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(
            publications.c.id,
            publications.c.prompt_set_id,
            publications.c.version,
            publications.c.content_sha256,
            publications.c.object_path,
        )
    ).all()
    for row in rows:
        entry = {
            "prompt_set_id": row.prompt_set_id,
            "name": "",
            "version": row.version,
            "content_sha256": row.content_sha256,
            "object_path": row.object_path,
        }
        connection.execute(
            publications.update()
            .where(publications.c.id == row.id)
            .values(releases_json=json.dumps([entry]), summary=f"{row.version} published")
        )
    with op.batch_alter_table("publications") as batch:
        batch.alter_column("releases_json", existing_type=sa.Text(), server_default=None)
        batch.alter_column("summary", existing_type=sa.String(500), server_default=None)


def downgrade() -> None:
    publications = sa.table("publications", *(sa.column(name) for name, _ in _SINGLE_ENTRY))
    # v1 rows need a single entry; a publication without one cannot be described in v1.
    op.execute(
        publications.delete().where(
            sa.or_(*(publications.c[name].is_(None) for name, _ in _SINGLE_ENTRY))
        )
    )
    with op.batch_alter_table("publications") as batch:
        for name, type_ in _SINGLE_ENTRY:
            batch.alter_column(name, existing_type=type_, nullable=False)
        batch.drop_column("summary")
        batch.drop_column("previous_json")
        batch.drop_column("releases_json")
