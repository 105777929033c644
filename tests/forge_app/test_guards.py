"""Health guards: judging the new list's usage; automatic rollback, abort and advance, once."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from forge_app import guard_actions
from forge_app.extensions import db
from forge_app.models import AuditEvent, Project, PromptSet, Role, User, utcnow
from forge_app.models.distribution import Channel
from forge_app.models.releases import GuardAction, GuardPolicy, ProjectWebhook, ScheduledJob
from forge_app.models.usage import PromptUsage
from forge_app.services import publishing
from forge_app.services.workflow import unlock
from forge_app.usage import bucket_start
from tests.forge_app.conftest import SAMPLE_PROMPTS, add_prompts, lock_version
from tests.forge_app.test_distribution import Env


@pytest.fixture
def env(app: Any, world: Any) -> Env:
    return Env(app, world)


@pytest.fixture
def two_versions(env: Env) -> tuple[str, str]:
    """v1 and v2 of the world's set (v2 changes welcome.message); v1 is on production."""
    env.token()
    add_prompts(env.app, env.world, SAMPLE_PROMPTS)
    first = lock_version(env.app, env.world)
    env.call(publishing.publish_version, f"version:{first}", "channel:production")
    with env.app.app_context():
        prompt_set = db.session.get(PromptSet, env.world.set_id)
        owner = db.session.get(User, env.world.users["owner"])
        assert prompt_set is not None and owner is not None
        unlock(db.session, prompt_set, owner, role=Role.OWNER, expected_revision=None)
        db.session.commit()
    changed = dict(SAMPLE_PROMPTS)
    changed["welcome.message"] = {"template": "Hello {{ name }} ({{ tier }})", "metadata": {}}
    add_prompts(env.app, env.world, changed)
    second = lock_version(env.app, env.world)
    return first, second


def _guard(env: Env, **kw: Any) -> None:
    with env.app.app_context():
        channel = _channel(env)
        values = {"max_error_rate": 0.1, "min_calls": 20, "window_minutes": 30, **kw}
        stages = values.pop("stages", [])
        db.session.add(
            GuardPolicy(
                project_id=env.world.project_id,
                channel_id=channel.id,
                stages_json=json.dumps(stages),
                **values,
            )
        )
        db.session.commit()


def _channel(env: Env, name: str = "production") -> Channel:
    project = db.session.get(Project, env.world.project_id)
    assert project is not None
    found = publishing.get_channel(project, name)
    assert found is not None
    return found


_rows = itertools.count()


def _report(env: Env, content_sha256: str, renders: int, errors: int, calls: int = 0) -> None:
    """Usage of one content on production now, as the ingestion stores it."""
    with env.app.app_context():
        db.session.add(
            PromptUsage(
                project_id=env.world.project_id,
                channel="production",
                prompt_id=f"welcome.message{next(_rows)}",
                content_sha256=content_sha256,
                bucket_start=bucket_start(utcnow(), 300),
                renders=renders,
                render_errors=errors,
                calls=calls,
                call_errors=0,
                input_tokens=10 * calls,
                output_tokens=5 * calls,
                latency_ms=0.0,
                errors_json=json.dumps({"MissingVariable": errors}),
            )
        )
        db.session.commit()


def _evaluate(env: Env) -> GuardAction | None:
    with env.app.app_context():
        action = guard_actions.evaluate_channel(_channel(env))
        if action is not None:
            db.session.refresh(action)
            db.session.expunge(action)
        return action


def test_a_breach_after_a_publish_rolls_back_once_with_the_figures(
    env: Env, two_versions: tuple[str, str]
) -> None:
    first, second = two_versions
    env.call(publishing.publish_version, f"version:{second}", "channel:production")
    v2 = env.entry("production")
    assert v2.version == second
    _guard(env)
    with env.app.app_context():
        db.session.add(ProjectWebhook(project_id=env.world.project_id, url="http://127.0.0.1:9/h"))
        db.session.commit()
    _report(env, v2.content_sha256, renders=100, errors=30)
    action = _evaluate(env)
    assert action is not None and action.kind == "rollback"
    assert env.entry("production").version == first
    assert action.figures["requests"] == 100 and action.figures["errors"] == 30
    assert action.figures["errors_by_class"] == {"MissingVariable": 30}
    assert "30.0%" in action.summary
    # Exactly once: the next evaluation finds the automatic rollback and does nothing.
    assert _evaluate(env) is None
    with env.app.app_context():
        assert db.session.scalar(select(func.count(GuardAction.id))) == 1
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "guard.rollback"))
        assert event is not None and event.actor_email == "system"
        assert event.details["automatic"] is True and event.details["error_rate"] == 0.3
        job = db.session.scalar(select(ScheduledJob).where(ScheduledJob.kind == "webhook"))
        assert job is not None and job.payload["body"]["kind"] == "rollback"
        assert job.payload["body"]["figures"]["errors"] == 30


