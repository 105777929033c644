"""Archiving and forgetting silent LIVE instances, each with one audit event (the count and the
first ids).

    >>> archive_silent_instances(session, project, older_than=timedelta(days=30))  # doctest: +SKIP
    3
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from forge_app.extensions import rows_changed
from forge_app.models import AuditEvent, Project, utcnow
from forge_app.models.instances import LiveInstance

__all__ = [
    "AUDIT_IDS_MAX",
    "DEFAULT_ARCHIVE_DAYS",
    "archive_silent_instances",
    "forget_silent_instances",
    "silent_condition",
]

#: Instances unseen for this many days are archived (FORGE_INSTANCE_ARCHIVE_DAYS).
DEFAULT_ARCHIVE_DAYS = 30

#: How many archived or forgotten instance ids one audit event lists (the count is exact).
AUDIT_IDS_MAX = 100


def _system_event(
    session: Session, action: str, project: Project, details: dict[str, Any], actor: Any = None
) -> None:
    session.add(
        AuditEvent(
            org_id=project.org_id,
            project_id=project.id,
            actor_id=actor.id if actor is not None else None,
            actor_email=actor.email if actor is not None else "system",
            action=action,
            object_type="project",
            object_id=str(project.id),
            object_label=project.name[:300],
            details=details,
        )
    )


def archive_silent_instances(
    session: Session, project: Project, *, older_than: timedelta, now: datetime | None = None
) -> int:
    """Archive the project's instances unseen for ``older_than`` (at most 1,000 per call; the
    caller commits). One audit event (actor "system") lists them. Returns how many."""
    now = now or utcnow()
    cutoff = now - older_than
    rows = session.execute(
        select(LiveInstance.id, LiveInstance.instance_id)
        .where(
            LiveInstance.project_id == project.id,
            LiveInstance.archived_at.is_(None),
            LiveInstance.last_seen_at < cutoff,
        )
        .order_by(LiveInstance.last_seen_at)
        .limit(1000)
    ).all()
    if not rows:
        return 0
    session.execute(
        update(LiveInstance)
        .where(
            LiveInstance.id.in_([row[0] for row in rows]),
            LiveInstance.last_seen_at < cutoff,  # not one that reported meanwhile
        )
        .values(archived_at=now)
        .execution_options(synchronize_session=False)
    )
    _system_event(
        session,
        "instance.archive",
        project,
        {
            "count": len(rows),
            "unseen_since": cutoff.isoformat(),
            "instance_ids": [row[1] for row in rows[:AUDIT_IDS_MAX]],
        },
    )
    return len(rows)


def forget_silent_instances(
    session: Session,
    project: Project,
    *,
    scope: Literal["archived", "silent"],
    stale_after: timedelta,
    actor: Any,
    now: datetime | None = None,
) -> int:
    """Delete the project's archived (or all silent) instances; one audit event by ``actor``
    with the count and the first ids. Instances that reported meanwhile stay. The caller
    commits. Returns how many went."""
    now = now or utcnow()
    condition = silent_condition(project, scope=scope, stale_after=stale_after, now=now)
    ids = list(
        session.scalars(
            select(LiveInstance.instance_id)
            .where(condition)
            .order_by(LiveInstance.last_seen_at)
            .limit(AUDIT_IDS_MAX)
        )
    )
    if not ids:
        return 0
    result = session.execute(
        delete(LiveInstance).where(condition).execution_options(synchronize_session=False)
    )
    count = rows_changed(result)
    _system_event(
        session,
        "instance.forget_bulk",
        project,
        {"count": count, "scope": scope, "instance_ids": ids},
        actor=actor,
    )
    return count


def silent_condition(
    project: Project,
    *,
    scope: Literal["archived", "silent"],
    stale_after: timedelta,
    now: datetime | None = None,
) -> Any:
    """The SQL condition of a bulk forget: the project's archived instances, or every one
    silent for longer than ``stale_after``."""
    now = now or utcnow()
    condition = (LiveInstance.project_id == project.id) & (
        LiveInstance.last_seen_at < now - stale_after
    )
    if scope == "archived":
        condition = condition & LiveInstance.archived_at.is_not(None)
    return condition
