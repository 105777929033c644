"""Reading prompt usage back: the time buckets of a project and the variable-name sets its
instances pass (written by :mod:`forge_app.usage`).

    >>> usage_series(project, channel="production", since=since)      # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from forge_app.models import Project
from forge_app.models.usage import CallerVariables, PromptUsage
from forge_app.usage import project_uuid, stored_json

__all__ = ["UsageBucket", "caller_variables", "usage_series"]


def _default_session() -> Session:
    from forge_app.extensions import db

    return db.session


@dataclass(frozen=True)
class UsageBucket:
    """The counts of one (channel, prompt, content) in one time bucket."""

    bucket_start: datetime
    channel: str
    prompt_id: str
    content_sha256: str
    renders: int
    render_errors: int
    calls: int
    call_errors: int
    input_tokens: int
    output_tokens: int
    latency_ms: float
    errors: dict[str, int]

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms / self.calls if self.calls else None

    @property
    def error_rate(self) -> float | None:
        """Render and call errors per render or call (None without any)."""
        total = self.renders + self.calls
        return (self.render_errors + self.call_errors) / total if total else None


def usage_series(
    project: Project | uuid.UUID,
    *,
    session: Session | None = None,
    channel: str | None = None,
    prompt_id: str | None = None,
    content_sha256s: Iterable[str] | None = None,
    since: datetime | None = None,
    limit: int = 10_000,
) -> list[UsageBucket]:
    """The project's usage buckets, oldest first (filtered by channel, prompt, contents —
    ``""`` is the fallback — and start time). ``session`` defaults to the app's."""
    session = session or _default_session()
    query = select(PromptUsage).where(PromptUsage.project_id == project_uuid(project))
    if channel is not None:
        query = query.where(PromptUsage.channel == channel)
    if prompt_id is not None:
        query = query.where(PromptUsage.prompt_id == prompt_id)
    if content_sha256s is not None:
        query = query.where(PromptUsage.content_sha256.in_(list(content_sha256s)))
    if since is not None:
        query = query.where(PromptUsage.bucket_start >= since)
    query = query.order_by(
        PromptUsage.bucket_start,
        PromptUsage.channel,
        PromptUsage.prompt_id,
        PromptUsage.content_sha256,
    ).limit(limit)
    return [
        UsageBucket(
            bucket_start=row.bucket_start,
            channel=row.channel,
            prompt_id=row.prompt_id,
            content_sha256=row.content_sha256,
            renders=row.renders,
            render_errors=row.render_errors,
            calls=row.calls,
            call_errors=row.call_errors,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            latency_ms=row.latency_ms,
            errors={str(k): int(v) for k, v in (stored_json(row.errors_json, {}) or {}).items()},
        )
        for row in session.scalars(query)
    ]


def caller_variables(
    project: Project | uuid.UUID,
    prompt_id: str,
    *,
    channel: str | None = None,
    session: Session | None = None,
) -> dict[str, list[list[str]]]:
    """``{instance_id: [[names…], …]}``: the variable-name sets each instance passes to
    ``prompt_id`` (only instances whose records are within the retention)."""
    session = session or _default_session()
    query = select(CallerVariables).where(
        CallerVariables.project_id == project_uuid(project), CallerVariables.prompt_id == prompt_id
    )
    if channel is not None:
        query = query.where(CallerVariables.channel == channel)
    return {
        row.instance_id: [list(s) for s in stored_json(row.variables_json, [])]
        for row in session.scalars(query.order_by(CallerVariables.instance_id))
    }
