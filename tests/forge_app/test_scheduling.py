"""Scheduled publishing: schedule, cancel, run once however many workers race, late runs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from forge_app import scheduling
from forge_app.extensions import db
from forge_app.models import AuditEvent, Membership, Project, PromptSetVersion, User, utcnow
from forge_app.models.distribution import Channel
from forge_app.models.releases import ScheduledJob
from forge_app.services import publishing
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version
from tests.forge_app.test_distribution import Env


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def env(app: Flask, world: World) -> Env:
    return Env(app, world)


@pytest.fixture
def locked(env: Env) -> str:
    env.token()
    add_prompts(env.app, env.world, SAMPLE_PROMPTS)
    return lock_version(env.app, env.world)


def _channel(name: str, world: World) -> Channel:
    project = db.session.get(Project, world.project_id)
    assert project is not None
    publishing.ensure_default_channels(project)
    found = publishing.get_channel(project, name)
    assert found is not None
    return found


def _schedule(env: Env, version: str, *, at: datetime, user: str = "owner", **kw: Any) -> int:
    with env.app.app_context():
        found = db.session.scalar(
            select(PromptSetVersion).where(
                PromptSetVersion.prompt_set_id == env.world.set_id,
                PromptSetVersion.version == version,
            )
        )
        actor = db.session.get(User, env.world.users[user])
        assert actor is not None
        job = scheduling.schedule_job(
            _channel("production", env.world),
            "publish",
            at,
            user=actor,
            version=found,
            now=at - timedelta(minutes=5),
            **kw,
        )
        db.session.commit()
        return job.id


def _job(env: Env, job_id: int) -> ScheduledJob:
    with env.app.app_context():
        job = db.session.get(ScheduledJob, job_id)
        assert job is not None
        db.session.expunge(job)
        return job


def test_a_due_job_publishes_once_and_is_audited(env: Env, locked: str) -> None:
    at = utcnow()
    job_id = _schedule(env, locked, at=at)
    with env.app.app_context():
        assert scheduling.run_due_jobs("w1", now=at - timedelta(seconds=1)) == []  # not due yet
        assert scheduling.run_due_jobs("w1", now=at) == [job_id]
        assert scheduling.run_due_jobs("w1", now=at) == []
    job = _job(env, job_id)
    assert job.status == "done" and job.attempts == 1 and job.result_sequence == 1
    assert "late" not in job.note
    assert env.entry("production").version == locked
    with env.app.app_context():
        actions = set(db.session.scalars(select(AuditEvent.action)))
        assert {"schedule.create", "schedule.run", "channel.publish"} <= actions


def test_a_missed_time_runs_late_with_a_note(env: Env, locked: str) -> None:
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    job_id = _schedule(env, locked, at=at)
    with env.app.app_context():
        assert scheduling.run_due_jobs("w1", now=at + timedelta(minutes=42)) == [job_id]
    job = _job(env, job_id)
    assert job.status == "done"
    assert job.note.startswith("Ran 42 min late (scheduled for 2026-01-01 12:00 UTC).")


def test_a_cancelled_job_never_runs(env: Env, locked: str) -> None:
    at = utcnow()
    job_id = _schedule(env, locked, at=at)
    with env.app.app_context():
        job = db.session.get(ScheduledJob, job_id)
        owner = db.session.get(User, env.world.users["owner"])
        assert job is not None and owner is not None
        assert scheduling.cancel_job(job, user=owner)
        db.session.commit()
        assert not scheduling.cancel_job(job, user=owner)  # only once
        assert scheduling.run_due_jobs("w1", now=at + timedelta(minutes=1)) == []
    assert _job(env, job_id).status == "cancelled"


def test_the_job_runs_with_the_role_its_author_has_at_run_time(env: Env, locked: str) -> None:
    at = utcnow()
    job_id = _schedule(env, locked, at=at)
    with env.app.app_context():
        membership = db.session.scalar(
            select(Membership).where(Membership.user_id == env.world.users["owner"])
        )
        assert membership is not None
        membership.role_name = "editor"
        db.session.commit()
        scheduling.run_due_jobs("w1", now=at)
    job = _job(env, job_id)
    assert job.status == "failed"
    assert "Only members with the owner role" in job.note


def test_bad_schedules_are_one_sentence(env: Env, locked: str) -> None:
    with env.app.app_context():
        owner = db.session.get(User, env.world.users["owner"])
        assert owner is not None
        channel = _channel("production", env.world)
        now = utcnow()
        with pytest.raises(scheduling.ScheduleError, match="has passed"):
            scheduling.schedule_job(
                channel, "rollout", now - timedelta(hours=1), user=owner, percent=50
            )
        with pytest.raises(scheduling.ScheduleError, match="1 to 100"):
            scheduling.schedule_job(
                channel, "rollout", now + timedelta(hours=1), user=owner, percent=0
            )
        with pytest.raises(scheduling.ScheduleError, match="Choose what"):
            scheduling.schedule_job(channel, "explode", now + timedelta(hours=1), user=owner)


def test_a_job_whose_worker_died_is_failed_with_a_note_not_run_again(env: Env, locked: str) -> None:
    at = utcnow()
    job_id = _schedule(env, locked, at=at)
    with env.app.app_context():
        claimed = scheduling.claim_next("dead-worker", now=at)
        assert claimed is not None and claimed.id == job_id
        assert scheduling.release_stale(now=at + timedelta(minutes=5)) == 0
        assert scheduling.release_stale(now=at + timedelta(minutes=20)) == 1
        assert scheduling.run_due_jobs("w2", now=at + timedelta(minutes=20)) == []
    job = _job(env, job_id)
    assert job.status == "failed" and "dead-worker" in job.note


def _race(app: Flask, workers: int, run: Any) -> list[Any]:
    """Run ``run()`` in ``workers`` threads, each in its own app context (own session and
    connection), released together by a barrier; returns their results."""
    barrier = threading.Barrier(workers)
    results: list[Any] = [None] * workers
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                results[index] = run(f"worker-{index}")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def test_two_workers_racing_for_one_job_run_it_once(env: Env, locked: str) -> None:
    at = utcnow()
    job_id = _schedule(env, locked, at=at)
    claims = _race(env.app, 2, lambda name: scheduling.claim_next(name, now=at) is not None)
    assert sorted(claims) == [False, True]
    job = _job(env, job_id)
    assert job.status == "running" and job.attempts == 1


def test_racing_workers_run_every_job_exactly_once(env: Env, locked: str) -> None:
    at = utcnow()
    with env.app.app_context():
        owner = db.session.get(User, env.world.users["owner"])
        assert owner is not None
        channel = _channel("production", env.world)
        # Rollout steps on a channel without a rollout: each fails in the store step, which
        # still records exactly one attempt per job.
        ids = [
            scheduling.schedule_job(channel, "rollout", at, user=owner, percent=p, now=at).id
            for p in (20, 30, 40, 50, 60, 70)
        ]
        db.session.commit()
    ran = _race(env.app, 3, lambda name: scheduling.run_due_jobs(name, now=at))
    every = sorted(i for batch in ran for i in batch)
    assert every == sorted(ids)
    with env.app.app_context():
        attempts = list(db.session.scalars(select(ScheduledJob.attempts)))
        assert attempts == [1] * len(ids)
        assert (
            db.session.scalar(
                select(func.count(ScheduledJob.id)).where(ScheduledJob.status == "pending")
            )
            == 0
        )


def test_scheduled_rollout_steps_and_rollbacks_run(env: Env, locked: str) -> None:
    first = env.call(publishing.publish_version, f"version:{locked}", "channel:production")
    env.call(
        publishing.publish_version, f"version:{locked}", "channel:production", rollout_percent=10
    )
    at = utcnow()
    with env.app.app_context():
        owner = db.session.get(User, env.world.users["owner"])
        assert owner is not None
        channel = _channel("production", env.world)
        step = scheduling.schedule_job(channel, "rollout", at, user=owner, percent=40, now=at)
        abort = scheduling.schedule_job(
            channel, "rollback", at + timedelta(minutes=1), user=owner, now=at
        )
        back = scheduling.schedule_job(
            channel,
            "rollback",
            at + timedelta(minutes=2),
            user=owner,
            to_sequence=first.sequence,
            now=at,
        )
        db.session.commit()
        assert [scheduling.describe_job(j) for j in (step, abort, back)] == [
            "Move the rollout to 40%",
            "Abort the rollout",
            f"Roll back to sequence {first.sequence}",
        ]
        ids = step.id, abort.id, back.id
        assert scheduling.run_due_jobs("w", now=at) == [ids[0]]
    assert env.pointer("production").rollout.percent == 40  # type: ignore[union-attr]
    with env.app.app_context():
        assert scheduling.run_due_jobs("w", now=at + timedelta(minutes=1)) == [ids[1]]
    assert env.pointer("production").rollout is None
    with env.app.app_context():
        assert scheduling.run_due_jobs("w", now=at + timedelta(minutes=2)) == [ids[2]]
    assert [_job(env, i).status for i in ids] == ["done", "done", "done"]
    assert _job(env, ids[2]).note.startswith(f"Rolled back to sequence {first.sequence}")