def test_no_judgement_below_the_minimum_calls_or_under_the_limit(
    env: Env, two_versions: tuple[str, str]
) -> None:
    _, second = two_versions
    env.call(publishing.publish_version, f"version:{second}", "channel:production")
    sha = env.entry("production").content_sha256
    _guard(env, min_calls=200)
    _report(env, sha, renders=100, errors=90)
    assert _evaluate(env) is None
    _report(env, sha, renders=1000, errors=0)  # 1100 uses, 8.2 % errors: under 10 %
    assert _evaluate(env) is None
    assert env.entry("production").version == second


def test_errors_of_the_old_content_do_not_count(env: Env, two_versions: tuple[str, str]) -> None:
    _first, second = two_versions
    old_sha = env.entry("production").content_sha256
    env.call(publishing.publish_version, f"version:{second}", "channel:production")
    _guard(env)
    _report(env, old_sha, renders=100, errors=100)
    assert _evaluate(env) is None
    assert env.entry("production").version == second


def test_outside_the_window_the_publish_is_no_longer_judged(
    env: Env, two_versions: tuple[str, str]
) -> None:
    _, second = two_versions
    env.call(publishing.publish_version, f"version:{second}", "channel:production")
    _guard(env, window_minutes=5)
    _report(env, env.entry("production").content_sha256, renders=100, errors=50)
    with env.app.app_context():
        later = utcnow() + timedelta(minutes=6)
        assert guard_actions.evaluate_channel(_channel(env), now=later) is None
    assert env.entry("production").version == second


def test_a_breach_during_a_rollout_aborts_it(env: Env, two_versions: tuple[str, str]) -> None:
    first, second = two_versions
    env.call(
        publishing.publish_version, f"version:{second}", "channel:production", rollout_percent=30
    )
    pointer = env.pointer("production")
    assert pointer.rollout is not None
    _guard(env)
    _report(env, pointer.releases[0].content_sha256, renders=50, errors=10)
    action = _evaluate(env)
    assert action is not None and action.kind == "abort"
    after = env.pointer("production")
    assert after.rollout is None and after.releases[0].version == first
    # The aborted rollout is not judged again (nor the old list, even with errors of its own).
    _report(env, after.releases[0].content_sha256, renders=50, errors=50)
    assert _evaluate(env) is None
    assert env.pointer("production").sequence == after.sequence


def test_a_healthy_staged_rollout_advances_to_the_next_step(
    env: Env, two_versions: tuple[str, str]
) -> None:
    _, second = two_versions
    env.call(
        publishing.publish_version, f"version:{second}", "channel:production", rollout_percent=10
    )
    _guard(env, stages=[10, 50, 100], hold_minutes=0)
    sha = env.pointer("production").releases[0].content_sha256
    _report(env, sha, renders=10, errors=0)
    assert _evaluate(env) is None  # 10 uses: fewer than the 20 needed to judge
    _report(env, sha, renders=40, errors=1)
    action = _evaluate(env)
    assert action is not None and action.kind == "advance"
    assert env.pointer("production").rollout is not None
    assert env.pointer("production").rollout.percent == 50  # type: ignore[union-attr]


def test_a_move_another_process_claimed_is_not_made_again(
    env: Env, two_versions: tuple[str, str]
) -> None:
    _, second = two_versions
    publication = env.call(publishing.publish_version, f"version:{second}", "channel:production")
    _guard(env)
    _report(env, env.entry("production").content_sha256, renders=100, errors=50)
    with env.app.app_context():
        channel = _channel(env)
        db.session.add(
            GuardAction(
                project_id=env.world.project_id,
                channel_id=channel.id,
                judged_sequence=publication.sequence,
                kind="rollback",
                figures_json="{}",
            )
        )
        db.session.commit()
    assert _evaluate(env) is None
    assert env.entry("production").version == second  # the claim holder does the move


