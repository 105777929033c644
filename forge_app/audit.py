"""The audit helper: record who did what to which object, in the caller's transaction.

    >>> record_event("prompt.update", prompt_set_obj, project=project, details={"key": "a"})

The event is added to ``db.session``; it is committed together with the change it describes
(the view commits once). Actions are ``<object>.<verb>`` strings, e.g. ``prompt_set.approve``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask_login import current_user
from sqlalchemy import func, select
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

__all__ = [
    "ACTION_LABELS",
    "AuditFilter",
    "describe_object",
    "event_links",
    "filter_choices",
    "project_events",
    "record_event",
]

#: Human wording for the audit page; unknown actions are shown as they are.
ACTION_LABELS: Mapping[str, str] = {
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
    "token.create": "generated ACCESS_TOKEN",
    "token.reveal": "viewed ACCESS_TOKEN",
    "token.revoke": "revoked ACCESS_TOKEN",
    "channel.create": "added channel",
    "channel.delete": "removed channel",
    "channel.publish": "published to channel",
    "channel.rollback": "rolled back channel",
    "channel.reencrypt": "re-encrypted channel",
    "channel.remove_set": "removed a prompt set from channel",
    "rollout.update": "changed the rollout of",
    "rollout.complete": "completed the rollout of",
    "rollout.abort": "aborted the rollout of",
    "prompt_set.snapshot": "made a pre-release of",
    "channel.publish_compat_confirmed": "confirmed compatibility warnings publishing to",
    "guard.rollback": "automatically rolled back",
    "guard.abort": "automatically aborted the rollout of",
    "guard.advance": "automatically advanced the rollout of",
    "guard.update": "changed the guard of",
    "guard.delete": "removed the guard of",
    "schedule.create": "scheduled a change of",
    "schedule.cancel": "cancelled a scheduled change of",
    "schedule.run": "ran a scheduled change of",
    "schedule.fail": "could not run a scheduled change of",
    "instance.forget": "forgot LIVE instance",
    "instance.forget_bulk": "forgot silent LIVE instances of",
    "instance.archive": "archived silent LIVE instances of",
    "org.invite_create": "created an invitation to",
    "org.invite_revoke": "withdrew an invitation to",
    "org.invite_accept": "joined by invitation:",
}


#: The models audit events name by a type and a label column (others: their class name).
_DESCRIBED: tuple[tuple[type[Any], str, str], ...] = (
    (Prompt, "prompt", "key"),
    (PromptSet, "prompt_set", "name"),
    (PromptSetVersion, "version", "version"),
    (Project, "project", "name"),
    (Organisation, "org", "name"),
    (User, "user", "email"),
)


def describe_object(obj: Any) -> tuple[str, str, str]:
    """``(object_type, object_id, label)`` for a model instance."""
    for model, kind, label in _DESCRIBED:
        if isinstance(obj, model):
            return kind, str(obj.id), str(getattr(obj, label))
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


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page narrows the log to; empty fields filter nothing.

    ``action`` is an action (``prompt.update``) or a family (``prompt``); ``object`` matches
    part of the object's name, case-insensitively; ``since``/``until`` are whole UTC days.
    """

    actor: str = ""
    action: str = ""
    object: str = ""
    since: date | None = None
    until: date | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> AuditFilter:
        """Read the page's query string; bad dates become ``errors`` for their fields."""
        errors: dict[str, str] = {}
        days: dict[str, date | None] = {}
        for name in ("since", "until"):
            text = (args.get(name) or "").strip()
            days[name] = None
            if text:
                try:
                    days[name] = date.fromisoformat(text)
                except ValueError:
                    errors[name] = "Give a date as YYYY-MM-DD, like 2026-01-31."
        since, until = days["since"], days["until"]
        if since and until and until < since:
            errors["until"] = "The end date is before the start date."
        return cls(
            actor=(args.get("actor") or "").strip()[:254],
            action=(args.get("action") or "").strip()[:64],
            object=(args.get("object") or "").strip()[:300],
            since=since,
            until=until,
            errors=errors,
        )

    @property
    def active(self) -> bool:
        return bool(self.actor or self.action or self.object or self.since or self.until)

    def as_args(self) -> dict[str, str]:
        """The query-string arguments that give this filter again (for page links)."""
        values = {
            "actor": self.actor,
            "action": self.action,
            "object": self.object,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return {k: v for k, v in values.items() if v}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def project_events(
    project: Project,
    *,
    before: int | None = None,
    limit: int = 50,
    filters: AuditFilter | None = None,
) -> list[AuditEvent]:
    """A page of the project's audit log, newest first (``before`` = an event id)."""
    query = select(AuditEvent).where(AuditEvent.project_id == project.id)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    if filters is not None:
        if filters.actor:
            query = query.where(AuditEvent.actor_email == filters.actor)
        if filters.action:
            if "." in filters.action:
                query = query.where(AuditEvent.action == filters.action)
            else:
                query = query.where(
                    AuditEvent.action.like(_escape_like(filters.action) + ".%", escape="\\")
                )
        if filters.object:
            pattern = "%" + _escape_like(filters.object.lower()) + "%"
            query = query.where(func.lower(AuditEvent.object_label).like(pattern, escape="\\"))
        if filters.since:
            start = datetime.combine(filters.since, time.min, tzinfo=UTC)
            query = query.where(AuditEvent.created_at >= start)
        if filters.until:
            end = datetime.combine(filters.until + timedelta(days=1), time.min, tzinfo=UTC)
            query = query.where(AuditEvent.created_at < end)
    return list(db.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))


