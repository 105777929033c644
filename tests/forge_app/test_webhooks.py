"""Webhook safety: no calls to non-public addresses (at save and send time), https only,
no redirects, and an HMAC-SHA256 signature a receiver can check."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from forge_app import webhooks
from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.models import AuditEvent, Project, User
from tests.forge_app.conftest import World
from tests.forge_app.webhook_receiver import Receiver

PUBLIC = "93.184.215.14"


def _resolving_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> list[str]:
    """Make every host resolve to ``addresses``; returns the hosts asked for."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(addresses)

    monkeypatch.setattr(webhooks, "resolve_host", resolve)
    return asked


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),
    ],
)
def test_each_non_public_address_class_is_refused(
    app: Flask, monkeypatch: pytest.MonkeyPatch, address: str, kind: str
) -> None:
    _resolving_to(monkeypatch, PUBLIC, address)  # one bad answer among good ones is enough
    with app.app_context():
        problem = webhooks.unsafe_address("https://hooks.example.com/x")
    assert problem == (
        f"The webhook address hooks.example.com ({address}) is "
        f"{'an' if kind == 'unspecified' else 'a'} {kind} address; the FORGE does not call "
        f"{kind} addresses unless FORGE_WEBHOOK_ALLOWED_HOSTS allows them."
    )


def test_an_address_literal_is_checked_without_dns(app: Flask) -> None:
    with app.app_context():
        assert webhooks.unsafe_address("https://169.254.169.254/latest/meta-data") == (
            "The webhook address 169.254.169.254 is a link-local address; the FORGE does not "
            "call link-local addresses unless FORGE_WEBHOOK_ALLOWED_HOSTS allows them."
        )
        assert "is a loopback address" in (webhooks.unsafe_address("https://[::1]:8443/") or "")


def test_public_https_is_allowed_and_http_is_not(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolving_to(monkeypatch, PUBLIC, "2606:2800:220:1::1")
    with app.app_context():
        assert webhooks.unsafe_address("https://hooks.example.com/x") is None
        assert webhooks.unsafe_address("http://hooks.example.com/x") == (
            "The webhook address must start with https:// unless "
            "FORGE_WEBHOOK_ALLOWED_HOSTS allows the host hooks.example.com."
        )


def test_an_unknown_host_is_refused(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    monkeypatch.setattr(webhooks, "resolve_host", fail)
    with app.app_context():
        assert webhooks.unsafe_address("https://nowhere.invalid/") == (
            "The webhook host nowhere.invalid could not be found."
        )


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("hooks.internal", "http://hooks.internal:8080/x"),
        ("other.example, HOOKS.internal.", "https://hooks.internal/x"),
        ("10.0.0.0/8", "http://hooks.internal/x"),
        ("10.0.0.5", "https://10.0.0.5/x"),
    ],
)
def test_the_allow_list_lets_named_hosts_and_networks_through(
    app: Flask, monkeypatch: pytest.MonkeyPatch, allowed: str, url: str
) -> None:
    _resolving_to(monkeypatch, "10.0.0.5")
    with app.app_context():
        assert webhooks.unsafe_address(url) is not None
        app.config["FORGE_WEBHOOK_ALLOWED_HOSTS"] = allowed
        assert webhooks.unsafe_address(url) is None
        app.config["FORGE_WEBHOOK_ALLOWED_HOSTS"] = "192.168.0.0/16, elsewhere.internal"
        assert "is a private address" in (webhooks.unsafe_address(url) or "")


