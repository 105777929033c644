"""Distribution models: ACCESS_TOKENs, channels and the pointers the FORGE published.

    >>> from forge_app.models.distribution import Channel
    >>> Channel.default_policy("staging")
    'review'

``AccessToken`` keeps the token's secret encrypted at rest (with ``FORGE_DATA_KEY``, see
:mod:`forge_app.services.tokens`) and a SHA-256 hash of the full token text for bearer checks.
``Publication`` has one row per pointer the FORGE wrote, added only after the pointer's
compare-and-swap succeeded.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from forge_app.models._base import Base, UTCDateTime, parent_ref, user_ref, utcnow
from forge_app.models.accounts import User
from forge_app.models.projects import Project, SetStatus

__all__ = [
    "DEFAULT_CHANNELS",
    "POLICIES",
    "PUBLICATION_KINDS",
    "AccessToken",
    "Channel",
    "Publication",
]

#: Which prompt set statuses a channel accepts (DESIGN §1), by policy name.
POLICIES: dict[str, tuple[str, ...]] = {
    "locked": (SetStatus.LOCKED.value,),
    "review": (SetStatus.REVIEW.value, SetStatus.LOCKED.value),
    "any": (SetStatus.LIVE.value, SetStatus.REVIEW.value, SetStatus.LOCKED.value),
}
#: The channels every project has, with their policies, in display order.
DEFAULT_CHANNELS: dict[str, str] = {
    "production": "locked",
    "staging": "review",
    "development": "any",
}
PUBLICATION_KINDS = ("publish", "rollback", "reencrypt", "rollout", "promote", "remove")


class AccessToken(Base):
    """An ACCESS_TOKEN of a project (DESIGN §5). The token text itself is never stored."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[uuid.UUID] = parent_ref("projects")
    token_id: Mapped[str] = mapped_column(String(12), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(120))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = user_ref()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by_id: Mapped[int | None] = user_ref()

    project: Mapped[Project] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    revoked_by: Mapped[User | None] = relationship(foreign_keys=[revoked_by_id])

    def __repr__(self) -> str:  # never the secret
        return f"AccessToken(token_id={self.token_id!r}, name={self.name!r})"


class Channel(Base):
    """A release channel of a project; ``policy`` is a key of :data:`POLICIES`."""

    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[uuid.UUID] = parent_ref("projects")
    name: Mapped[str] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(String(16), default="locked")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = user_ref()

    project: Mapped[Project] = relationship()

    @staticmethod
    def default_policy(name: str) -> str:
        """The policy of a default channel; custom channels accept LOCKED versions only."""
        return DEFAULT_CHANNELS.get(name, "locked")

    @property
    def accepts(self) -> tuple[str, ...]:
        """The prompt set statuses this channel takes (``LOCKED``, ``REVIEW``, ``LIVE``)."""
        return POLICIES.get(self.policy, POLICIES["locked"])

    @property
    def is_default(self) -> bool:
        return self.name in DEFAULT_CHANNELS

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"


class Publication(Base):
    """One pointer the FORGE wrote to a channel (publish, remove, rollback, re-encryption, ...).

    ``releases_json`` is the pointer's whole ``releases`` list (and ``previous_json`` the
    rollout's ``previous`` list), each entry ``{prompt_set_id, name, version, content_sha256,
    object_path}`` in list order; ``summary`` says what changed ("Support bot 0.2.0 → 0.3.0;
    Checkout helper added"). The single-entry columns (``version``, ``prompt_set_id``,
    ``content_sha256``, ``object_path``) describe the entry this publication changed and are
    null when it changed no single entry (remove, rollback, re-encryption of a whole list).
    ``prompt_set_id`` is the pointer's string (a FORGE prompt set's UUID as text);
    ``prompt_set_version_id`` links the FORGE version when the content is one of its versions.
    """

    __tablename__ = "publications"
    __table_args__ = (UniqueConstraint("channel_id", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[uuid.UUID] = parent_ref("projects")
    channel_id: Mapped[int] = parent_ref("channels")
    sequence: Mapped[int] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(256), nullable=True)
    prompt_set_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    prompt_set_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompt_set_versions.id", ondelete="SET NULL"), nullable=True
    )
    content_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    object_path: Mapped[str | None] = mapped_column(String(512), nullable=True)
    releases_json: Mapped[str] = mapped_column(Text, default="[]")
    previous_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[str] = mapped_column(String(500), default="")
    kind: Mapped[str] = mapped_column(String(16))
    rollout_percent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    published_by_id: Mapped[int | None] = user_ref()
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    channel: Mapped[Channel] = relationship()
    published_by: Mapped[User | None] = relationship()

    @property
    def releases(self) -> list[dict[str, Any]]:
        """The pointer's ``releases`` as ``{prompt_set_id, name, version, content_sha256,
        object_path}`` dicts, in list order."""
        return _entries(self.releases_json) or []

    @property
    def previous_releases(self) -> list[dict[str, Any]] | None:
        """The rollout's ``previous`` list in the same shape, or None without a rollout."""
        return _entries(self.previous_json)

    def __repr__(self) -> str:
        return f"Publication({self.kind} seq {self.sequence}: {self.summary or self.version})"


def _entries(text: str | None) -> list[dict[str, Any]] | None:
    if text is None:
        return None
    value = json.loads(text)
    return [dict(entry) for entry in value] if isinstance(value, list) else []
