"""ACCESS_TOKENs in the FORGE: generated on the tokens page, encrypted at rest with
FORGE_DATA_KEY, shown again to owners, checked as bearer tokens in constant time, revoked."""

from __future__ import annotations

import hmac
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from anvil_client.errors import ConfigError
from anvil_client.wire import AccessToken as WireToken
from forge_app.extensions import db
from forge_app.models import AuditEvent, Project, User, utcnow
from forge_app.models.distribution import AccessToken
from forge_app.services import tokens as token_service
from forge_app.services.tokens import (
    authenticate_bearer,
    create_token,
    decrypt_secret,
    encrypt_secret,
    hash_token,
    lookup_token_status,
    reveal_token,
    touch_last_used,
)
from tests.forge_app.conftest import World

TOKEN_IN_PAGE = re.compile(r"anvil_[a-z0-9]{12}_[A-Za-z0-9_-]{43}")


def generate(client: Any, world: World, name: str = "checkout-service prod") -> str:
    response = client.post(f"/projects/{world.project_id}/tokens", data={"name": name})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    found = TOKEN_IN_PAGE.findall(response.get_data(as_text=True))
    assert len(set(found)) == 1, "the new token is shown exactly once on the page"
    return found[0]


def test_owner_generates_a_token_shown_once_and_stored_encrypted(
    app: Flask, world: World, client_as: Any, app_config: dict[str, Any]
) -> None:
    owner = client_as("owner")
    text_value = generate(owner, world)
    parsed = WireToken.parse(text_value)

    page = owner.get(f"/projects/{world.project_id}/tokens").get_data(as_text=True)
    assert "checkout-service prod" in page
    assert text_value not in page, "the token list never shows the secret"
    assert f"anvil_{parsed.token_id}_" in page

    with app.app_context():
        row = db.session.scalar(select(AccessToken))
        assert row is not None
        assert row.token_id == parsed.token_id
        assert row.secret_hash == hash_token(text_value)
        assert text_value not in row.secret_encrypted
        assert parsed.text.split("_", 2)[2] not in row.secret_encrypted
        # Decrypts with the data key, and only with it.
        assert decrypt_secret(row.token_id, row.secret_encrypted).text == text_value
        with pytest.raises(ConfigError, match="FORGE_DATA_KEY"):
            decrypt_secret(row.token_id, row.secret_encrypted, data_key="another key")
        # Bound to its id: a sealed secret moved to another row does not decrypt.
        with pytest.raises(ConfigError):
            decrypt_secret("zzzzzzzzzzzz", row.secret_encrypted)
        events = db.session.scalars(select(AuditEvent.action)).all()
        assert "token.create" in events
        for (details,) in db.session.execute(select(AuditEvent.details)).all():
            assert text_value not in str(details)
        db.engine.dispose()

    # Nowhere in the database file: not in any table, not in the audit log.
    database = Path(app_config["FORGE_DATABASE_URL"].removeprefix("sqlite:///"))
    raw = database.read_bytes()
    for wal in database.parent.glob(database.name + "-*"):
        raw += wal.read_bytes()
    assert text_value.encode() not in raw
    assert parsed.text.split("_", 2)[2].encode() not in raw


def test_owner_can_show_the_token_again_and_it_is_audited(
    app: Flask, world: World, client_as: Any
) -> None:
    owner = client_as("owner")
    text_value = generate(owner, world)
    token_id = WireToken.parse(text_value).token_id
    response = owner.post(f"/projects/{world.project_id}/tokens/{token_id}/reveal")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert text_value in body
    assert "data-token-copy" in body and "data-token-toggle" in body
    assert response.headers["Cache-Control"] == "no-store"
    # GET does not reveal (no CSRF-less, cacheable way to read a secret).
    assert owner.get(f"/projects/{world.project_id}/tokens/{token_id}/reveal").status_code == 405
    with app.app_context():
        assert (
            db.session.scalar(select(AuditEvent).where(AuditEvent.action == "token.reveal"))
            is not None
        )


@pytest.mark.parametrize("role", ["viewer", "editor", "reviewer"])
def test_only_owners_manage_tokens(app: Flask, world: World, client_as: Any, role: str) -> None:
    token_id = _token_for(app, world)
    client = client_as(role)
    base = f"/projects/{world.project_id}/tokens"
    assert client.get(base).status_code == 403
    assert client.post(base, data={"name": "x"}).status_code == 403
    assert client.post(f"{base}/{token_id}/reveal").status_code == 403
    assert client.get(f"{base}/{token_id}/revoke").status_code == 403
    assert client.post(f"{base}/{token_id}/revoke").status_code == 403
    assert client.post(f"{base}/reencrypt").status_code == 403
    with app.app_context():
        assert db.session.scalar(select(AccessToken.revoked_at)) is None
        assert len(db.session.scalars(select(AccessToken)).all()) == 1


