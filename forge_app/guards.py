"""Health guards (issue 11 §2): judge the list a channel newly serves, roll back a bad one.

    >>> Health(renders=150, calls=50, render_errors=10, call_errors=20).error_rate
    0.15

A channel may have one :class:`~forge_app.models.releases.GuardPolicy`. :func:`judge` looks at
the channel's newest FORGE publication (:mod:`forge_app.guard_actions` makes the move):

- during a rollout (the pointer serves a new list to some instances), the usage of the
  entries only the new list has, since the rollout's current step: a breach aborts the
  rollout; with a staged plan, a healthy step held long enough advances to the next stage;
- after a publish (or a completed rollout), within the policy's window, the usage of the
  entries the publish brought: a breach publishes the list served before as a new sequence.

A breach is at least ``min_calls`` uses (renders + reported calls) and an error rate (render
and call errors per use) above ``max_error_rate``. Each automatic move runs exactly once, even
with several FORGE processes: it first inserts a :class:`GuardAction` row, unique per (channel,
judged sequence, kind) — a second process fails on the constraint (PostgreSQL makes it wait for
the first one's transaction) and does nothing. The move, its audit event (actor ``system``,
with the figures) and a webhook job are committed together.

Evaluated after each heartbeat with usage (:func:`forge_app.guard_actions.after_heartbeat`, at
most every ``FORGE_GUARD_EVALUATE_SECONDS`` per channel and process, default 10) and by
``anvil-forge worker`` (:func:`forge_app.guard_actions.evaluate_all`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from forge_app.audit import record_event
from forge_app.extensions import db
from forge_app.models import Project, User, utcnow
from forge_app.models.distribution import Channel, Publication
from forge_app.models.releases import GuardAction, GuardPolicy
from forge_app.usage import DEFAULT_BUCKET_SECONDS, UsageCounts, bucket_start
from forge_app.usage_reads import usage_series

__all__ = [
    "GuardSettings",
    "Health",
    "Judgement",
    "delete_guard",
    "guard_of",
    "judge",
    "recent_actions",
    "save_guard",
]


@dataclass
class Health(UsageCounts):
    """Usage of some entries, with the figures a guard judges: uses (renders + reported calls)
    and errors (render + call errors)."""

    @property
    def requests(self) -> int:
        return self.renders + self.calls

    @property
    def error_count(self) -> int:
        return self.render_errors + self.call_errors

    @property
    def error_rate(self) -> float | None:
        return self.error_count / self.requests if self.requests else None

    @property
    def tokens_per_call(self) -> tuple[float, float] | None:
        """Mean input and output tokens per reported call."""
        if not self.calls:
            return None
        return self.input_tokens / self.calls, self.output_tokens / self.calls

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.error_count,
            "error_rate": None if self.error_rate is None else round(self.error_rate, 4),
            "errors_by_class": dict(sorted(self.errors.items())),
        }


def health_of(
    project_id: uuid.UUID, channel: str, content_sha256s: set[str], since: datetime
) -> Health:
    """The summed usage of ``content_sha256s`` on ``channel`` from the bucket holding
    ``since`` on."""
    health = Health()
    if not content_sha256s:
        return health
    seconds = int(current_app.config.get("FORGE_USAGE_BUCKET_SECONDS", DEFAULT_BUCKET_SECONDS))
    for bucket in usage_series(
        project_id,
        channel=channel,
        content_sha256s=sorted(content_sha256s),
        since=bucket_start(since, seconds),
    ):
        health.add_stored(bucket)
    return health


@dataclass
class Judgement:
    """What the guard makes of a channel now. ``action`` is ``rollback``, ``abort``,
    ``advance`` or None; ``state`` is a sentence for the channel page."""

    state: str
    action: str | None = None
    health: Health | None = None
    publication: Publication | None = None
    target_sequence: int | None = None
    next_percent: int | None = None
    new_shas: set[str] = field(default_factory=set)
    old_shas: set[str] = field(default_factory=set)
    since: datetime | None = None


def guard_of(channel: Channel) -> GuardPolicy | None:
    return db.session.scalar(select(GuardPolicy).where(GuardPolicy.channel_id == channel.id))


@dataclass(frozen=True)
class GuardSettings:
    """What an owner sets on a channel's guard (``max_error_rate`` is a fraction, 0-1)."""

    enabled: bool
    max_error_rate: float
    min_calls: int
    window_minutes: int
    stages: list[int]
    hold_minutes: int


