"""Safe releases (issue 11): guard policies, the guard's automatic actions, scheduled jobs and
per-project webhooks.

    >>> from forge_app.models.releases import GuardAction
    >>> GuardAction.__tablename__
    'guard_actions'

``GuardAction`` rows are the exactly-once claim of an automatic move: one row per (channel,
publication sequence it judged, kind); a second FORGE process trying the same move fails on the
unique constraint and does nothing. ``ScheduledJob`` rows are claimed by one worker each (a
conditional UPDATE of ``status``; ``SELECT … FOR UPDATE SKIP LOCKED`` first on PostgreSQL).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from forge_app.models._base import (
    Base,
    BigIntId,
    UTCDateTime,
    json_object,
    parent_ref,
    user_ref,
    utcnow,
)
from forge_app.models.accounts import User
from forge_app.models.distribution import Channel

__all__ = [
    "JOB_KINDS",
    "JOB_STATUSES",
    "GuardAction",
    "GuardPolicy",
    "ProjectWebhook",
    "ScheduledJob",
]

JOB_KINDS = ("publish", "rollout", "rollback", "webhook")
JOB_STATUSES = ("pending", "running", "done", "failed", "cancelled")


class GuardPolicy(Base):
    """A channel's health guard: roll back when the new list's error rate passes
    ``max_error_rate`` after at least ``min_calls`` uses within ``window_minutes`` of a publish
    (or at any time during a rollout). ``stages`` (percentages, e.g. ``[10, 50, 100]``) make a
    rollout advance by itself after ``hold_minutes`` at each step while healthy."""

    __tablename__ = "guard_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[uuid.UUID] = parent_ref("projects")
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), unique=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    max_error_rate: Mapped[float] = mapped_column(Float, default=0.05)
    min_calls: Mapped[int] = mapped_column(Integer, default=50)
    window_minutes: Mapped[int] = mapped_column(Integer, default=30)
    stages_json: Mapped[str] = mapped_column(Text, default="[]")
    hold_minutes: Mapped[int] = mapped_column(Integer, default=10)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = user_ref()

    channel: Mapped[Channel] = relationship()

    @property
    def stages(self) -> list[int]:
        try:
            value = json.loads(self.stages_json or "[]")
        except ValueError:
            return []
        return [int(v) for v in value if isinstance(v, int)] if isinstance(value, list) else []


class GuardAction(Base):
    """An automatic move of the guard (``rollback``, ``abort`` or ``advance``) on the channel's
    publication ``judged_sequence``, with the figures that triggered it (``figures_json``)."""

    __tablename__ = "guard_actions"
    __table_args__ = (UniqueConstraint("channel_id", "judged_sequence", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[uuid.UUID] = parent_ref("projects")
    channel_id: Mapped[int] = parent_ref("channels")
    judged_sequence: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    result_sequence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[str] = mapped_column(String(500), default="")
    figures_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    channel: Mapped[Channel] = relationship()

    @property
    def figures(self) -> dict[str, Any]:
        return json_object(self.figures_json)


class ScheduledJob(Base):
    """A publish, rollout step, rollback or webhook delivery to run at ``run_at``.

    ``status``: pending → running (claimed by one worker) → done / failed; or cancelled.
    ``note`` says how it went (e.g. that it ran late, and why it failed)."""

    __tablename__ = "scheduled_jobs"
    __table_args__ = (Index("ix_scheduled_jobs_status_run_at", "status", "run_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    project_id: Mapped[uuid.UUID] = parent_ref("projects")
    channel_id: Mapped[int | None] = parent_ref("channels")
    kind: Mapped[str] = mapped_column(String(16))
    prompt_set_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompt_set_versions.id", ondelete="CASCADE"), nullable=True
    )
    percent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_sequence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    payload_json: Mapped[str] = mapped_column(Text, default="{}")
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    note: Mapped[str] = mapped_column(String(500), default="")
    result_sequence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by_id: Mapped[int | None] = user_ref()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    channel: Mapped[Channel | None] = relationship()
    created_by: Mapped[User | None] = relationship()

    @property
    def payload(self) -> dict[str, Any]:
        return json_object(self.payload_json)


class ProjectWebhook(Base):
    """Where the FORGE POSTs a JSON notice of each automatic rollback of the project."""

    __tablename__ = "project_webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), unique=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The HMAC signing secret, encrypted like ACCESS_TOKEN secrets (forge_app.webhooks).
    secret_encrypted: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