def test_after_heartbeat_never_raises_and_skips_channels_without_a_guard(
    env: Env, two_versions: tuple[str, str]
) -> None:
    with env.app.app_context():
        env.app.config["FORGE_GUARD_EVALUATE_SECONDS"] = 0
        assert guard_actions.after_heartbeat(env.world.project_id, "production") is None
        assert guard_actions.after_heartbeat(env.world.project_id, "no-such") is None


# ------------------------------------------------------------------------------ the pages


def test_owners_set_the_guard_on_its_page(env: Env, client_as: Any) -> None:
    url = f"/projects/{env.pid}/channels/production"
    owner = client_as("owner")
    page = owner.get(f"{url}/safety")
    assert page.status_code == 200 and "Save guard" in page.get_data(as_text=True)
    form = {
        "enabled": "y",
        "max_error_rate": "2.5",
        "min_calls": "40",
        "window_minutes": "15",
        "stages": "10, 50, 100",
        "hold_minutes": "5",
    }
    assert owner.post(f"{url}/guard", data=form).status_code == 302
    with env.app.app_context():
        policy = db.session.scalar(select(GuardPolicy))
        assert policy is not None
        assert (policy.max_error_rate, policy.min_calls, policy.window_minutes) == (0.025, 40, 15)
        assert policy.stages == [10, 50, 100] and policy.hold_minutes == 5
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "guard.update"))
    channel_page = client_as("viewer").get(url).get_data(as_text=True)
    assert "passes <strong>2.5%</strong> after 40 calls" in channel_page
    assert "Staged plan: 10% → 50% → 100%" in channel_page
    bad = owner.post(f"{url}/guard", data={**form, "stages": "50, 10"}, follow_redirects=True)
    assert "must rise from 1 to 100 percent" in bad.get_data(as_text=True)
    assert client_as("reviewer").post(f"{url}/guard", data=form).status_code == 403
    assert owner.post(f"{url}/guard/delete").status_code == 302
    with env.app.app_context():
        assert db.session.scalar(select(GuardPolicy)) is None


def test_scheduling_and_cancelling_on_the_page(env: Env, client_as: Any) -> None:
    env.token()
    add_prompts(env.app, env.world, SAMPLE_PROMPTS)
    version = lock_version(env.app, env.world)
    with env.app.app_context():
        from forge_app.models import PromptSetVersion

        version_id = db.session.scalar(
            select(PromptSetVersion.id).where(PromptSetVersion.version == version)
        )
    url = f"/projects/{env.pid}/channels/production"
    owner = client_as("owner")
    when = (utcnow() + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")
    done = owner.post(
        f"{url}/schedule",
        data={"kind": "publish", "run_at": when, "version": str(version_id)},
        follow_redirects=True,
    )
    assert f"Scheduled: Publish Main {version} on production at {when} UTC." in done.get_data(
        as_text=True
    )
    page = client_as("viewer").get(url).get_data(as_text=True)
    assert f"Publish Main {version} at {when} UTC" in page
    past = owner.post(
        f"{url}/schedule",
        data={"kind": "rollout", "run_at": "2020-01-01 10:00", "percent": "50"},
        follow_redirects=True,
    )
    assert "That time has passed" in past.get_data(as_text=True)
    garbled = owner.post(
        f"{url}/schedule",
        data={"kind": "rollout", "run_at": "tomorrow", "percent": "50"},
        follow_redirects=True,
    )
    assert "Give the time as YYYY-MM-DD HH:MM (UTC)." in garbled.get_data(as_text=True)
    # Reviewers cannot change production (owners only), so they cannot schedule or cancel.
    assert (
        client_as("reviewer")
        .post(f"{url}/schedule", data={"kind": "rollout", "run_at": when, "percent": "50"})
        .status_code
        == 403
    )
    with env.app.app_context():
        job = db.session.scalar(select(ScheduledJob))
        assert job is not None
        job_id = job.id
    assert (
        client_as("reviewer").post(f"{url}/schedule/cancel", data={"job": job_id}).status_code
        == 403
    )
    cancelled = owner.post(f"{url}/schedule/cancel", data={"job": job_id}, follow_redirects=True)
    assert f"Cancelled: Publish Main {version}." in cancelled.get_data(as_text=True)
    with env.app.app_context():
        found = db.session.get(ScheduledJob, job_id)
        assert found is not None and found.status == "cancelled"
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "schedule.cancel"))
    # A job of another channel is not found through this one.
    assert (
        owner.post(
            f"/projects/{env.pid}/channels/staging/schedule/cancel", data={"job": job_id}
        ).status_code
        == 404
    )


