"""Projects, prompt sets, prompts and immutable prompt set versions (DESIGN §1, §3)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from forge_app.models._base import Base, JSONType, UTCDateTime, parent_ref, user_ref, utcnow
from forge_app.models.accounts import Organisation, User

__all__ = ["Project", "Prompt", "PromptSet", "PromptSetVersion", "SetStatus"]


class SetStatus(enum.StrEnum):
    """Prompt set workflow status: LIVE (editable) → REVIEW (frozen) → LOCKED (approved)."""

    LIVE = "LIVE"
    REVIEW = "REVIEW"
    LOCKED = "LOCKED"


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = user_ref()

    org: Mapped[Organisation] = relationship()


class PromptSet(Base):
    """A named group of prompts with a workflow status.

    ``revision`` grows with every change to the set or its prompts, so a reviewer approves
    exactly the content they looked at. ``pending_*`` describe the submission under review.
    """

    __tablename__ = "prompt_sets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = parent_ref("projects")
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(8), default=SetStatus.LIVE.value)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    pending_version: Mapped[str | None] = mapped_column(String(256), nullable=True)
    pending_bump: Mapped[str | None] = mapped_column(String(8), nullable=True)
    pending_changelog: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_by_id: Mapped[int | None] = user_ref()
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    review_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    review_comment_by_id: Mapped[int | None] = user_ref()
    review_comment_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = user_ref()

    project: Mapped[Project] = relationship()
    submitted_by: Mapped[User | None] = relationship(foreign_keys=[submitted_by_id])
    review_comment_by: Mapped[User | None] = relationship(foreign_keys=[review_comment_by_id])
    updated_by: Mapped[User | None] = relationship(foreign_keys=[updated_by_id])

    @property
    def editable(self) -> bool:
        return self.status == SetStatus.LIVE.value


class Prompt(Base):
    """One prompt of a prompt set's current (LIVE) content.

    ``key`` is the prompt id of DESIGN §1 (``welcome.message``). Exactly one of ``template``
    (text prompt) or ``messages`` (chat prompt, ``[{"role", "template"}]``) is set.
    ``meta`` is the bundle's ``metadata``; ``samples`` are preview values and never published.
    ``revision`` is SQLAlchemy's version counter: a concurrent save fails instead of silently
    overwriting another editor's change.
    """

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("prompt_set_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_set_id: Mapped[uuid.UUID] = parent_ref("prompt_sets")
    key: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(8))
    template: Mapped[str | None] = mapped_column(Text, nullable=True)
    messages: Mapped[list[dict[str, str]] | None] = mapped_column(JSONType, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    variables: Mapped[list[str]] = mapped_column(JSONType, default=list)
    samples: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    search_text: Mapped[str] = mapped_column(Text, default="")
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = user_ref()

    prompt_set: Mapped[PromptSet] = relationship()
    updated_by: Mapped[User | None] = relationship()

    __mapper_args__ = {"version_id_col": revision}

    @property
    def description(self) -> str:
        value = self.meta.get("description") if isinstance(self.meta, dict) else None
        return value if isinstance(value, str) else ""


class PromptSetVersion(Base):
    """An immutable snapshot: ``bundle_json`` holds the exact canonical bundle bytes (UTF-8).

    ``content_sha256`` is the SHA-256 of ``bundle_json.encode()``; ``created_at`` equals the
    bundle's own ``created_at``.
    """

    __tablename__ = "prompt_set_versions"
    __table_args__ = (UniqueConstraint("prompt_set_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_set_id: Mapped[uuid.UUID] = parent_ref("prompt_sets")
    version: Mapped[str] = mapped_column(String(256))
    bundle_json: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    prompt_count: Mapped[int] = mapped_column(Integer)
    changelog: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_by_id: Mapped[int | None] = user_ref()
    approved_by_id: Mapped[int | None] = user_ref()

    prompt_set: Mapped[PromptSet] = relationship()
    submitted_by: Mapped[User | None] = relationship(foreign_keys=[submitted_by_id])
    approved_by: Mapped[User | None] = relationship(foreign_keys=[approved_by_id])

    @property
    def bundle_bytes(self) -> bytes:
        """The exact bundle bytes of DESIGN §3 (what ``content_sha256`` hashes)."""
        return self.bundle_json.encode("utf-8")

    @property
    def is_prerelease(self) -> bool:
        return "-" in self.version.split("+", 1)[0]
