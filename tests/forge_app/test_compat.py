"""Caller compatibility: warnings from the variables live instances pass; owners confirm."""

from __future__ import annotations

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