def filter_choices(project: Project) -> tuple[list[str], list[str]]:
    """The actors and actions that occur in the project's log, for the filter's menus."""

    def used(column: Any) -> list[str]:
        return list(
            db.session.scalars(
                select(column)
                .where(AuditEvent.project_id == project.id)
                .group_by(column)
                .order_by(column)
                .limit(500)
            )
        )

    return used(AuditEvent.actor_email), used(AuditEvent.action)


def event_links(project: Project, events: list[AuditEvent]) -> dict[int, str]:
    """Event id → the URL of the object it is about, for objects that still exist."""
    ids: dict[str, set[str]] = {}
    for event in events:
        ids.setdefault(event.object_type, set()).add(event.object_id)
    targets = {**_set_links(project, ids), **_project_links(project, ids)}
    return {
        event.id: targets[event.object_type, event.object_id]
        for event in events
        if (event.object_type, event.object_id) in targets
    }


def _numbers(ids: dict[str, set[str]], kind: str) -> list[int]:
    return [int(i) for i in ids.get(kind, ()) if i.isdigit()]


def _uuids(ids: dict[str, set[str]], kind: str) -> list[uuid.UUID]:
    out = []
    for text in ids.get(kind, ()):
        try:
            out.append(uuid.UUID(text))
        except ValueError:
            continue
    return out


def _set_links(project: Project, ids: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """The pages of the prompts, prompt sets and versions in ``ids`` (of ``project``)."""
    from flask import url_for

    set_ids = {
        s.id
        for s in db.session.scalars(select(PromptSet).where(PromptSet.project_id == project.id))
    }
    targets: dict[tuple[str, str], str] = {}
    prompts = select(Prompt).where(Prompt.id.in_(_numbers(ids, "prompt")))
    for prompt in db.session.scalars(prompts):
        if prompt.prompt_set_id in set_ids:
            targets["prompt", str(prompt.id)] = url_for(
                "prompts.edit", project_id=project.id, set_id=prompt.prompt_set_id, key=prompt.key
            )
    for set_id in _uuids(ids, "prompt_set"):
        if set_id in set_ids:
            targets["prompt_set", str(set_id)] = url_for(
                "prompt_sets.show", project_id=project.id, set_id=set_id
            )
    versions = select(PromptSetVersion).where(PromptSetVersion.id.in_(_numbers(ids, "version")))
    for version in db.session.scalars(versions):
        if version.prompt_set_id in set_ids:
            targets["version", str(version.id)] = url_for(
                "prompt_sets.version",
                project_id=project.id,
                set_id=version.prompt_set_id,
                version=version.version,
            )
    return targets


def _project_links(project: Project, ids: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """The pages of the channels in ``ids`` and of ``project`` itself."""
    from flask import url_for

    from forge_app.models.distribution import Channel

    targets: dict[tuple[str, str], str] = {}
    channels = select(Channel).where(
        Channel.project_id == project.id, Channel.id.in_(_numbers(ids, "channel"))
    )
    for channel in db.session.scalars(channels):
        targets["channel", str(channel.id)] = url_for(
            "distribution.channel", project_id=project.id, channel=channel.name
        )
    if str(project.id) in ids.get("project", ()):
        targets["project", str(project.id)] = url_for("projects.show", project_id=project.id)
    return targets