def save_guard(channel: Channel, settings: GuardSettings, *, user: User) -> GuardPolicy:
    """Set ``channel``'s guard (made when it has none), audit ``guard.update``, commit."""
    policy = guard_of(channel)
    if policy is None:
        policy = GuardPolicy(project_id=channel.project_id, channel_id=channel.id)
        db.session.add(policy)
    policy.enabled = settings.enabled
    policy.max_error_rate = settings.max_error_rate
    policy.min_calls = settings.min_calls
    policy.window_minutes = settings.window_minutes
    policy.stages_json = json.dumps(settings.stages)
    policy.hold_minutes = settings.hold_minutes
    policy.updated_at = utcnow()
    policy.updated_by_id = user.id
    record_event(
        "guard.update", channel, project=channel.project, actor=user, details=asdict(settings)
    )
    db.session.commit()
    return policy


def delete_guard(channel: Channel, *, user: User) -> bool:
    """Remove ``channel``'s guard, audit ``guard.delete``, commit; False when it had none."""
    policy = guard_of(channel)
    if policy is None:
        return False
    db.session.delete(policy)
    record_event("guard.delete", channel, project=channel.project, actor=user)
    db.session.commit()
    return True


def _shas(entries: list[dict[str, Any]]) -> set[str]:
    return {str(e.get("content_sha256")) for e in entries if e.get("content_sha256")}


def _publications(channel: Channel, limit: int = 50) -> list[Publication]:
    query = select(Publication).where(Publication.channel_id == channel.id)
    return list(db.session.scalars(query.order_by(Publication.sequence.desc()).limit(limit)))


def rollout_comparison(channel: Channel) -> tuple[Health, Health, Publication] | None:
    """During a rollout: the usage of the previous list's and the new list's own entries
    since the rollout's newest step — (previous, new, publication); else None."""
    found = _publications(channel, 1)
    if not found or found[0].previous_json is None or found[0].rollout_percent is None:
        return None
    latest = found[0]
    old, new = _shas(latest.previous_releases or []), _shas(latest.releases)
    start = _rollout_start(channel, latest)
    return (
        health_of(latest.project_id, channel.name, old - new, start),
        health_of(latest.project_id, channel.name, new - old, start),
        latest,
    )


def _rollout_start(channel: Channel, latest: Publication) -> datetime:
    """When the rollout of ``latest``'s new list began (its oldest step still in a row)."""
    start = latest.published_at
    key = _shas(latest.releases)
    for publication in _publications(channel):
        if publication.previous_json is None or _shas(publication.releases) != key:
            break
        start = publication.published_at
    return start


def judge(channel: Channel, policy: GuardPolicy, now: datetime) -> Judgement:
    """The guard's verdict on ``channel`` now (reads only)."""
    publications = _publications(channel)
    if not publications:
        return Judgement("Nothing is published on this channel yet.")
    latest = publications[0]
    if latest.previous_json is not None and latest.rollout_percent is not None:
        return _judge_rollout(channel, policy, now, latest, latest.rollout_percent)
    return _judge_change(channel, policy, now, publications)


def _judge_rollout(
    channel: Channel, policy: GuardPolicy, now: datetime, latest: Publication, percent: int
) -> Judgement:
    """The verdict during a rollout: abort it, move it to the next stage, or wait."""
    old, new = _shas(latest.previous_releases or []), _shas(latest.releases)
    since = latest.published_at
    health = health_of(channel.project_id, channel.name, new - old, since)
    verdict = Judgement(
        "",
        health=health,
        publication=latest,
        new_shas=new - old,
        old_shas=old - new,
        since=since,
    )
    if _breached(policy, health):
        verdict.action = "abort"
        verdict.state = "The new list breaches the guard: the rollout is aborted."
        return verdict
    stages = sorted({s for s in policy.stages if 1 <= s <= 100})
    upcoming = [s for s in stages if s > percent]
    if not upcoming:
        verdict.state = f"Rollout at {percent}%: watched by the guard."
        return verdict
    verdict.next_percent = upcoming[0]
    ready = now >= latest.published_at + timedelta(minutes=policy.hold_minutes)
    if health.requests < policy.min_calls:
        verdict.state = (
            f"Rollout at {percent}%: waiting for {policy.min_calls} uses "
            f"({health.requests} so far) before moving to {upcoming[0]}%."
        )
    elif not ready:
        verdict.state = (
            f"Rollout at {percent}%: healthy; moves to {upcoming[0]}% after "
            f"a hold of {policy.hold_minutes} min."
        )
    else:
        verdict.action = "advance"
        verdict.state = f"Rollout healthy: moving to {upcoming[0]}%."
    return verdict


