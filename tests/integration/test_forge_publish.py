"""The FORGE publishes to real stores and the real LIVE client reads what it wrote.

1. FORGE_STORE_URL on a real SeaweedFS bucket: publish, revoke, rollback through the FORGE's
   pages; ``AnvilClient.sync()`` verifies, decrypts and serves each release — and a revoked
   token's client keeps its last prompts and reports the decryption error.
2. The default local store, served by the FORGE at ``/store/`` over real HTTP: clients use
   ``http://<forge>/store`` as their store URL (ETag/304 included).
"""

# ruff: noqa: F811 - the FORGE fixtures are imported from tests/forge_app/conftest.py and
# requested by name, which ruff reads as redefinitions.
from __future__ import annotations

import re
import shutil
import threading
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


def release_new_version(app: Flask, world: World, text: str) -> str:
    from forge_app.models import PromptSet, Role, User
    from forge_app.workflow import unlock

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
    with pytest.raises(DecryptionError):
        loser.sync()

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


@pytest.fixture
def live_forge(app: Flask) -> Iterator[str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


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