def test_members_of_another_organisation_cannot_reach_tokens(
    app: Flask, world: World, client_as: Any
) -> None:
    token_id = _token_for(app, world)
    outsider = client_as("outsider")
    base = f"/projects/{world.project_id}/tokens"
    assert outsider.get(base).status_code == 404
    assert outsider.post(f"{base}/{token_id}/reveal").status_code == 404
    assert outsider.post(f"{base}/{token_id}/revoke").status_code == 404
    # Nor through their own project's URL.
    other = f"/projects/{world.other_project_id}/tokens/{token_id}"
    assert outsider.post(f"{other}/reveal").status_code == 404
    assert outsider.post(f"{other}/revoke").status_code == 404


def _token_for(app: Flask, world: World, name: str = "svc") -> str:
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        row, _ = create_token(project, name, user=owner)
        db.session.commit()
        return row.token_id


def test_bearer_authentication(app: Flask, world: World) -> None:
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        row, text_value = create_token(project, "svc", user=owner)
        db.session.commit()

        assert authenticate_bearer(f"Bearer {text_value}") is row
        assert authenticate_bearer(f"bearer   {text_value}  ") is row
        assert lookup_token_status(f"Bearer {text_value}") == ("ok", row)
        for header in (
            None,
            "",
            text_value,  # no scheme
            f"Basic {text_value}",
            "Bearer ",
            "Bearer anvil_nope",
            f"Bearer {WireToken.generate().text}",  # unknown id
            # the right id with another secret
            f"Bearer {WireToken(token_id=row.token_id, secret=b'x' * 32).text}",
        ):
            assert authenticate_bearer(header) is None
            assert lookup_token_status(header) == ("unknown", None)

        row.revoked_at = utcnow()
        db.session.commit()
        assert authenticate_bearer(f"Bearer {text_value}") is None
        assert lookup_token_status(f"Bearer {text_value}") == ("revoked", row)


