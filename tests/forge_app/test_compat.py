"""Caller compatibility: warnings from the variables live instances pass; owners confirm."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from forge_app import compat
from forge_app.extensions import db
from forge_app.models import AuditEvent, utcnow
from tests.forge_app.conftest import World
from tests.forge_app.safe_releases_helpers import heartbeat, two_versions
from tests.forge_app.test_distribution import Env


@pytest.fixture
def env(app: Flask, world: World) -> Env:
    return Env(app, world)


def test_the_warning_sentence() -> None:
    warning = compat.CompatWarning(
        "support.greeting",
        "missing",
        3,
        ["checkout-service"],
        ["customer_name", "product"],
        ["tier"],
        "0.4.0",
    )
    assert warning.sentence == (
        "3 instances of checkout-service call support.greeting with {customer_name, product}; "
        "0.4.0 also needs tier → MissingVariable."
    )
    gone = compat.CompatWarning("old.prompt", "removed", 1, ["web"], [], [], "0.4.0")
    assert (
        gone.sentence
        == "1 instance of web call old.prompt, which 0.4.0 no longer has → PromptNotFound."
    )


def _report_callers(env: Env, app: Flask, token: str, count: int, names: list[str]) -> None:
    client = app.test_client()
    sha = env.pointer("staging").releases[0].content_sha256
    for _ in range(count):
        status = heartbeat(
            client,
            env,
            token,
            channel="staging",
            prompts=[
                {
                    "prompt_id": "welcome.message",
                    "content_sha256": sha,
                    "renders": 3,
                    "variables": [names],
                },
                {
                    "prompt_id": "support.chat",
                    "content_sha256": sha,
                    "renders": 1,
                    "variables": [["product", "question"]],
                },
            ],
        )
        assert status == 204


def test_warnings_list_who_lacks_which_variable(env: Env, app: Flask) -> None:
    token = env.token()
    _first, second = two_versions(env, publish_first_to="staging")
    _report_callers(env, app, token, 3, ["name", "plan"])
    _report_callers(env, app, token, 1, ["name", "tier"])
    with app.app_context():
        from forge_app.models import PromptSetVersion

        version = db.session.scalar(
            select(PromptSetVersion).where(PromptSetVersion.version == second)
        )
        assert version is not None
        warnings = compat.compat_warnings(version, channel="staging")
        assert [w.sentence for w in warnings] == [
            f"3 instances of checkout-service call welcome.message with {{name, plan}}; {second} "
            "also needs tier → MissingVariable."
        ]
        # Prompts the new list no longer has are listed too.
        removed = compat.prompts_warnings(
            env.world.project_id,
            {"welcome.message": {"name"}},
            "0.9.0",
            channel="staging",
            previous={"welcome.message", "support.chat"},
            now=utcnow(),
        )
        assert [w.kind for w in removed] == ["removed"]
        assert removed[0].prompt_id == "support.chat" and removed[0].instances == 4


def test_publishing_with_warnings_needs_an_owner_s_confirmation(
    env: Env, app: Flask, client_as: Any
) -> None:
    token = env.token()
    _, second = two_versions(env, publish_first_to="staging")
    _report_callers(env, app, token, 2, ["name", "plan"])
    url = env.version_url(second)
    page = client_as("reviewer").get(f"{url}?channel=staging")
    text = page.get_data(as_text=True)
    assert "2 instances of checkout-service call welcome.message" in text
    assert "needs an owner" in text and 'name="compat_confirmed"' not in text
    # Without the confirmation nothing is published; a reviewer's confirmation is not enough.
    refused = client_as("reviewer").post(url, data={"channel": "staging"})
    assert refused.status_code == 302
    assert env.entry("staging").version != second
    refused = client_as("reviewer").post(url, data={"channel": "staging", "compat_confirmed": "1"})
    assert env.entry("staging").version != second
    owner_page = client_as("owner").get(f"{url}?channel=staging").get_data(as_text=True)
    assert 'name="compat_confirmed"' in owner_page
    done = client_as("owner").post(url, data={"channel": "staging", "compat_confirmed": "1"})
    assert done.status_code == 302
    assert env.entry("staging").version == second
    with app.app_context():
        event = db.session.scalar(
            select(AuditEvent).where(AuditEvent.action == "channel.publish_compat_confirmed")
        )
        assert event is not None and event.actor_email == env.world.emails["owner"]
        assert "also needs tier" in event.details["warnings"][0]


def test_the_review_page_warns_too(env: Env, app: Flask, client_as: Any) -> None:
    from forge_app.models import PromptSet, Role, User
    from forge_app.services.workflow import submit, unlock

    token = env.token()
    _first, _second = two_versions(env, publish_first_to="staging")
    _report_callers(env, app, token, 1, ["name", "plan"])
    with app.app_context():
        prompt_set = db.session.get(PromptSet, env.world.set_id)
        owner = db.session.get(User, env.world.users["owner"])
        editor = db.session.get(User, env.world.users["editor"])
        assert prompt_set is not None and owner is not None and editor is not None
        unlock(db.session, prompt_set, owner, role=Role.OWNER, expected_revision=None)
        db.session.commit()
    from tests.forge_app.conftest import add_prompts

    add_prompts(
        app, env.world, {"welcome.message": {"template": "Hi {{ name }} {{ vip }}", "metadata": {}}}
    )
    with app.app_context():
        prompt_set = db.session.get(PromptSet, env.world.set_id)
        editor = db.session.get(User, env.world.users["editor"])
        assert prompt_set is not None and editor is not None
        submit(
            db.session,
            prompt_set,
            editor,
            role=Role.EDITOR,
            bump="minor",
            changelog="x",
            expected_revision=prompt_set.revision,
        )
        db.session.commit()
    page = client_as("reviewer").get(f"/projects/{env.pid}/sets/{env.world.set_id}/review")
    assert "call welcome.message with {name, plan}" in page.get_data(as_text=True)
    assert "also needs vip" in page.get_data(as_text=True)


def test_the_rest_api_needs_an_owner_s_confirmation_too(env: Env, app: Flask) -> None:
    from tests.forge_app.test_rest_api import Api, make_token

    token = env.token()
    first, second = two_versions(env, publish_first_to="staging")
    _report_callers(env, app, token, 2, ["name", "plan"])
    url = f"/projects/{env.world.project_id}/channels/staging/publish"
    body: dict[str, Any] = {"prompt_set_id": str(env.world.set_id), "version": second}
    owner = Api(app.test_client(), make_token(app, env.world, "owner"))
    reviewer = Api(app.test_client(), make_token(app, env.world, "reviewer"))

    refused = owner.send("POST", url, body)
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert error["message"].startswith("Live instances call prompts of this version")
    assert any("also needs tier" in d for d in error["details"])
    forbidden = reviewer.send("POST", url, {**body, "confirm_compatibility": True})
    assert forbidden.status_code == 403
    assert forbidden.get_json()["error"]["message"] == (
        "Only an owner can confirm the compatibility warnings."
    )
    assert env.entry("staging").version == first, "nothing was published"

    done = owner.send("POST", url, {**body, "confirm_compatibility": True})
    assert done.status_code in (200, 201), done.get_json()
    assert env.entry("staging").version == second
    with app.app_context():
        events = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "channel.publish_compat_confirmed")
        ).all()
        assert [e.actor_email for e in events] == [env.world.emails["owner"]]
        assert "also needs tier" in events[0].details["warnings"][0]


def _schedule_on_staging(
    env: Env, version_text: str, user: str, *, confirmed: bool, at: datetime
) -> int:
    from forge_app import scheduling
    from forge_app.models import PromptSetVersion, User
    from forge_app.services import publishing

    with env.app.app_context():
        version = db.session.scalar(
            select(PromptSetVersion).where(PromptSetVersion.version == version_text)
        )
        actor = db.session.get(User, env.world.users[user])
        assert version is not None and actor is not None
        channel = publishing.get_channel(version.prompt_set.project, "staging")
        assert channel is not None
        job = scheduling.schedule_job(
            channel,
            "publish",
            at,
            user=actor,
            version=version,
            compat_confirmed=confirmed,
            now=at - timedelta(minutes=5),
        )
        db.session.commit()
        return job.id


def test_a_scheduled_publish_needs_an_owner_s_confirmation(
    env: Env, app: Flask, client_as: Any
) -> None:
    from forge_app import scheduling
    from forge_app.models.releases import ScheduledJob

    safety = f"{env.channel_url('staging')}/safety"
    assert 'id="schedule-compat-confirmed"' in client_as("owner").get(safety).get_data(True)
    reviewer_page = client_as("reviewer").get(safety).get_data(as_text=True)
    assert 'id="schedule-form"' in reviewer_page
    assert 'id="schedule-compat-confirmed"' not in reviewer_page
    token = env.token()
    first, second = two_versions(env, publish_first_to="staging")
    _report_callers(env, app, token, 1, ["name", "plan"])
    at = utcnow()
    with pytest.raises(scheduling.ScheduleError, match="an owner must confirm") as caught:
        _schedule_on_staging(env, second, "owner", confirmed=False, at=at)
    assert any("also needs tier" in p for p in caught.value.problems)
    with pytest.raises(scheduling.ScheduleError, match="Only an owner can confirm"):
        _schedule_on_staging(env, second, "reviewer", confirmed=True, at=at)

    job_id = _schedule_on_staging(env, second, "owner", confirmed=True, at=at)
    with app.app_context():
        assert scheduling.run_due_jobs("w1", now=at) == [job_id]
        job = db.session.get(ScheduledJob, job_id)
        assert job is not None and job.status == "done", job.note if job else None
        event = db.session.scalar(
            select(AuditEvent).where(AuditEvent.action == "channel.publish_compat_confirmed")
        )
        assert event is not None and event.actor_email == env.world.emails["owner"]
    assert env.entry("staging").version == second
    assert first != second


def test_warnings_that_appear_after_scheduling_stop_an_unconfirmed_job(
    env: Env, app: Flask
) -> None:
    from forge_app import scheduling
    from forge_app.models.releases import ScheduledJob

    token = env.token()
    first, second = two_versions(env, publish_first_to="staging")
    at = utcnow()
    job_id = _schedule_on_staging(env, second, "owner", confirmed=False, at=at)
    _report_callers(env, app, token, 1, ["name", "plan"])  # callers without tier show up
    with app.app_context():
        assert scheduling.run_due_jobs("w1", now=at) == [job_id]
        job = db.session.get(ScheduledJob, job_id)
        assert job is not None and job.status == "failed"
        assert "an owner must confirm the compatibility warnings" in job.note
    assert env.entry("staging").version == first, "nothing was published"
