"""The read models of the LIVE instances pages, and forgetting instances (owners, audited).

    instances_page(project, show=…, channel=…, page=…)   the instances page's data
    forget_instance(project, instance_id)                  one silent instance
    count_forgettable / forget_instances(project, scope)   every archived or silent one
    channel_instances(project, channel)                    the publish confirmation's list
    publication_status(project, channel, publication)      the publish status page and its JSON

Every page costs the same few SQL queries however many instances report (the page shows
``FORGE_INSTANCES_PER_PAGE``, default 100). Which entry lists the channels tell their instances
to serve comes from :mod:`forge_app.services.instance_targets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from flask import current_app
from sqlalchemy import func, select

from forge_app.audit import record_event
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, User, utcnow
from forge_app.models.distribution import AccessToken, Channel, Publication
from forge_app.models.instances import LiveInstance
from forge_app.services.heartbeat_limits import setting_or_default
from forge_app.services.instance_archive import (
    DEFAULT_ARCHIVE_DAYS,
    archive_silent_instances,
    forget_silent_instances,
    silent_condition,
)
from forge_app.services.instance_targets import channel_targets, target_of_publication
from forge_app.services.instances import (
    DEFAULT_STALE_SECONDS,
    ChannelTarget,
    InstanceView,
    describe_instances,
    publication_state,
    summarise,
)

__all__ = [
    "Forgotten",
    "Scope",
    "archive_after",
    "channel_instances",
    "count_forgettable",
    "find_publication",
    "forget_instance",
    "forget_instances",
    "instances_page",
    "publication_status",
    "stale_after",
    "stale_label",
]

Scope = Literal["archived", "silent"]

DEFAULT_PER_PAGE = 100
#: The publish status page and the publish confirmation list this many instances at most
#: (problems first); their counts cover every instance.
STATUS_ROWS_MAX = 500
SIDE_ROWS_MAX = 50
#: The channel filter offers at most this many of the channel names instances report.
CHANNEL_CHOICES_MAX = 200


# --- settings --------------------------------------------------------------------------------


def _number(name: str, default: float) -> float:
    return setting_or_default(current_app.config, name, default)


def stale_after() -> timedelta:
    """``FORGE_INSTANCE_STALE_SECONDS`` (app config, else environment; default 15 minutes)."""
    return timedelta(seconds=_number("FORGE_INSTANCE_STALE_SECONDS", DEFAULT_STALE_SECONDS))


def archive_after() -> timedelta:
    """``FORGE_INSTANCE_ARCHIVE_DAYS`` (app config, else environment; default 30 days)."""
    return timedelta(days=_number("FORGE_INSTANCE_ARCHIVE_DAYS", DEFAULT_ARCHIVE_DAYS))


def _per_page() -> int:
    return max(1, int(_number("FORGE_INSTANCES_PER_PAGE", DEFAULT_PER_PAGE)))


def stale_label() -> str:
    """The stale delay for people: ``15 min``, ``2 h``, ``1 d`` or ``90 s``."""
    seconds = int(stale_after().total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


# --- judging instances -----------------------------------------------------------------------


def _tokens(project: Project) -> tuple[set[str], dict[str, str]]:
    """The project's revoked token ids, and every token's name by id (one query)."""
    revoked: set[str] = set()
    names: dict[str, str] = {}
    query = select(AccessToken.token_id, AccessToken.name, AccessToken.revoked_at).where(
        AccessToken.project_id == project.id
    )
    for token_id, name, revoked_at in db.session.execute(query):
        names[token_id] = name
        if revoked_at is not None:
            revoked.add(token_id)
    return revoked, names


def _set_names(project: Project) -> dict[str, str]:
    """The FORGE's prompt set names by the pointer's ``prompt_set_id`` (the UUID as text)."""
    query = select(PromptSet.id, PromptSet.name).where(PromptSet.project_id == project.id)
    return {str(row[0]): row[1] for row in db.session.execute(query)}


def _judge(
    project: Project, rows: list[LiveInstance], targets: dict[str, ChannelTarget]
) -> tuple[list[InstanceView], dict[str, str]]:
    revoked, token_names = _tokens(project)
    views = describe_instances(
        rows,
        targets=targets,
        revoked_tokens=revoked,
        stale_after=stale_after(),
        names=_set_names(project),
    )
    return views, token_names


def _rank(view: InstanceView) -> tuple[bool, bool, float]:
    """Problems first, silent ones after the live ones, then the most recently seen."""
    return (not view.problems, view.stale, -view.instance.last_seen_at.timestamp())


def _channel_rows(project: Project, channel: str) -> list[LiveInstance]:
    """The channel's instances that are not archived."""
    query = select(LiveInstance).where(
        LiveInstance.project_id == project.id,
        LiveInstance.channel == channel,
        LiveInstance.archived_at.is_(None),
    )
    return list(db.session.scalars(query))


