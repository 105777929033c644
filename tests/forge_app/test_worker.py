"""``anvil-forge worker``: rounds run due jobs, evaluate guards, deliver webhooks with retries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from forge_app import scheduling, webhooks, worker
from forge_app.extensions import db
from forge_app.models import utcnow
from forge_app.models.releases import GuardPolicy, ProjectWebhook, ScheduledJob
from forge_app.services import publishing
from tests.forge_app.conftest import World
from tests.forge_app.safe_releases_helpers import heartbeat, two_versions
from tests.forge_app.test_distribution import Env
from tests.forge_app.webhook_receiver import Receiver


@pytest.fixture
def hook() -> Iterator[Receiver]:
    found = Receiver([500])
    yield found
    found.close()


@pytest.fixture
def env(app: Flask, world: World) -> Env:
    return Env(app, world)


def _bad_release_with_a_guard(env: Env, app: Flask, hook_url: str | None) -> str:
    app.config["FORGE_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"  # the loopback receiver
    token = env.token()
    first, second = two_versions(env)
    env.call(publishing.publish_version, f"version:{second}", "channel:production")
    with app.app_context():
        project_channel = env._load("channel:production")
        db.session.add(
            GuardPolicy(
                project_id=env.world.project_id,
                channel_id=project_channel.id,
                max_error_rate=0.05,
                min_calls=10,
                window_minutes=30,
                stages_json="[]",
            )
        )
        if hook_url:
            secret = webhooks.seal_secret(env.world.project_id, "test-secret")
            db.session.add(
                ProjectWebhook(
                    project_id=env.world.project_id, url=hook_url, secret_encrypted=secret
                )
            )
        db.session.commit()
    # Heartbeats are judged only every FORGE_GUARD_EVALUATE_SECONDS: the first one below
    # (the channel's first judgement) has fewer calls than needed, so only the worker acts.
    app.config["FORGE_GUARD_EVALUATE_SECONDS"] = 3600
    sha = env.entry("production").content_sha256
    client = app.test_client()
    assert (
        heartbeat(
            client,
            env,
            token,
            prompts=[{"prompt_id": "welcome.message", "content_sha256": sha, "renders": 1}],
        )
        == 204
    )
    assert (
        heartbeat(
            client,
            env,
            token,
            prompts=[
                {
                    "prompt_id": "welcome.message",
                    "content_sha256": sha,
                    "renders": 30,
                    "errors": {"MissingVariable": 12},
                }
            ],
        )
        == 204
    )
    assert env.entry("production").version == second
    return first


def test_a_round_rolls_back_and_the_webhook_is_retried_until_delivered(
    env: Env, app: Flask, hook: Receiver
) -> None:
    first = _bad_release_with_a_guard(env, app, hook.url)
    done = worker.run_round(app, "w1")
    assert len(done.guard_actions) == 1 and done.guard_actions[0].startswith("rollback")
    assert env.entry("production").version == first
    # The notice was queued with the rollback; the next round sends it: 500 → retried later.
    done = worker.run_round(app, "w1")
    assert len(done.jobs) == 1 and len(hook.bodies) == 1
    with app.app_context():
        job = db.session.scalar(select(ScheduledJob).where(ScheduledJob.kind == "webhook"))
        assert job is not None and job.status == "pending"
        assert "answered HTTP 500" in job.note
        retry_at = job.run_at
        assert scheduling.run_due_jobs("w1", now=retry_at) == [job.id]
        db.session.refresh(job)
        assert job.status == "done" and job.attempts == 2
    body = hook.bodies[-1]
    assert body["event"] == "anvil.guard.rollback" and body["channel"] == "production"
    assert body["figures"]["errors"] == 12 and body["figures"]["requests"] == 31


def test_an_unreachable_webhook_gives_up_with_a_note(env: Env, app: Flask) -> None:
    _bad_release_with_a_guard(env, app, "http://127.0.0.1:9/nothing-listens")
    app.config["FORGE_WEBHOOK_ATTEMPTS"] = 2
    worker.run_round(app, "w1")
    with app.app_context():
        job = db.session.scalar(select(ScheduledJob).where(ScheduledJob.kind == "webhook"))
        assert job is not None
        for hours in (1, 2):
            assert scheduling.run_due_jobs("w1", now=utcnow() + timedelta(hours=hours))
        db.session.refresh(job)
        assert job.status == "failed"
        assert job.note.startswith("Gave up after 2 attempts: the webhook could not be reached")


def test_a_heartbeat_alone_rolls_back_without_a_worker(env: Env, app: Flask) -> None:
    first = _bad_release_with_a_guard(env, app, None)
    app.config["FORGE_GUARD_EVALUATE_SECONDS"] = 0
    token = env.token("second")
    sha = env.entry("production").content_sha256
    assert (
        heartbeat(
            app.test_client(),
            env,
            token,
            prompts=[{"prompt_id": "welcome.message", "content_sha256": sha, "renders": 1}],
        )
        == 204
    )
    assert env.entry("production").version == first


def test_the_worker_command_runs_one_round(
    env: Env, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forge_app import cli

    first = _bad_release_with_a_guard(env, app, None)
    monkeypatch.setattr(cli, "_app", lambda: app)
    result = CliRunner().invoke(cli.main, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert env.entry("production").version == first
    bad = CliRunner().invoke(cli.main, ["worker", "--interval", "0"])
    assert bad.exit_code != 0 and "--interval must be more than 0 seconds" in bad.output


def test_the_demo_guards_production_once(app: Flask) -> None:
    from forge_app.demo import seed_demo
    from forge_app.demo_releases import DEMO_GUARD, seed_demo_guard, start_demo_worker

    with app.app_context():
        info = seed_demo(db.session)
        seed_demo_guard(app, info)
        seed_demo_guard(app, info)
        policies = list(db.session.scalars(select(GuardPolicy)))
        assert len(policies) == 1 and policies[0].channel.name == "production"
        assert policies[0].max_error_rate == DEMO_GUARD["max_error_rate"]
    stop = start_demo_worker(app, interval=0.05)
    stop()  # returns once the worker thread ended