def test_bearer_check_compares_hashes_in_constant_time(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(token_service.hmac, "compare_digest", spy)
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        row, text_value = create_token(project, "svc", user=owner)
        db.session.commit()
        assert authenticate_bearer(f"Bearer {text_value}") is row
        assert (hash_token(text_value), row.secret_hash) in calls
        calls.clear()
        # An unknown id still costs one comparison (timing does not reveal which ids exist).
        assert authenticate_bearer(f"Bearer {WireToken.generate().text}") is None
        assert len(calls) == 1


def test_secret_encryption_round_trip_and_tamper_detection(app: Flask) -> None:
    with app.app_context():
        token = WireToken.generate()
        sealed = encrypt_secret(token)
        assert sealed.startswith("v1.")
        assert encrypt_secret(token) != sealed, "a fresh nonce each time"
        assert decrypt_secret(token.token_id, sealed) == token
        flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
        with pytest.raises(ConfigError):
            decrypt_secret(token.token_id, flipped)
        with pytest.raises(ConfigError):
            decrypt_secret(token.token_id, "v0." + sealed[3:])


def test_reveal_detects_a_changed_data_key(app: Flask, world: World) -> None:
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        row, text_value = create_token(project, "svc", user=owner)
        db.session.commit()
        assert reveal_token(row) == text_value
        app.config["FORGE_DATA_KEY"] = "rotated without re-encrypting"
        with pytest.raises(ConfigError, match="FORGE_DATA_KEY"):
            reveal_token(row)


def test_touch_last_used_writes_at_most_once_a_minute(app: Flask, world: World) -> None:
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        row, _ = create_token(project, "svc", user=owner)
        db.session.commit()
        first = utcnow()
        touch_last_used(row, first)
        db.session.commit()
        touch_last_used(row, first + timedelta(seconds=30))
        db.session.commit()
        assert db.session.scalar(select(AccessToken.last_used_at)) == first
        touch_last_used(row, first + timedelta(seconds=61))
        db.session.commit()
        assert db.session.scalar(select(AccessToken.last_used_at)) == first + timedelta(seconds=61)


def test_token_page_shows_last_used_and_revoked_state(
    app: Flask, world: World, client_as: Any
) -> None:
    owner = client_as("owner")
    text_value = generate(owner, world, "reader")
    token_id = WireToken.parse(text_value).token_id
    page = owner.get(f"/projects/{world.project_id}/tokens").get_data(as_text=True)
    assert "never" in page
    with app.app_context():
        row = db.session.scalar(select(AccessToken))
        assert row is not None
        touch_last_used(row, utcnow())
        db.session.commit()
    page = owner.get(f"/projects/{world.project_id}/tokens").get_data(as_text=True)
    assert "just now" in page
    confirm = owner.get(f"/projects/{world.project_id}/tokens/{token_id}/revoke")
    assert confirm.status_code == 200
    assert "re-encrypted for the 0 remaining tokens" in confirm.get_data(as_text=True)
    response = owner.post(f"/projects/{world.project_id}/tokens/{token_id}/revoke")
    assert response.status_code == 302
    page = owner.get(f"/projects/{world.project_id}/tokens").get_data(as_text=True)
    assert "revoked" in page and "Token reader is revoked." in page
    with app.app_context():
        assert db.session.scalar(select(AccessToken.revoked_at)) is not None
        actions = db.session.scalars(select(AuditEvent.action)).all()
        assert "token.revoke" in actions
        rows = db.session.execute(text("SELECT secret_encrypted FROM access_tokens")).all()
        assert all(text_value not in r[0] for r in rows)


def test_a_reloaded_generate_form_creates_no_second_token(
    app: Flask, world: World, client_as: Any
) -> None:
    owner = client_as("owner")
    page = owner.get(f"/projects/{world.project_id}/tokens").get_data(as_text=True)
    request_id = re.search(r'name="request_id"[^>]*value="([^"]+)"', page)
    assert request_id is not None, "the form carries a one-time request id"
    form = {"name": "checkout-service prod", "request_id": request_id.group(1)}

    first = owner.post(f"/projects/{world.project_id}/tokens", data=form)
    assert len(set(TOKEN_IN_PAGE.findall(first.get_data(as_text=True)))) == 1
    again = owner.post(f"/projects/{world.project_id}/tokens", data=form)  # the browser reload
    assert again.status_code == 200
    assert TOKEN_IN_PAGE.findall(again.get_data(as_text=True)) == []
    assert "already generated" in again.get_data(as_text=True)
    with app.app_context():
        assert len(list(db.session.scalars(select(AccessToken)))) == 1


def test_a_new_token_can_read_every_set_on_every_channel(
    app: Flask, world: World, client_as: Any
) -> None:
    """Generating a token re-encrypts every entry of every channel (pointer v2), each set
    keeping its content."""
    import dataclasses

    from anvil_client.stores import FileStore
    from anvil_client.wire import Pointer, TrustedKey, decrypt_bundle, sha256_hex, verify_envelope
    from forge_app.models import PromptSet, PromptSetVersion
    from forge_app.services import publishing
    from tests.forge_app.conftest import SAMPLE_PROMPTS, add_prompts, lock_version

    owner = client_as("owner")
    first = generate(owner, world, "first")
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    with app.app_context():
        other = PromptSet(project_id=world.project_id, name="Other", description="", status="LIVE")
        db.session.add(other)
        db.session.commit()
        other_id = other.id
    other_world = dataclasses.replace(world, set_id=other_id)
    add_prompts(app, other_world, {"other.hello": {"template": "Hello", "metadata": {}}})
    lock_version(app, other_world)
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        user = db.session.get(User, world.users["owner"])
        assert project is not None and user is not None
        publishing.ensure_default_channels(project)
        for channel_name in ("production", "staging"):
            channel = publishing.get_channel(project, channel_name)
            assert channel is not None
            for version in db.session.scalars(select(PromptSetVersion)):
                publishing.publish_version(version, channel, user=user)
        db.session.commit()
        root = publishing.store_root()
        trusted = [TrustedKey.parse(publishing.forge_public_key_text())]
    assert root is not None
    second = WireToken.parse(generate(owner, world, "second"))
    files = FileStore(root)
    for channel_name in ("production", "staging"):
        data = files.get(f"projects/{world.project_id}/channels/{channel_name}.json").data
        pointer = Pointer.parse(verify_envelope(data, trusted))
        assert sorted(r.name for r in pointer.releases) == ["Main", "Other"]
        for release in pointer.releases:
            stored = files.get(release.object.path).data
            plain = decrypt_bundle(stored, second.token_id, second.kek(), max_plaintext=1 << 20)
            token = WireToken.parse(first)
            assert plain == decrypt_bundle(
                stored, token.token_id, token.kek(), max_plaintext=1 << 20
            )
            assert release.content_sha256 == sha256_hex(plain)
