"""Scheduled publishing (issue 11 §3): publish, rollout steps and rollbacks at a given time.

    >>> late_note(datetime(2026, 1, 1, 12, 0, tzinfo=UTC), datetime(2026, 1, 1, 12, 30, tzinfo=UTC))
    'Ran 30 min late (scheduled for 2026-01-01 12:00 UTC).'

A :class:`~forge_app.models.releases.ScheduledJob` is ``pending`` until a worker claims it.
:func:`claim_next` claims one due job for one worker: on PostgreSQL it picks a row with
``SELECT … FOR UPDATE SKIP LOCKED`` (so workers never wait on each other), and on every
database the claim itself is a conditional ``UPDATE … SET status='running' WHERE id=… AND
status='pending'`` whose row count says who won; the claim is committed before the job runs,
so a job runs once however many workers race. Jobs live in the database, so they survive
restarts; a job whose time passed while no worker ran runs late, with a note. A job found
``running`` for longer than ``STALE_AFTER`` (its worker died mid-way) is not run again blindly:
it is marked failed with a note to check the channel (a webhook job is retried instead).

The job runs as the member who scheduled it, with their role *at run time*.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, Unpack

from flask import current_app
from sqlalchemy import select, update

from forge_app import compat
from forge_app.audit import record_event
from forge_app.authz import member_role
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db, rows_changed
from forge_app.models import Project, PromptSetVersion, User, utcnow
from forge_app.models.distribution import Channel
from forge_app.models.releases import ScheduledJob
from forge_app.services import publishing

__all__ = [
    "JobTarget",
    "ScheduleError",
    "cancel_job",
    "claim_next",
    "describe_job",
    "late_note",
    "pending_jobs",
    "run_due_jobs",
    "run_job",
    "schedule_job",
]

log = logging.getLogger(__name__)

#: A job may run this much after its time without a "late" note.
GRACE = timedelta(seconds=60)
#: A job still ``running`` after this long lost its worker.
STALE_AFTER = timedelta(minutes=15)


class ScheduleError(ForgeError):
    """A schedule request that cannot be accepted: one sentence for the user."""

    default_kind = Kind.INVALID


def late_note(run_at: datetime, now: datetime) -> str:
    """The note of a job that ran after its grace period ("" when on time)."""
    late = now - run_at
    if late <= GRACE:
        return ""
    minutes = int(late.total_seconds() // 60)
    amount = f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"
    return f"Ran {amount} late (scheduled for {run_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)."


def describe_job(job: ScheduledJob) -> str:
    """What the job does, in a few words."""
    if job.kind == "publish":
        version = db.session.get(PromptSetVersion, job.prompt_set_version_id or 0)
        what = f"{version.prompt_set.name} {version.version}" if version else "a deleted version"
        share = f" to {job.percent}% of instances" if job.percent else ""
        return f"Publish {what}{share}"
    if job.kind == "rollout":
        return (
            "Complete the rollout" if job.percent == 100 else f"Move the rollout to {job.percent}%"
        )
    if job.kind == "rollback":
        if job.to_sequence is None:
            return "Abort the rollout"
        return f"Roll back to sequence {job.to_sequence}"
    return "Send the webhook notice"


class JobTarget(TypedDict, total=False):
    """What a job moves to, by kind: the ``version`` a publish serves (to ``percent`` of the
    instances, if given), the ``percent`` of a rollout step, the ``to_sequence`` of a rollback
    (none: abort the rollout)."""

    version: PromptSetVersion | None
    percent: int | None
    to_sequence: int | None


def schedule_job(
    channel: Channel,
    kind: str,
    run_at: datetime,
    *,
    user: User,
    now: datetime | None = None,
    compat_confirmed: bool = False,
    **target: Unpack[JobTarget],
) -> ScheduledJob:
    """Add (and audit) a pending ``kind`` job (``publish``, ``rollout`` or ``rollback``); the
    caller commits. A publish with caller-compatibility warnings needs an owner's
    ``compat_confirmed``, now and when it runs (the warnings are judged again then).

    Raises:
        ScheduleError: for a time in the past, a version of another project or that the
            channel does not take, a bad percentage or sequence, or compatibility warnings
            that an owner did not confirm.
    """
    now = now or utcnow()
    _check_time(run_at, now)
    percent = _checked_step(channel, kind, target)
    version = target.get("version")
    payload = "{}"
    if kind == "publish":
        _check_compat(channel, version, user, compat_confirmed)
        payload = json.dumps({"compat_confirmed": compat_confirmed})
    job = ScheduledJob(
        project_id=channel.project_id,
        channel_id=channel.id,
        kind=kind,
        prompt_set_version_id=version.id if version is not None else None,
        percent=percent,
        to_sequence=target.get("to_sequence"),
        payload_json=payload,
        run_at=run_at,
        status="pending",
        note="",
        created_by_id=user.id,
        created_at=now,
    )
    db.session.add(job)
    db.session.flush()
    record_event(
        "schedule.create",
        channel,
        project=channel.project,
        actor=user,
        details={"job": job.id, "what": describe_job(job), "run_at": run_at.isoformat()},
    )
    return job


def _check_time(run_at: datetime, now: datetime) -> None:
    """Raises: ScheduleError: for a naive time, one in the past or over a year ahead."""
    if run_at.tzinfo is None:
        raise ScheduleError("Give the time in UTC.")
    if run_at < now - GRACE:
        raise ScheduleError("That time has passed; choose a time in the future.")
    if run_at > now + timedelta(days=366):
        raise ScheduleError("Schedule at most a year ahead.")


def _check_compat(
    channel: Channel, version: PromptSetVersion | None, user: User, confirmed: bool
) -> None:
    """Raises: ScheduleError: for warnings an owner did not confirm (see
    :func:`forge_app.compat.confirmed_warnings`)."""
    role = member_role(user, channel.project.org_id)
    try:
        compat.confirmed_warnings(version, channel, role, confirmed)
    except ForgeError as e:
        raise ScheduleError(str(e), problems=e.problems) from e


def _checked_step(channel: Channel, kind: str, target: JobTarget) -> int | None:
    """The job's percentage (a publish to 100 % is no rollout) after checking what it does.

    Raises:
        ScheduleError: as for :func:`schedule_job`.
    """
    version, percent = target.get("version"), target.get("percent")
    to_sequence = target.get("to_sequence")
    if kind == "publish":
        if version is None or version.prompt_set.project_id != channel.project_id:
            raise ScheduleError("Choose a version of this project to publish.")
        try:
            publishing.check_policy(channel, publishing.version_status(version))
        except ForgeError as e:
            raise ScheduleError(str(e)) from e
        if percent == 100:
            return None
        if percent is not None and not 1 <= percent <= 99:
            raise ScheduleError("A gradual rollout starts at 1 to 99 percent of instances.")
    elif kind == "rollout":
        if percent is None or not 1 <= percent <= 100:
            raise ScheduleError("The rollout percentage must be a whole number from 1 to 100.")
    elif kind == "rollback":
        if to_sequence is not None and to_sequence < 1:
            raise ScheduleError("Choose a history entry to roll back to.")
    else:
        raise ScheduleError("Choose what to schedule: a publish, a rollout step or a rollback.")
    return percent


def cancel_job(job: ScheduledJob, *, user: User) -> bool:
    """Cancel a pending job (conditional, so a job a worker just claimed stays claimed) and
    audit it; the caller commits. Returns False when it was no longer pending."""
    done = db.session.execute(
        update(ScheduledJob)
        .where(ScheduledJob.id == job.id, ScheduledJob.status == "pending")
        .values(status="cancelled", finished_at=utcnow(), note=f"Cancelled by {user.email}.")
        .execution_options(synchronize_session=False)
    )
    if not rows_changed(done):
        return False
    channel = job.channel
    record_event(
        "schedule.cancel",
        channel if channel is not None else job,
        project=db.session.get(Project, job.project_id),
        actor=user,
        details={"job": job.id, "what": describe_job(job), "run_at": job.run_at.isoformat()},
    )
    return True


def pending_jobs(channel: Channel, *, limit: int = 50) -> list[ScheduledJob]:
    return _channel_jobs(
        channel, ("pending", "running"), (ScheduledJob.run_at, ScheduledJob.id), limit
    )


def recent_jobs(channel: Channel, *, limit: int = 10) -> list[ScheduledJob]:
    return _channel_jobs(channel, ("done", "failed", "cancelled"), (ScheduledJob.id.desc(),), limit)


def _channel_jobs(
    channel: Channel, statuses: tuple[str, ...], order: tuple[Any, ...], limit: int
) -> list[ScheduledJob]:
    """The channel's jobs (not webhook notices) in ``statuses``, in ``order``."""
    return list(
        db.session.scalars(
            select(ScheduledJob)
            .where(
                ScheduledJob.channel_id == channel.id,
                ScheduledJob.kind != "webhook",
                ScheduledJob.status.in_(statuses),
            )
            .order_by(*order)
            .limit(limit)
        )
    )