def test_owners_set_the_webhook(env: Env, client_as: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from forge_app import webhooks

    monkeypatch.setattr(webhooks, "resolve_host", lambda host, port: ["93.184.215.14"])
    url = f"/projects/{env.pid}/webhook"
    owner = client_as("owner")
    assert owner.get(url).status_code == 200
    bad = owner.post(
        url, data={"url": "ftp://example.com/x", "enabled": "y"}, follow_redirects=True
    )
    assert "must start with https:// or http://" in bad.get_data(as_text=True)
    private = owner.post(
        url, data={"url": "https://10.0.0.5/x", "enabled": "y"}, follow_redirects=True
    ).get_data(as_text=True)
    assert "The webhook address 10.0.0.5 is a private address" in private
    saved = owner.post(url, data={"url": "https://hooks.example.com/a", "enabled": "y"})
    # The new signing secret is shown once, on this answer (not in a redirect's cookie).
    assert saved.status_code == 200
    page = saved.get_data(as_text=True)
    assert "Copy its signing secret now" in page
    with env.app.app_context():
        hook = db.session.scalar(select(ProjectWebhook))
        assert hook is not None and hook.url == "https://hooks.example.com/a" and hook.enabled
        secret = webhooks._open_secret(hook)
        assert secret and secret in page
    assert secret not in owner.get(url).get_data(as_text=True)
    again = owner.post(url, data={"url": "https://hooks.example.com/a"})
    assert again.status_code == 302
    assert client_as("reviewer").get(url).status_code == 403
    owner.post(url, data={"url": ""})
    with env.app.app_context():
        assert db.session.scalar(select(ProjectWebhook)) is None


def test_every_safe_releases_form_needs_csrf(
    app_config: dict[str, Any], password_hash: str
) -> None:
    from forge_app import create_app
    from tests.forge_app.conftest import login, world

    app = create_app({**app_config, "WTF_CSRF_ENABLED": True})
    made = world.__wrapped__(app, password_hash)  # type: ignore[attr-defined]
    client = login(app.test_client(), made.users["owner"])
    base = f"/projects/{made.project_id}"
    for url in (
        f"{base}/channels/production/guard",
        f"{base}/channels/production/guard/delete",
        f"{base}/channels/production/schedule",
        f"{base}/channels/production/schedule/cancel",
        f"{base}/webhook",
    ):
        client.get(f"{base}/channels")  # creates the default channels
        assert client.post(url, data={"job": "1", "url": "https://x.example"}).status_code == 400, (
            url
        )


def test_the_pages_show_the_rollout_comparison_and_the_automatic_move(
    env: Env, two_versions: tuple[str, str], client_as: Any
) -> None:
    _first, second = two_versions
    old_sha = env.entry("production").content_sha256
    env.call(
        publishing.publish_version, f"version:{second}", "channel:production", rollout_percent=20
    )
    new_sha = env.pointer("production").releases[0].content_sha256
    _report(env, old_sha, renders=0, errors=0, calls=100)
    _report(env, new_sha, renders=0, errors=0, calls=20)
    page = (
        client_as("viewer").get(f"/projects/{env.pid}/channels/production").get_data(as_text=True)
    )
    table = page[page.index('id="rollout-comparison"') :]
    table = table[: table.index("</table>")]
    assert "Rollout at 20%" in page
    assert "<td>100</td><td>20</td>" in table  # calls: previous list, new list
    assert "<td>10 / 5</td><td>10 / 5</td>" in table  # tokens per call in / out
    _guard(env)
    _report(env, new_sha, renders=10, errors=10)
    action = _evaluate(env)
    assert action is not None and action.kind == "abort" and action.result_sequence is not None
    status = (
        client_as("viewer")
        .get(f"/projects/{env.pid}/channels/production/publications/{action.result_sequence}")
        .get_data(as_text=True)
    )
    assert "made <strong>automatically</strong> by the guard" in status
    judged = (
        client_as("viewer")
        .get(f"/projects/{env.pid}/channels/production/publications/{action.judged_sequence}")
        .get_data(as_text=True)
    )
    assert "aborted the rollout automatically" in judged
    channel = (
        client_as("viewer").get(f"/projects/{env.pid}/channels/production").get_data(as_text=True)
    )
    assert 'data-guard-action="abort"' in channel and "Rollout aborted" in channel
