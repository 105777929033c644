"""LIVE instances: the running ``anvil_client`` processes that report to the FORGE (DESIGN §7).

    >>> from forge_app.models.instances import LiveInstance
    >>> LiveInstance.__tablename__
    'live_instances'

One row per (project, instance id), created by the first heartbeat and updated by every later
one. Rows are never deleted by the FORGE on its own: an instance that stops reporting is shown
as stale, and only an owner's explicit "Forget" removes it (audited).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from forge_app.models._base import Base, UTCDateTime, utcnow

__all__ = ["LiveInstance"]


class LiveInstance(Base):
    """What one instance last reported about itself.

    ``token_id`` is the public 12-character id of the ACCESS_TOKEN that signed the heartbeat
    (no foreign key: a token row may go, the record of what used it stays). ``sequence`` is the
    last pointer the instance accepted, ``version``/``content_sha256`` the release it serves.
    ``token_rejected_at`` is set when a heartbeat came with the instance's (now revoked) token.
    """

    __tablename__ = "live_instances"
    __table_args__ = (
        UniqueConstraint("project_id", "instance_id"),
        Index("ix_live_instances_project_id_channel", "project_id", "channel"),
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
    version: Mapped[str | None] = mapped_column(String(256), nullable=True)
    content_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_version: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    token_rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def __str__(self) -> str:
        return f"instance {self.instance_id[:8]} on {self.hostname or 'unknown host'}"
