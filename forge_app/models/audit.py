"""The append-only audit log: who did what to which object, when."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, foreign, mapped_column, relationship

from forge_app.models._base import Base, BigIntId, JSONType, UTCDateTime, utcnow
from forge_app.models.accounts import User

__all__ = ["AuditEvent", "PromptSetContributor"]


class AuditEvent(Base):
    """One audit record. Rows are never updated or deleted (database triggers refuse it).

    ``actor_email`` and ``object_label`` are copies taken at the time, so the record still reads
    correctly after a rename or a user's removal. ``org_id``, ``project_id`` and ``actor_id``
    carry no foreign key on purpose: the log outlives what it describes (and a cascading
    ``SET NULL`` would be an update, which the log refuses).
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_project_id_id", "project_id", "id"),
        Index("ix_audit_events_org_id_id", "org_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    org_id: Mapped[int | None] = mapped_column(nullable=True)
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    actor_id: Mapped[int | None] = mapped_column(nullable=True)
    actor_email: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    object_label: Mapped[str] = mapped_column(String(300))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    actor: Mapped[User | None] = relationship(
        primaryjoin=lambda: foreign(AuditEvent.actor_id) == User.id, viewonly=True
    )


class PromptSetContributor(Base):
    """Someone who changed a prompt set's content (an edit, a restore, an import) since its
    last version: the four-eyes rule refuses their approval. Cleared when a version is made."""

    __tablename__ = "prompt_set_contributors"

    prompt_set_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("prompt_sets.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
