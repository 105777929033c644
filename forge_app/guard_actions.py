"""The automatic moves of the health guards (:mod:`forge_app.guards` judges): abort or advance
a rollout, or roll a channel back, exactly once, with its audit event and webhook notice.

    >>> evaluate_channel(channel)        # doctest: +SKIP
    GuardAction(kind='rollback', …)

Each move first inserts a :class:`GuardAction` row, unique per (channel, judged sequence,
kind): a second FORGE process fails on the constraint and does nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from forge_app.audit import record_event
from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.guards import guard_of, judge
from forge_app.models import utcnow
from forge_app.models.distribution import Channel
from forge_app.models.releases import GuardAction, GuardPolicy
from forge_app.services import publishing

__all__ = ["after_heartbeat", "evaluate_all", "evaluate_channel"]

log = logging.getLogger(__name__)


def evaluate_channel(channel: Channel, *, now: datetime | None = None) -> GuardAction | None:
    """Judge ``channel`` and make the automatic move it calls for (committed). Returns the
    move's :class:`GuardAction`, or None when there is nothing to do (or another process did
    it)."""
    policy = guard_of(channel)
    if policy is None or not policy.enabled:
        return None
    now = now or utcnow()
    verdict = judge(channel, policy, now)
    if verdict.action is None or verdict.publication is None or verdict.health is None:
        db.session.rollback()
        return None
    latest = verdict.publication
    figures = {
        **verdict.health.figures(),
        "max_error_rate": policy.max_error_rate,
        "min_calls": policy.min_calls,
        "window_minutes": policy.window_minutes,
        "judged_sequence": latest.sequence,
        "since": verdict.since.isoformat() if verdict.since else None,
        "content_sha256s": sorted(verdict.new_shas),
    }
    action = GuardAction(
        project_id=channel.project_id,
        channel_id=channel.id,
        judged_sequence=latest.sequence,
        kind=verdict.action,
        figures_json=json.dumps(figures, sort_keys=True),
        created_at=now,
    )
    # The claim: one row per (channel, judged sequence, kind); a concurrent process waits
    # here (PostgreSQL) or for the write lock (SQLite), then fails on the constraint.
    db.session.add(action)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return None
    try:
        if verdict.action == "abort":
            publication = publishing.abort_rollout(channel, user=None)
        elif verdict.action == "advance":
            assert verdict.next_percent is not None
            publication = publishing.set_rollout(channel, verdict.next_percent, user=None)
        else:
            assert verdict.target_sequence is not None
            publication = publishing.rollback_to(channel, verdict.target_sequence, user=None)
    except ForgeError as e:
        db.session.rollback()
        log.warning(
            "guard of %s/%s could not %s: %s", channel.project_id, channel.name, verdict.action, e
        )
        return None
    action.result_sequence = publication.sequence
    rate = figures["error_rate"]
    shown = f"{rate:.1%}" if isinstance(rate, float) else "n/a"
    if verdict.action == "advance":
        action.summary = (
            f"Healthy at {latest.rollout_percent}% ({figures['requests']} uses, {shown} errors): "
            f"moved to {verdict.next_percent}%"
        )[:500]
    else:
        action.summary = (
            f"Error rate {shown} over {figures['requests']} uses (limit "
            f"{policy.max_error_rate:.1%} after {policy.min_calls}): {publication.summary}"
        )[:500]
    record_event(
        f"guard.{verdict.action}",
        channel,
        project=channel.project,
        details={
            "automatic": True,
            "summary": action.summary,
            "sequence": publication.sequence,
            **figures,
        },
    )
    if verdict.action in ("abort", "rollback"):
        from forge_app.webhooks import queue_notice

        queue_notice(channel, action, now=now)
    db.session.commit()
    log.info(
        "guard of %s/%s: %s (sequence %d → %d)",
        channel.project_id,
        channel.name,
        verdict.action,
        latest.sequence,
        publication.sequence,
    )
    return action


def evaluate_all(*, now: datetime | None = None) -> list[GuardAction]:
    """Evaluate every enabled guard (the worker's round). Errors of one channel are logged
    and do not stop the others."""
    done = []
    ids = list(
        db.session.scalars(select(GuardPolicy.channel_id).where(GuardPolicy.enabled.is_(True)))
    )
    for channel_id in ids:
        channel = db.session.get(Channel, channel_id)
        if channel is None:
            continue
        try:
            action = evaluate_channel(channel, now=now)
        except Exception:  # one channel's trouble must not stop the round
            db.session.rollback()
            log.exception("guard evaluation of channel %s failed", channel_id)
            continue
        if action is not None:
            done.append(action)
    return done


_last_evaluated: dict[tuple[uuid.UUID, str], float] = {}
_last_lock = threading.Lock()


def after_heartbeat(project_id: uuid.UUID, channel_name: str) -> GuardAction | None:
    """Evaluate the channel's guard after a heartbeat with usage was committed (at most every
    ``FORGE_GUARD_EVALUATE_SECONDS`` per channel in this process). Never raises."""
    interval = float(current_app.config.get("FORGE_GUARD_EVALUATE_SECONDS", 10))
    key = (project_id, channel_name)
    moment = time.monotonic()
    with _last_lock:
        last = _last_evaluated.get(key)
        if interval > 0 and last is not None and moment - last < interval:
            return None
        _last_evaluated[key] = moment
        if len(_last_evaluated) > 10_000:
            _last_evaluated.clear()
    try:
        channel = db.session.scalar(
            select(Channel)
            .join(GuardPolicy, GuardPolicy.channel_id == Channel.id)
            .where(
                Channel.project_id == project_id,
                Channel.name == channel_name,
                GuardPolicy.enabled.is_(True),
            )
        )
        if channel is None:
            return None
        return evaluate_channel(channel)
    except Exception:  # the heartbeat was recorded; a guard problem must not fail it
        db.session.rollback()
        log.exception("guard evaluation after a heartbeat failed")
        return None
