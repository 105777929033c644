"""Prompt usage reported by LIVE instances in their heartbeats (issue 11, USAGE_CONTRACT.md).

    >>> from forge_app.models.usage import PromptUsage
    >>> PromptUsage.__tablename__
    'prompt_usage'

``prompt_usage`` holds one row per (project, channel, prompt, content, time bucket), added to by
one atomic upsert per row and heartbeat (see :mod:`forge_app.usage`). ``caller_variables``
remembers which variable names each instance passes to each prompt.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from forge_app.models._base import Base, BigIntId, UTCDateTime, utcnow

__all__ = ["BUCKET_KEY", "OTHER_PROMPT_ID", "CallerVariables", "PromptUsage"]

#: The prompt id under which a report's ``other`` counts (the merged tail) are stored.
OTHER_PROMPT_ID = "(other)"
#: The columns naming one row of ``prompt_usage`` (its unique key, what an upsert adds to).
BUCKET_KEY = ("project_id", "channel", "prompt_id", "content_sha256", "bucket_start")


class PromptUsage(Base):
    """Counts of one prompt's content in one channel and time bucket, summed over instances.

    ``content_sha256`` is the served entry's digest, ``""`` for the fallback (or unknown);
    ``bucket_start`` is aligned to ``FORGE_USAGE_BUCKET_SECONDS``; ``latency_ms`` is a sum
    (divide by ``calls`` for a mean); ``errors_json`` is ``{exception class: count}``.
    """

    __tablename__ = "prompt_usage"
    __table_args__ = (
        UniqueConstraint(*BUCKET_KEY, name="uq_prompt_usage_bucket"),
        Index("ix_prompt_usage_project_id_bucket_start", "project_id", "bucket_start"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(32))
    prompt_id: Mapped[str] = mapped_column(String(128))
    content_sha256: Mapped[str] = mapped_column(String(64), default="")
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    renders: Mapped[int] = mapped_column(BigInteger, default=0)
    render_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    call_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    errors_json: Mapped[str] = mapped_column(Text, default="{}")


class CallerVariables(Base):
    """The distinct variable-name sets one instance last passed to one prompt
    (``variables_json``: a sorted JSON list of sorted name lists)."""

    __tablename__ = "caller_variables"
    __table_args__ = (UniqueConstraint("project_id", "instance_id", "prompt_id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE")
    )
    instance_id: Mapped[str] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(32))
    prompt_id: Mapped[str] = mapped_column(String(128))
    variables_json: Mapped[str] = mapped_column(Text, default="[]")
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