def _judge_change(
    channel: Channel, policy: GuardPolicy, now: datetime, publications: list[Publication]
) -> Judgement:
    """The verdict after a publish (or the end of a rollout): roll back, or keep watching."""
    latest = publications[0]
    window = timedelta(minutes=policy.window_minutes)
    if latest.kind not in ("publish", "rollout", "promote"):
        return Judgement(
            f"The newest change (sequence {latest.sequence}) is not a publish; nothing to watch."
        )
    if latest.kind == "rollout" and _went_back(publications):
        return Judgement(
            f"Sequence {latest.sequence} ended a rollout by going back; nothing to watch."
        )
    if now > latest.published_at + window:
        return Judgement(
            f"Sequence {latest.sequence} has been served for longer than the window of "
            f"{policy.window_minutes} min; the guard watches the next publish."
        )
    target = _rollback_target(publications, latest)
    if target is None:
        return Judgement("There is no earlier list on this channel to roll back to.")
    new = _shas(latest.releases) - _shas(target.releases)
    since = _rollout_start(channel, latest) if latest.kind == "rollout" else latest.published_at
    health = health_of(channel.project_id, channel.name, new, since)
    verdict = Judgement(
        f"Watching sequence {latest.sequence} until "
        f"{(latest.published_at + window).strftime('%H:%M')} UTC.",
        health=health,
        publication=latest,
        target_sequence=target.sequence,
        new_shas=new,
        old_shas=_shas(target.releases) - _shas(latest.releases),
        since=since,
    )
    if _breached(policy, health):
        verdict.action = "rollback"
        verdict.state = (
            f"The new list breaches the guard: the channel goes back to sequence {target.sequence}."
        )
    return verdict


def _went_back(publications: list[Publication]) -> bool:
    """Whether the newest publication (a rollout move) ended a rollout by going back to the
    previous list, rather than completing it."""
    latest = publications[0]
    step = publications[1] if len(publications) > 1 else None
    return (
        step is None or step.previous_json is None or _shas(step.releases) != _shas(latest.releases)
    )


def _rollback_target(publications: list[Publication], latest: Publication) -> Publication | None:
    """The newest earlier publication serving one list to every instance, other than
    ``latest``'s."""
    key = _shas(latest.releases)
    for publication in publications[1:]:
        if (
            publication.previous_json is None
            and publication.releases
            and _shas(publication.releases) != key
        ):
            return publication
    return None


def _breached(policy: GuardPolicy, health: Health) -> bool:
    rate = health.error_rate
    return (
        health.requests >= max(1, policy.min_calls)
        and rate is not None
        and (rate > policy.max_error_rate)
    )


def recent_actions(channel: Channel, limit: int = 10) -> list[GuardAction]:
    query = select(GuardAction).where(GuardAction.channel_id == channel.id)
    return list(db.session.scalars(query.order_by(GuardAction.id.desc()).limit(limit)))


def action_for_publication(publication: Publication) -> GuardAction | None:
    """The guard's move that produced ``publication`` (or judged it), if any."""
    return db.session.scalar(
        select(GuardAction)
        .where(
            GuardAction.channel_id == publication.channel_id,
            (GuardAction.result_sequence == publication.sequence)
            | (GuardAction.judged_sequence == publication.sequence),
        )
        .order_by(GuardAction.id.desc())
        .limit(1)
    )


def project_of(channel: Channel) -> Project:
    return channel.project
