"""LIVE instances: the running ``anvil_client`` processes that report to the FORGE (DESIGN §7).

    >>> from forge_app.models.instances import LiveInstance
    >>> LiveInstance.__tablename__
    'live_instances'

One row per (project, instance id), created by the first heartbeat and updated by every later
one. An instance unseen for ``FORGE_INSTANCE_ARCHIVE_DAYS`` is *archived* (out of the default
view, still queryable, audited); only an owner's explicit "Forget" removes rows (audited).
``heartbeat_counters`` holds the heartbeat rate limits' fixed-window counters, shared by every
FORGE process through the database.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from forge_app.models._base import Base, JSONType, UTCDateTime, utcnow

__all__ = ["HeartbeatCounter", "LiveInstance"]


class LiveInstance(Base):
    """What one instance last reported about itself.

    ``token_id`` is the public 12-character id of the ACCESS_TOKEN that signed the heartbeat
    (no foreign key: a token row may go, the record of what used it stays). ``sequence`` is the
    last pointer the instance accepted, ``releases`` the entries it serves
    (``[{prompt_set_id, version, content_sha256}]``, sorted by ``prompt_set_id``).
    ``token_rejected_at`` is set when a heartbeat came with the instance's (now revoked) token;
    ``archived_at`` when it went unseen for too long (a heartbeat clears it).
    """

    __tablename__ = "live_instances"
    __table_args__ = (
        UniqueConstraint("project_id", "instance_id"),
        Index("ix_live_instances_project_id_channel", "project_id", "channel"),
        Index("ix_live_instances_project_id_last_seen_at", "project_id", "last_seen_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE")
    )
    instance_id: Mapped[str] = mapped_column(String(36))
    token_id: Mapped[str] = mapped_column(String(12), index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    sequence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    releases_json: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_version: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    token_rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The last usage report recorded for this instance (USAGE_CONTRACT.md: a report id is
    #: recorded once; the client resends a report until it is accepted).
    last_usage_report_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    @property
    def releases(self) -> list[dict[str, Any]]:
        """The entries it serves, ``[{prompt_set_id, version, content_sha256}]``."""
        return list(self.releases_json or [])

    @releases.setter
    def releases(self, entries: list[dict[str, Any]]) -> None:
        self.releases_json = sorted(
            (
                {
                    "prompt_set_id": str(e["prompt_set_id"]),
                    "version": str(e["version"]),
                    "content_sha256": str(e["content_sha256"]),
                }
                for e in entries
            ),
            key=lambda e: e["prompt_set_id"],
        )

    @property
    def version(self) -> str | None:
        """One line for lists: the one entry's version, or the versions joined by ``, ``
        (None when it serves nothing). Pages with set names use ``releases``."""
        entries = self.releases
        if not entries:
            return None
        return ", ".join(str(e["version"]) for e in entries)

    def __str__(self) -> str:
        return f"instance {self.instance_id[:8]} on {self.hostname or 'unknown host'}"


class HeartbeatCounter(Base):
    """One fixed-window counter of the heartbeat limits (``key`` names token or instance;
    ``window_index`` is the window's number since the epoch). Rows of past windows are deleted."""

    __tablename__ = "heartbeat_counters"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    window_index: Mapped[int] = mapped_column(BigInteger, index=True)
    hits: Mapped[int] = mapped_column(Integer)