def claim_next(worker: str, *, now: datetime | None = None) -> ScheduledJob | None:
    """Claim one due job for ``worker`` (committed), or None when none is due."""
    now = now or utcnow()
    due = (
        select(ScheduledJob.id)
        .where(ScheduledJob.status == "pending", ScheduledJob.run_at <= now)
        .order_by(ScheduledJob.run_at, ScheduledJob.id)
    )
    postgres = db.session.get_bind().dialect.name == "postgresql"
    if postgres:
        candidates = list(db.session.scalars(due.limit(1).with_for_update(skip_locked=True)))
    else:
        candidates = list(db.session.scalars(due.limit(20)))
    for job_id in candidates:
        won = db.session.execute(
            update(ScheduledJob)
            .where(ScheduledJob.id == job_id, ScheduledJob.status == "pending")
            .values(
                status="running",
                claimed_by=worker[:64],
                claimed_at=now,
                attempts=ScheduledJob.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if rows_changed(won) == 1:
            db.session.commit()
            job = db.session.get(ScheduledJob, job_id)
            if job is not None:
                db.session.refresh(job)
            return job
    db.session.rollback()
    return None


def _finish(job: ScheduledJob, status: str, note: str, now: datetime) -> None:
    job.status = status
    job.note = note[:500]
    job.finished_at = now


def run_job(job: ScheduledJob, *, now: datetime | None = None) -> None:
    """Run a claimed job and record how it went (committed). Never raises for a job's own
    failure: it is written to the job's note."""
    now = now or utcnow()
    late = late_note(job.run_at, now)
    if job.kind == "webhook":
        _run_webhook(job, now)
        return
    channel = job.channel
    user = job.created_by
    project = db.session.get(Project, job.project_id)
    if channel is None or project is None:
        _finish(job, "failed", "The channel no longer exists.", now)
        db.session.commit()
        return
    try:
        if user is None:
            raise ForgeError("The member who scheduled it no longer exists.", kind=Kind.FORBIDDEN)
        role = member_role(user, project.org_id)
        if role is None:
            raise ForgeError(
                f"{user.email} is no longer a member of the organisation.", kind=Kind.FORBIDDEN
            )
        if job.kind == "publish":
            version = db.session.get(PromptSetVersion, job.prompt_set_version_id or 0)
            if version is None:
                raise ForgeError("The version to publish no longer exists.", kind=Kind.NOT_FOUND)
            publication = publishing.publish_confirmed(
                version.prompt_set,
                version,
                channel,
                user=user,
                role=role,
                rollout_percent=job.percent,
                compat_confirmed=job.payload.get("compat_confirmed") is True,
            )
        elif job.kind == "rollout":
            publication = publishing.set_rollout(channel, job.percent or 100, user=user, role=role)
        elif job.to_sequence is None:
            publication = publishing.abort_rollout(channel, user=user, role=role)
        else:
            publication = publishing.rollback_to(channel, job.to_sequence, user=user, role=role)
    except ForgeError as e:
        db.session.rollback()
        job = db.session.get(ScheduledJob, job.id) or job
        _finish(job, "failed", " ".join(filter(None, [late, str(e)])), now)
        record_event(
            "schedule.fail",
            channel,
            project=project,
            actor=user,
            details={"job": job.id, "what": describe_job(job), "error": str(e)},
        )
        db.session.commit()
        return
    job.result_sequence = publication.sequence
    _finish(job, "done", " ".join(filter(None, [late, publication.summary])), now)
    record_event(
        "schedule.run",
        channel,
        project=project,
        actor=user,
        details={
            "job": job.id,
            "what": describe_job(job),
            "sequence": publication.sequence,
            "scheduled_for": job.run_at.isoformat(),
            "late": late,
        },
    )
    db.session.commit()


def _run_webhook(job: ScheduledJob, now: datetime) -> None:
    from forge_app.webhooks import deliver

    payload = job.payload
    url, body = payload.get("url"), payload.get("body")
    if not isinstance(url, str) or not isinstance(body, dict):
        _finish(job, "failed", "The notice is malformed.", now)
        db.session.commit()
        return
    db.session.commit()  # no transaction is held open during the POST
    problem = deliver(url, body)
    job = db.session.get(ScheduledJob, job.id) or job
    if problem is None:
        _finish(job, "done", f"Delivered (attempt {job.attempts}).", now)
    elif job.attempts >= int(current_app.config.get("FORGE_WEBHOOK_ATTEMPTS", 5)):
        _finish(job, "failed", f"Gave up after {job.attempts} attempts: {problem}.", now)
    else:
        job.status = "pending"
        job.run_at = now + timedelta(seconds=10 * 4 ** (job.attempts - 1))
        job.note = f"Attempt {job.attempts} failed: {problem}; retrying."[:500]
    db.session.commit()


def release_stale(*, now: datetime | None = None) -> int:
    """Jobs ``running`` past :data:`STALE_AFTER` (their worker died): webhook jobs go back to
    pending, others fail with a note. Returns how many were changed (committed)."""
    now = now or utcnow()
    stale = list(
        db.session.scalars(
            select(ScheduledJob).where(
                ScheduledJob.status == "running", ScheduledJob.claimed_at < now - STALE_AFTER
            )
        )
    )
    for job in stale:
        if job.kind == "webhook":
            job.status = "pending"
        else:
            _finish(
                job,
                "failed",
                f"The worker running it ({job.claimed_by}) stopped before it finished; check the "
                "channel's history before scheduling it again.",
                now,
            )
    db.session.commit()
    return len(stale)


def run_due_jobs(worker: str, *, now: datetime | None = None, limit: int = 50) -> list[int]:
    """Claim and run due jobs, one at a time, until none is due (or ``limit``). Returns the
    ids run."""
    ran: list[int] = []
    while len(ran) < limit:
        job = claim_next(worker, now=now)
        if job is None:
            break
        ran.append(job.id)
        try:
            run_job(job, now=now)
        except Exception as e:  # a bug must not stop the worker; the job says it failed
            db.session.rollback()
            log.exception("scheduled job %d failed", job.id)
            found = db.session.get(ScheduledJob, job.id)
            if found is not None:
                _finish(found, "failed", f"Unexpected error: {type(e).__name__}.", now or utcnow())
                db.session.commit()
    return ran


def job_payload_text(job: ScheduledJob) -> str:
    return json.dumps(job.payload, sort_keys=True)
