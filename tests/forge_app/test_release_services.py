"""The safe-releases services the views call: guards, the webhook, the confirmed publish.

Each commits its change with its audit event, or refuses with a ForgeError and changes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select

from forge_app import guards, webhooks
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import AuditEvent, Project, PromptSet, PromptSetVersion, Role, User
from forge_app.models.releases import GuardPolicy, ProjectWebhook
from forge_app.services import publishing
from forge_app.services.publish import publish_confirmed
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version
from tests.forge_app.test_distribution import Env

SETTINGS = guards.GuardSettings(
    enabled=True,
    max_error_rate=0.025,
    min_calls=40,
    window_minutes=15,
    stages=[10, 50, 100],
    hold_minutes=5,
)


def _events(action: str) -> list[AuditEvent]:
    db.session.rollback()  # only what was committed
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _owner_and_project(world: World) -> tuple[User, Project]:
    owner = db.session.get(User, world.users["owner"])
    project = db.session.get(Project, world.project_id)
    assert owner is not None and project is not None
    return owner, project


def _production(project: Project) -> Any:
    publishing.ensure_default_channels(project)
    channel = publishing.get_channel(project, "production")
    assert channel is not None
    return channel


def test_save_guard_commits_the_policy_and_its_audit_event(app: Any, world: World) -> None:
    with app.app_context():
        owner, project = _owner_and_project(world)
        channel = _production(project)
        guards.save_guard(channel, SETTINGS, user=owner)
        changed = replace(SETTINGS, enabled=False, stages=[])
        policy = guards.save_guard(channel, changed, user=owner)
        db.session.rollback()
        assert db.session.scalar(select(func.count(GuardPolicy.id))) == 1
        assert (policy.enabled, policy.stages, policy.updated_by_id) == (False, [], owner.id)
        first, second = _events("guard.update")
        assert first.details == {
            "enabled": True,
            "max_error_rate": 0.025,
            "min_calls": 40,
            "window_minutes": 15,
            "stages": [10, 50, 100],
            "hold_minutes": 5,
        }
        assert second.details["enabled"] is False and second.actor_id == owner.id
        assert first.project_id == project.id and first.object_label == channel.name


def test_delete_guard_audits_only_a_guard_that_was_there(app: Any, world: World) -> None:
    with app.app_context():
        owner, project = _owner_and_project(world)
        channel = _production(project)
        assert guards.delete_guard(channel, user=owner) is False
        assert _events("guard.delete") == []
        guards.save_guard(channel, SETTINGS, user=owner)
        assert guards.delete_guard(channel, user=owner) is True
        assert guards.guard_of(channel) is None
        (event,) = _events("guard.delete")
        assert event.actor_id == owner.id and event.project_id == project.id


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every host resolves to a public address (the tests have no DNS)."""
    monkeypatch.setattr(webhooks, "resolve_host", lambda host, port: ["93.184.215.14"])


def test_save_webhook_refuses_a_bad_address_and_saves_a_good_one(
    app: Any, world: World, public_dns: None
) -> None:
    with app.app_context():
        owner, project = _owner_and_project(world)
        with pytest.raises(ForgeError, match="must start with https:// or http://") as caught:
            webhooks.save_webhook(project, "ftp://hooks.example.com", enabled=True, user=owner)
        assert caught.value.kind is Kind.INVALID
        assert webhooks.webhook_of(project.id) is None and _events("webhook.update") == []
        _, first = webhooks.save_webhook(
            project, "https://hooks.example.com/a", enabled=False, user=owner
        )
        _, again = webhooks.save_webhook(
            project, "https://hooks.example.com/a", enabled=True, user=owner
        )
        _, second = webhooks.save_webhook(
            project, "https://hooks.example.com/b", enabled=True, user=owner
        )
        # A secret is made when the webhook is created and when its address changes.
        assert first and second and again is None and first != second
        assert db.session.scalar(select(func.count(ProjectWebhook.id))) == 1
        hook = webhooks.webhook_of(project.id)
        assert hook is not None and (hook.url, hook.enabled) == (
            "https://hooks.example.com/b",
            True,
        )
        assert hook.secret_encrypted and second not in hook.secret_encrypted
        assert [e.details for e in _events("webhook.update")] == [
            {"enabled": False, "new_secret": True},
            {"enabled": True, "new_secret": False},
            {"enabled": True, "new_secret": True},
        ]


def test_delete_webhook_audits_even_without_a_webhook(
    app: Any, world: World, public_dns: None
) -> None:
    with app.app_context():
        owner, project = _owner_and_project(world)
        webhooks.save_webhook(project, "https://hooks.example.com/", enabled=True, user=owner)
        webhooks.delete_webhook(project, user=owner)
        webhooks.delete_webhook(project, user=owner)
        assert webhooks.webhook_of(project.id) is None
        assert [e.actor_id for e in _events("webhook.delete")] == [owner.id, owner.id]


@pytest.fixture
def env(app: Any, world: World) -> Env:
    return Env(app, world)


def _released(env: Env) -> str:
    """A token (the channel's recipient) and a locked version; returns the version."""
    env.token()
    add_prompts(env.app, env.world, SAMPLE_PROMPTS)
    return lock_version(env.app, env.world)


def _publishable(env: Env, version_text: str) -> tuple[User, Project, PromptSet, PromptSetVersion]:
    """The owner, the project, its set and the version (inside an app context)."""
    owner, project = _owner_and_project(env.world)
    prompt_set = db.session.get(PromptSet, env.world.set_id)
    assert prompt_set is not None
    return owner, project, prompt_set, prompt_set_version(prompt_set, version_text)


def test_publish_confirmed_refuses_a_role_and_records_nothing(env: Env) -> None:
    version_text = _released(env)
    with env.app.app_context():
        owner, project, prompt_set, version = _publishable(env, version_text)
        with pytest.raises(ForgeError) as caught:
            publish_confirmed(
                prompt_set,
                version,
                _production(project),
                user=owner,
                role=Role.EDITOR,
                compat_confirmed=True,
            )
        assert caught.value.kind is Kind.FORBIDDEN
        assert _events("channel.publish_compat_confirmed") == []
        assert _events("channel.publish") == []


def prompt_set_version(prompt_set: PromptSet, version: str) -> PromptSetVersion:
    found = db.session.scalar(
        select(PromptSetVersion).where(
            PromptSetVersion.prompt_set_id == prompt_set.id, PromptSetVersion.version == version
        )
    )
    assert found is not None
    return found