def test_the_allow_list_is_read_from_the_environment(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolving_to(monkeypatch, "10.0.0.5")
    monkeypatch.setenv("FORGE_WEBHOOK_ALLOWED_HOSTS", "hooks.internal")
    with app.app_context():
        app.config.pop("FORGE_WEBHOOK_ALLOWED_HOSTS", None)
        assert webhooks.unsafe_address("http://hooks.internal/x") is None


def _owner_and_project(world: World) -> tuple[User, Project]:
    owner = db.session.get(User, world.users["owner"])
    project = db.session.get(Project, world.project_id)
    assert owner is not None and project is not None
    return owner, project


def test_saving_refuses_a_private_address_and_changes_nothing(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolving_to(monkeypatch, "10.0.0.5")
    with app.app_context():
        owner, project = _owner_and_project(world)
        with pytest.raises(ForgeError, match="is a private address; the FORGE does not call"):
            webhooks.save_webhook(project, "https://hooks.example.com/", enabled=True, user=owner)
        assert webhooks.webhook_of(project.id) is None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def _saved(app: Flask, world: World, url: str) -> str:
    """Save ``url`` as the project's webhook; the secret shown to the owner."""
    owner, project = _owner_and_project(world)
    _, secret = webhooks.save_webhook(project, url, enabled=True, user=owner)
    assert secret is not None
    return secret


def test_a_delivery_is_signed_so_the_receiver_can_check_it(
    app: Flask, world: World, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["FORGE_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
    body = {"event": "anvil.guard.rollback", "project_id": str(world.project_id), "n": 1}
    with app.app_context():
        secret = _saved(app, world, receiver.url)
        assert webhooks.deliver(receiver.url, body) is None
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "webhook.update"))
        assert all(secret not in json.dumps(e.details) for e in events)
    ((headers, raw),) = receiver.requests
    assert json.loads(raw) == body
    timestamp = headers["X-Anvil-Timestamp"]
    assert timestamp.isdigit()
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    assert hmac.compare_digest(headers["X-Anvil-Signature-256"], "sha256=" + expected.hexdigest())
    assert not hmac.compare_digest(
        headers["X-Anvil-Signature-256"],
        webhooks.sign("another secret", timestamp, raw),
    )
    assert secret not in caplog.text


def test_delivery_checks_the_address_again(
    app: Flask, world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host was public when saved; it now resolves to a private address: no POST."""
    asked = _resolving_to(monkeypatch, PUBLIC)
    url = "https://hooks.example.com/x"
    with app.app_context():
        _saved(app, world, url)
        _resolving_to(monkeypatch, "10.1.2.3")
        problem = webhooks.deliver(url, {"project_id": str(world.project_id)})
    assert asked == ["hooks.example.com"]
    assert problem == (
        "the webhook address hooks.example.com (10.1.2.3) is a private address; the FORGE "
        "does not call private addresses unless FORGE_WEBHOOK_ALLOWED_HOSTS allows them"
    )
    assert receiver.requests == []


def test_delivery_connects_to_the_address_it_checked(
    app: Flask, world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name is resolved once per delivery and the POST goes to that answer."""
    app.config["FORGE_WEBHOOK_ALLOWED_HOSTS"] = "hooks.internal"
    port = receiver.server.server_port
    url = f"http://hooks.internal:{port}/hook"
    asked = _resolving_to(monkeypatch, "127.0.0.1")
    with app.app_context():
        _saved(app, world, url)
        assert webhooks.deliver(url, {"project_id": str(world.project_id)}) is None
    assert asked == ["hooks.internal", "hooks.internal"]
    ((headers, _),) = receiver.requests
    assert headers["Host"] == f"hooks.internal:{port}"


def test_a_redirect_is_not_followed(app: Flask, world: World) -> None:
    target = Receiver()
    redirecting = Receiver([307], location=target.url)
    try:
        app.config["FORGE_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
        with app.app_context():
            _saved(app, world, redirecting.url)
            problem = webhooks.deliver(redirecting.url, {"project_id": str(world.project_id)})
        assert problem == "the webhook answered HTTP 307"
        assert len(redirecting.requests) == 1 and target.requests == []
    finally:
        target.close()
        redirecting.close()


def test_a_webhook_without_a_secret_is_not_called(
    app: Flask, world: World, receiver: Receiver
) -> None:
    app.config["FORGE_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
    with app.app_context():
        _saved(app, world, receiver.url)
        hook = webhooks.webhook_of(world.project_id)
        assert hook is not None
        hook.secret_encrypted = None  # a webhook saved before signing existed
        db.session.commit()
        problem = webhooks.deliver(receiver.url, {"project_id": str(world.project_id)})
    assert problem == (
        "the webhook has no usable signing secret; save the webhook again to make one"
    )
    assert receiver.requests == []


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_the_secret_migration_downgrades_and_upgrades(app: Flask, backend: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from forge_app.schema import alembic_config, current_revision

    def columns() -> set[str]:
        return {c["name"] for c in inspect(db.engine).get_columns("project_webhooks")}

    with app.app_context():
        assert "secret_encrypted" in columns()
        for target in ("0010_invitations", "0011_webhook_secret"):
            with db.engine.begin() as connection:
                config = alembic_config()
                config.attributes["connection"] = connection
                if target == "0010_invitations":
                    command.downgrade(config, target)
                else:
                    command.upgrade(config, target)
            assert current_revision(db.engine) == target
            assert ("secret_encrypted" in columns()) is (target == "0011_webhook_secret")
        db.engine.dispose()
