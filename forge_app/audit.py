"""The audit helper: record who did what to which object, in the caller's transaction.

    >>> record_event("prompt.update", prompt_set_obj, project=project, details={"key": "a"})

The event is added to ``db.session``; it is committed together with the change it describes
(the view commits once). Actions are ``<object>.<verb>`` strings, e.g. ``prompt_set.approve``.
"""

from __future__ import annotations

from typing import Any

from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from forge_app.extensions import db
from forge_app.models import (
    AuditEvent,
    Organisation,
    Project,
    Prompt,
    PromptSet,
    PromptSetVersion,
    User,
)

__all__ = ["ACTION_LABELS", "describe_object", "project_events", "record_event"]

#: Human wording for the audit page; unknown actions are shown as they are.
ACTION_LABELS = {
    "api_token.create": "created API token",
    "api_token.revoke": "revoked API token",
    "remote_project.connect": "connected remote project",
    "remote_project.disconnect": "disconnected remote project",
    "prompt_set.copy": "copied a remote version into",
    "org.create": "created organisation",
    "org.member_add": "added member",
    "org.member_role": "changed role of",
    "org.member_remove": "removed member",
    "project.create": "created project",
    "project.update": "updated project",
    "prompt_set.create": "created prompt set",
    "prompt_set.update": "updated prompt set",
    "prompt_set.delete": "deleted prompt set",
    "prompt_set.submit": "submitted for review",
    "prompt_set.withdraw": "withdrew from review",
    "prompt_set.approve": "approved and locked",
    "prompt_set.approve_refused": "was refused approving (four eyes)",
    "prompt_set.request_changes": "requested changes on",
    "prompt_set.unlock": "unlocked for editing",
    "prompt_set.restore": "restored a version into",
    "prompt_set.import": "imported prompts into",
    "prompt.create": "created prompt",
    "prompt.update": "edited prompt",
    "prompt.delete": "deleted prompt",
    "user.create": "created user",
    "user.login": "signed in",
    "user.password": "changed password of",
    "user.sign_out_everywhere": "signed out every session of",
}


def describe_object(obj: Any) -> tuple[str, str, str]:
    """``(object_type, object_id, label)`` for a model instance."""
    if isinstance(obj, Prompt):
        return "prompt", str(obj.id), obj.key
    if isinstance(obj, PromptSet):
        return "prompt_set", str(obj.id), obj.name
    if isinstance(obj, PromptSetVersion):
        return "version", str(obj.id), obj.version
    if isinstance(obj, Project):
        return "project", str(obj.id), obj.name
    if isinstance(obj, Organisation):
        return "org", str(obj.id), obj.name
    if isinstance(obj, User):
        return "user", str(obj.id), obj.email
    object_type = type(obj).__name__.lower()
    return object_type, str(getattr(obj, "id", "")), str(getattr(obj, "name", obj))[:300]


def record_event(
    action: str,
    obj: Any,
    *,
    project: Project | None = None,
    org_id: int | None = None,
    details: dict[str, Any] | None = None,
    actor: User | None = None,
    session: Session | None = None,
) -> AuditEvent:
    """Add one audit event to ``session`` (default: ``db.session``), committed with the
    caller's change. ``actor`` defaults to the signed-in user."""
    session = session if session is not None else db.session
    if actor is None:
        user = current_user._get_current_object() if current_user else None
        actor = user if isinstance(user, User) else None
    object_type, object_id, label = describe_object(obj)
    if obj is not None and object_id in ("", "None"):
        session.flush()  # new objects get their ids before the event refers to them
        object_type, object_id, label = describe_object(obj)
    event = AuditEvent(
        org_id=org_id if org_id is not None else (project.org_id if project else None),
        project_id=project.id if project else None,
        actor_id=actor.id if actor else None,
        actor_email=actor.email if actor else "system",
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_label=label[:300],
        details=details or {},
    )
    session.add(event)
    return event


def project_events(
    project: Project, *, before: int | None = None, limit: int = 50
) -> list[AuditEvent]:
    """A page of the project's audit log, newest first (``before`` = an event id)."""
    query = select(AuditEvent).where(AuditEvent.project_id == project.id)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return list(db.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))
