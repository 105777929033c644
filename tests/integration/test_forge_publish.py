"""The FORGE publishes to real stores and the real LIVE client reads what it wrote.

1. FORGE_STORE_URL on a real SeaweedFS bucket: publish, revoke, rollback through the FORGE's
   pages; ``AnvilClient.sync()`` verifies, decrypts and serves each release — and a revoked
   token's client keeps its last prompts and reports the decryption error. A channel serves
   two prompt sets: updating one keeps the other, removing one, revoking and rolling back
   handle every entry.
2. The default local store, served by the FORGE at ``/store/`` over real HTTP: clients use
   ``http://<forge>/store`` as their store URL (ETag/304 included).
"""

# ruff: noqa: F811 - the FORGE fixtures are imported from tests/forge_app/conftest.py and
# requested by name, which ruff reads as redefinitions.
from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from anvil_client import AnvilClient
from anvil_client.errors import DecryptionError
from anvil_client.stores import open_store
from anvil_client.wire import AccessToken as WireToken
from anvil_client.wire import Pointer, TrustedKey, recipient_ids, verify_pointer
from forge_app.extensions import db
from forge_app.models import PromptSetVersion
from forge_app.services import publishing
from tests.forge_app.conftest import (  # noqa: F401 - fixtures are used by name
    SAMPLE_PROMPTS,
    World,
    add_prompts,
    client_as,
    lock_version,
    password_hash,
    sqlite_template,
    world,
)
from tests.servers import served

pytestmark = pytest.mark.integration