# --- the instances page ----------------------------------------------------------------------


def _archived_count(project: Project) -> int:
    query = select(func.count(LiveInstance.id)).where(
        LiveInstance.project_id == project.id, LiveInstance.archived_at.is_not(None)
    )
    return int(db.session.scalar(query) or 0)


def instances_page(
    project: Project, *, show: str, channel: str | None, page: int
) -> dict[str, Any]:
    """Every instance that reported, by channel, problems first; archived ones when ``show``
    is ``archived``, only those with problems when it is ``attention``. Archives the
    instances silent for longer than :func:`archive_after` first (and commits that)."""
    if archive_silent_instances(db.session, project, older_than=archive_after()):
        db.session.commit()
    archived = show == "archived"
    attention = show == "attention"
    query = select(LiveInstance).where(
        LiveInstance.project_id == project.id,
        LiveInstance.archived_at.is_not(None) if archived else LiveInstance.archived_at.is_(None),
    )
    rows = list(db.session.scalars(query))
    channels = {row.channel for row in rows}
    targets, problems = channel_targets(project, channels)
    views, token_names = _judge(project, rows, targets)
    counts = {
        "total": len(views),
        "stale": sum(v.stale for v in views),
        "drift": sum(v.drift for v in views),
        "revoked": sum(v.revoked for v in views),
        "error": sum(bool(v.instance.last_error) for v in views),
        "archived": len(rows) if archived else _archived_count(project),
    }
    shown = [
        v
        for v in views
        if (channel is None or v.instance.channel == channel) and (not attention or v.problems)
    ]
    shown.sort(key=lambda v: (v.instance.channel, *_rank(v)))
    per_page = _per_page()
    pages = max(1, -(-len(shown) // per_page))
    page = min(page, pages)
    groups: dict[str, list[InstanceView]] = {}
    for view in shown[(page - 1) * per_page : page * per_page]:
        groups.setdefault(view.instance.channel, []).append(view)
    return {
        "groups": groups,
        "targets": targets,
        "problems": problems,
        "counts": counts,
        "channels": sorted(channels)[:CHANNEL_CHOICES_MAX],
        "selected": channel,
        "show": show,
        "attention": attention,
        "archived": archived,
        "page": page,
        "pages": pages,
        "shown_count": len(shown),
        "token_names": token_names,
        "stale_label": stale_label(),
        "archive_days": f"{archive_after().total_seconds() / 86400:g}",
    }


# --- forgetting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forgotten:
    """The instance :func:`forget_instance` was asked about; ``done`` is False when it
    reported recently (a live one would come back with its next heartbeat)."""

    instance_id: str
    hostname: str
    done: bool


def forget_instance(project: Project, instance_id: str) -> Forgotten | None:
    """Remove a silent instance (audited, committed); None when the project has none by
    that id."""
    instance = db.session.scalar(
        select(LiveInstance).where(
            LiveInstance.project_id == project.id, LiveInstance.instance_id == instance_id
        )
    )
    if instance is None:
        return None
    outcome = Forgotten(instance.instance_id, instance.hostname, done=False)
    if utcnow() - instance.last_seen_at <= stale_after():
        return outcome
    record_event(
        "instance.forget",
        instance,
        project=project,
        details={
            "instance_id": instance.instance_id,
            "hostname": instance.hostname,
            "channel": instance.channel,
            "last_seen_at": instance.last_seen_at.isoformat(),
        },
    )
    db.session.delete(instance)
    db.session.commit()
    return Forgotten(outcome.instance_id, outcome.hostname, done=True)


def count_forgettable(project: Project, scope: Scope) -> int:
    """How many instances :func:`forget_instances` would forget now."""
    query = select(func.count(LiveInstance.id)).where(
        silent_condition(project, scope=scope, stale_after=stale_after())
    )
    return int(db.session.scalar(query) or 0)


def forget_instances(project: Project, scope: Scope, actor: User) -> int:
    """Forget every archived (or silent) instance: one audit event with the count; committed."""
    count = forget_silent_instances(
        db.session, project, scope=scope, stale_after=stale_after(), actor=actor
    )
    db.session.commit()
    return count


# --- the publish confirmation and status pages ------------------------------------------------


def channel_instances(project: Project, channel: str) -> dict[str, Any]:
    """The channel's instances judged against its current entry lists, problems first: at
    most ``SIDE_ROWS_MAX`` views and the total."""
    rows = _channel_rows(project, channel)
    if not rows:
        return {"views": [], "total": 0}
    targets, _ = channel_targets(project, {channel})
    views, _ = _judge(project, rows, targets)
    views.sort(key=_rank)
    return {"views": views[:SIDE_ROWS_MAX], "total": len(views)}


def find_publication(project: Project, channel: str, sequence: int) -> Publication | None:
    """Publication ``sequence`` of the project's channel named ``channel``."""
    channel_id = (
        select(Channel.id)
        .where(Channel.project_id == project.id, Channel.name == channel)
        .scalar_subquery()
    )
    query = select(Publication).where(
        Publication.channel_id == channel_id, Publication.sequence == sequence
    )
    return db.session.scalar(query)


def _z(text: str) -> str:
    return text.replace("+00:00", "Z")


def publication_status(project: Project, channel: str, publication: Publication) -> dict[str, Any]:
    """Each instance of the publication's channel: applied, pending, error or superseded.

    The counts cover every instance; the list holds at most ``STATUS_ROWS_MAX`` (errors and
    pending ones first, then the newest).
    """
    target = target_of_publication(project, channel, publication)
    views, _ = _judge(project, _channel_rows(project, channel), {channel: target})
    latest = db.session.scalar(
        select(Publication.sequence)
        .where(Publication.channel_id == publication.channel_id)
        .order_by(Publication.sequence.desc())
        .limit(1)
    )
    instances = []
    states = []
    views.sort(key=lambda v: v.instance.last_seen_at, reverse=True)
    for view in views:
        state, note = publication_state(view, target)
        states.append(state)
        item = view.to_json()
        item.update(state=state, note=note)
        instances.append(item)
    order = {"error": 0, "pending": 1, "superseded": 2, "applied": 3}
    instances.sort(key=lambda i: (i["stale"], order[i["state"]]))  # stable: newest first
    names = views[0].names if views else target.names()
    previous = target.previous
    return {
        "project_id": str(project.id),
        "channel": channel,
        "publication": {
            "sequence": publication.sequence,
            "kind": publication.kind,
            "summary": publication.summary,
            "version": publication.version,
            "content_sha256": publication.content_sha256,
            "releases": [e.to_json(names) for e in target.releases],
            "previous": None if previous is None else [e.to_json(names) for e in previous],
            "rollout_percent": publication.rollout_percent,
            "releases_label": ", ".join(e.label(names) for e in target.releases),
            "previous_version": (
                ", ".join(e.label(names) for e in previous) if previous is not None else None
            ),
            "published_at": _z(publication.published_at.isoformat()),
            "current": latest == publication.sequence,
            "latest_sequence": latest,
        },
        "summary": summarise(states),
        "instances": instances[:STATUS_ROWS_MAX],
        "more": max(0, len(instances) - STATUS_ROWS_MAX),
        "generated_at": _z(utcnow().isoformat()),
    }