TOKEN_RE = re.compile(r"anvil_[a-z0-9]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def store_url(seaweed_bucket: str) -> str:
    return seaweed_bucket


@pytest.fixture
def app_config(sqlite_template: Path, tmp_path: Path, store_url: str) -> dict[str, Any]:
    database = tmp_path / "forge.db"
    shutil.copyfile(sqlite_template, database)
    config = {
        "FORGE_DATABASE_URL": f"sqlite:///{database}",
        "FORGE_INSTANCE_PATH": str(tmp_path / "instance"),
        "FORGE_SECRET_KEY": "integration-secret-" + "x" * 32,
        "FORGE_DATA_KEY": "integration-data-key",
        "TESTING": True,
        "WTF_CSRF_ENABLED": False,
    }
    if store_url:
        config["FORGE_STORE_URL"] = store_url
    return config


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    from forge_app import create_app

    app = create_app(app_config)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def clients() -> Iterator[list[AnvilClient]]:
    made: list[AnvilClient] = []
    yield made
    for client in made:
        client.close()


def generate_token(owner: FlaskClient, world: World, name: str) -> str:
    response = owner.post(f"/projects/{world.project_id}/tokens", data={"name": name})
    assert response.status_code == 200
    return str(TOKEN_RE.findall(response.get_data(as_text=True))[0])


def publish(owner: FlaskClient, world: World, version: str, channel: str = "production") -> None:
    url = f"/projects/{world.project_id}/sets/{world.set_id}/versions/{version}/publish"
    response = owner.post(url, data={"channel": channel})
    assert response.status_code == 302
    assert "/publications/" in response.headers["Location"], response.headers["Location"]


def new_client(
    app: Flask,
    world: World,
    store: str,
    token: str,
    cache: Path,
    made: list[AnvilClient],
) -> AnvilClient:
    with app.app_context():
        key = publishing.forge_public_key_text()
    client = AnvilClient(
        store=store,
        project_id=str(world.project_id),
        channel="production",
        access_token=token,
        trusted_keys=[key],
        cache_dir=cache,
        mode="frozen",
    )
    made.append(client)
    return client


def served_pointer(app: Flask, store_url: str, world: World, channel: str) -> Pointer:
    """The channel's pointer as a client checks it (the one verification of anvil_client.wire)."""
    with app.app_context():
        trusted = [TrustedKey.parse(publishing.forge_public_key_text())]
    store = open_store(store_url)
    try:
        envelope = store.get(f"projects/{world.project_id}/channels/{channel}.json").data
    finally:
        store.close()
    return verify_pointer(envelope, trusted, project_id=str(world.project_id), channel=channel)


def readers_of(app: Flask, store_url: str, world: World, channel: str) -> set[str]:
    """The token ids every entry of the channel is encrypted for (all entries must agree)."""
    pointer = served_pointer(app, store_url, world, channel)
    store = open_store(store_url)
    try:
        found = [set(recipient_ids(store.get(r.object.path).data)) for r in pointer.all_releases()]
    finally:
        store.close()
    assert all(readers == found[0] for readers in found)
    return found[0]


def release_new_version(app: Flask, world: World, text: str) -> str:
    from forge_app.models import PromptSet, Role, User
    from forge_app.services.workflow import unlock

    with app.app_context():
        prompt_set = db.session.get(PromptSet, world.set_id)
        owner = db.session.get(User, world.users["owner"])
        assert prompt_set is not None and owner is not None
        unlock(
            db.session, prompt_set, owner, role=Role.OWNER, expected_revision=prompt_set.revision
        )
        db.session.commit()
    prompts = dict(SAMPLE_PROMPTS)
    prompts["welcome.message"] = {"template": text, "metadata": {}}
    add_prompts(app, world, prompts)
    return lock_version(app, world)


def test_publish_revoke_rollback_on_seaweedfs(
    app: Flask,
    world: World,
    client_as: Any,
    store_url: str,
    tmp_path: Path,
    clients: list[AnvilClient],
) -> None:
    owner = client_as("owner")
    keep, revoked = generate_token(owner, world, "keep"), generate_token(owner, world, "gone")
    add_prompts(app, world, SAMPLE_PROMPTS)
    first = lock_version(app, world)
    publish(owner, world, first)

    reader = new_client(app, world, store_url, keep, tmp_path / "keep", clients)
    loser = new_client(app, world, store_url, revoked, tmp_path / "gone", clients)
    for client in (reader, loser):
        status = client.sync()
        assert (status["version"], status["sequence"]) == (first, 1)
        assert client.prompt("welcome.message", name="Ada", plan="pro") == (
            "Welcome Ada!\nYour plan: pro\n"
        )

    second = release_new_version(app, world, "Hi {{ name }}, v2")
    publish(owner, world, second)
    assert reader.sync()["version"] == second
    assert loser.sync()["version"] == second

    revoked_id = revoked.split("_")[1]
    response = owner.post(f"/projects/{world.project_id}/tokens/{revoked_id}/revoke")
    assert response.status_code == 302
    third = release_new_version(app, world, "Hello {{ name }}, v3")
    publish(owner, world, third)

    assert reader.sync()["version"] == third
    with pytest.raises(DecryptionError):
        loser.sync()
    status = loser.status()
    assert status["version"] == second, "the revoked client keeps its last prompts"
    assert status["last_error"] and "revoked" in status["last_error"]
    assert loser.prompt("welcome.message", name="Ada") == "Hi Ada, v2"

    # Roll back to the first release: re-encrypted, so the kept token reads it, the revoked not.
    response = owner.post(
        f"/projects/{world.project_id}/channels/production/rollback", data={"sequence": "1"}
    )
    assert response.status_code == 302
    status = reader.sync()
    assert status["version"] == first
    assert status["sequence"] == 5  # publish, publish, re-encrypt on revoke, publish, rollback
    assert reader.prompt("welcome.message", name="Ada", plan="pro").startswith("Welcome Ada!")
    # The rolled-back content is a new object the revoked token cannot open. (Its client may
    # still serve that content from its own cache: it had it before the revocation.)
    assert revoked_id not in readers_of(app, store_url, world, "production")

    with app.app_context():
        version = db.session.scalar(
            select(PromptSetVersion).where(PromptSetVersion.version == first)
        )
        assert version is not None
        assert status["content_sha256"] == version.content_sha256
    store = open_store(store_url)
    try:
        history = store.list(f"projects/{world.project_id}/channels/production/history/")
    finally:
        store.close()
    assert len(history) == 5


def add_locked_set(app: Flask, world: World, name: str, prompts: dict[str, Any]) -> World:
    """Another prompt set of the project, locked as 0.1.0; the world as seen from it."""
    import dataclasses

    from forge_app.models import PromptSet

    with app.app_context():
        prompt_set = PromptSet(
            project_id=world.project_id, name=name, description="", status="LIVE"
        )
        db.session.add(prompt_set)
        db.session.commit()
        other = dataclasses.replace(world, set_id=prompt_set.id)
    add_prompts(app, other, prompts)
    lock_version(app, other)
    return other


def test_a_channel_serves_two_sets_on_seaweedfs(
    app: Flask,
    world: World,
    client_as: Any,
    store_url: str,
    tmp_path: Path,
    clients: list[AnvilClient],
) -> None:
    """Issue 8 end to end on a real bucket: two sets on production, one updated without
    touching the other, one removed, a revocation re-encrypting every entry, and a rollback
    restoring the whole list; the real client serves what each step says."""
    owner = client_as("owner")
    keep, gone = generate_token(owner, world, "keep"), generate_token(owner, world, "gone")
    add_prompts(app, world, SAMPLE_PROMPTS)
    first = lock_version(app, world)
    checkout = add_locked_set(
        app, world, "Checkout helper", {"checkout.upsell": {"template": "Try {{ item }}."}}
    )
    publish(owner, world, first)
    publish(owner, checkout, "0.1.0")

    client = new_client(app, world, store_url, keep, tmp_path / "keep", clients)
    status = client.sync()
    assert sorted((r["name"], r["version"]) for r in status["releases"]) == [
        ("Checkout helper", "0.1.0"),
        ("Main", first),
    ]
    assert client.prompt("checkout.upsell", item="a bag") == "Try a bag."
    assert client.prompt("welcome.message", name="Ada", plan="pro").startswith("Welcome Ada!")

    # Publishing Main again keeps Checkout helper (the bug report).
    second = release_new_version(app, world, "Hi {{ name }}, v2")
    publish(owner, world, second)
    client.sync()
    assert client.prompt("welcome.message", name="Ada") == "Hi Ada, v2"
    assert client.prompt("checkout.upsell", item="a hat") == "Try a hat."

    # Remove Checkout helper: its prompts are gone, Main stays.
    response = owner.post(
        f"/projects/{world.project_id}/channels/production/remove",
        data={"set": str(checkout.set_id)},
    )
    assert response.status_code == 302
    status = client.sync()
    assert [r["name"] for r in status["releases"]] == ["Main"]
    assert client.prompt("checkout.upsell", fallback="none left", item="x") == "none left"
    assert client.prompt("welcome.message", name="Bo") == "Hi Bo, v2"

    # Revoke a token: every entry is re-encrypted for the one left.
    gone_id = WireToken.parse(gone).token_id
    keep_id = WireToken.parse(keep).token_id
    assert owner.post(f"/projects/{world.project_id}/tokens/{gone_id}/revoke").status_code == 302
    assert readers_of(app, store_url, world, "production") == {keep_id}

    # Roll back to sequence 2 (both sets at their first versions): the whole list returns,
    # re-encrypted for the current token.
    response = owner.post(
        f"/projects/{world.project_id}/channels/production/rollback", data={"sequence": "2"}
    )
    assert response.status_code == 302
    pointer = served_pointer(app, store_url, world, "production")
    assert sorted(r.describe() for r in pointer.releases) == [
        "Checkout helper 0.1.0",
        f"Main {first}",
    ]
    assert readers_of(app, store_url, world, "production") == {keep_id}
    status = client.sync()
    assert status["sequence"] == pointer.sequence == 6
    assert client.prompt("checkout.upsell", item="a cap") == "Try a cap."
    assert client.prompt("welcome.message", name="Ada", plan="pro").startswith("Welcome Ada!")


@pytest.fixture
def live_forge(app: Flask) -> Iterator[str]:
    with served(app) as url:
        yield url


@pytest.mark.parametrize("store_url", [""])
def test_clients_read_the_local_store_through_the_forge(
    app: Flask,
    world: World,
    client_as: Any,
    live_forge: str,
    tmp_path: Path,
    clients: list[AnvilClient],
) -> None:
    owner = client_as("owner")
    token = generate_token(owner, world, "http")
    add_prompts(app, world, SAMPLE_PROMPTS)
    first = lock_version(app, world)
    publish(owner, world, first)

    client = new_client(app, world, f"{live_forge}/store", token, tmp_path / "cache", clients)
    status = client.sync()
    assert (status["version"], status["sequence"]) == (first, 1)
    assert client.prompt("welcome.message", name="Bo", plan="free").startswith("Welcome Bo!")

    second = release_new_version(app, world, "Second {{ name }}")
    publish(owner, world, second)
    assert client.sync()["version"] == second
    assert client.prompt("welcome.message", name="Bo") == "Second Bo"

    # Conditional GET over HTTP: the pointer's ETag gives a 304 until the next publish.
    store = open_store(f"{live_forge}/store")
    try:
        key = f"projects/{world.project_id}/channels/production.json"
        got = store.get(key)
        assert got.etag and got.modified
        assert store.get(key, if_none_match=got.etag).modified is False
    finally:
        store.close()
