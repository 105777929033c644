"""The FORGE serves its local store read-only at /store/ (ETag, 304, Cache-Control of DESIGN §2,
no path traversal, no sign-in) and its public signing key at /.well-known/anvil-keys.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from anvil_client.stores import FileStore
from anvil_client.wire import TrustedKey, key_id, load_private_key_file, public_key_text
from forge_app.extensions import db
from forge_app.services import publishing

POINTER = "projects/p1/channels/production.json"
HISTORY = "projects/p1/channels/production/history/000000000001.json"
BUNDLE = "projects/p1/bundles/" + "ab" * 32 + ".jwe"


@pytest.fixture
def store(app: Flask) -> FileStore:
    with app.app_context():
        root = publishing.store_root()
    assert root is not None
    files = FileStore(root)
    files.put(POINTER, b'{"pointer": 1}')
    files.put(HISTORY, b'{"history": 1}')
    files.put(BUNDLE, b'{"bundle": 1}')
    return files


def test_objects_are_served_with_etag_and_the_design_cache_control(
    app: Flask, store: FileStore
) -> None:
    client = app.test_client()  # anonymous: clients never sign in
    for key, cache_control, body in (
        (POINTER, "no-cache", b'{"pointer": 1}'),
        (HISTORY, "no-cache", b'{"history": 1}'),
        (BUNDLE, "public, max-age=31536000, immutable", b'{"bundle": 1}'),
    ):
        response = client.get(f"/store/{key}")
        assert response.status_code == 200, key
        assert response.data == body
        assert response.mimetype == "application/json"
        assert response.headers["Cache-Control"] == cache_control
        assert response.headers["ETag"] == store.get(key).etag
        assert "Set-Cookie" not in response.headers


def test_conditional_get_answers_304_until_the_object_changes(app: Flask, store: FileStore) -> None:
    client = app.test_client()
    etag = client.get(f"/store/{POINTER}").headers["ETag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}'):
        response = client.get(f"/store/{POINTER}", headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.data == b""
        assert response.headers["ETag"] == etag
        assert response.headers["Cache-Control"] == "no-cache"
    assert client.get(f"/store/{POINTER}", headers={"If-None-Match": '"stale"'}).status_code == 200
    store.put(POINTER, b'{"pointer": 2}')
    response = client.get(f"/store/{POINTER}", headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert response.data == b'{"pointer": 2}'
    assert response.headers["ETag"] != etag


def test_head_and_missing_objects(app: Flask, store: FileStore) -> None:
    client = app.test_client()
    head = client.head(f"/store/{BUNDLE}")
    assert head.status_code == 200 and head.headers["ETag"] == store.get(BUNDLE).etag
    assert client.get("/store/projects/p1/channels/staging.json").status_code == 404
    assert client.get("/store/").status_code == 404, "no directory listings"
    assert client.get("/store/projects/p1").status_code == 404
    assert client.post(f"/store/{POINTER}").status_code == 405
    assert client.put(f"/store/{POINTER}", data=b"x").status_code == 405


def test_nothing_outside_the_store_can_be_read(app: Flask, store: FileStore) -> None:
    instance = Path(app.instance_path)
    secrets = [p for p in instance.iterdir() if p.is_file()]
    assert {p.name for p in secrets} >= {"signing-key.pem"}
    (instance / "outside.json").write_text('{"secret": true}')
    os.symlink(instance / "outside.json", store.root / "projects" / "p1" / "link.json")
    os.symlink(instance, store.root / "projects" / "p1" / "up")
    client = app.test_client()
    for path in (
        "/store/../signing-key.pem",
        "/store/%2e%2e/signing-key.pem",
        "/store/..%2fsigning-key.pem",
        "/store/projects/../../signing-key.pem",
        "/store/projects/p1/../../../outside.json",
        "/store//etc/passwd",
        "/store/.anvil-store.lock",
        "/store/projects/.hidden.json",
        "/store/projects/p1/link.json",
        "/store/projects/p1/up/outside.json",
        "/store/projects/p1/up/signing-key.pem",
        "/store/projects/p1/channels/production.json%00.pem",
    ):
        response = client.get(path, follow_redirects=True)  # "//" is merged by a redirect
        assert response.status_code in (400, 404), path
        assert b"secret" not in response.data and b"PRIVATE KEY" not in response.data, path


def test_a_store_that_is_not_local_is_not_served(app_config: dict[str, Any]) -> None:
    from forge_app import create_app

    app = create_app({**app_config, "FORGE_STORE_URL": "s3://bucket/prefix"})
    try:
        response = app.test_client().get(f"/store/{POINTER}")
        assert response.status_code == 404
    finally:
        with app.app_context():
            db.engine.dispose()


def test_well_known_keys_publish_the_signing_key(app: Flask) -> None:
    response = app.test_client().get("/.well-known/anvil-keys.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    keys = response.get_json()
    key = load_private_key_file(Path(app.instance_path) / "signing-key.pem").public_key()
    assert keys == [{"keyid": key_id(key), "public_key": public_key_text(key)}]
    assert TrustedKey.parse(keys[0]["public_key"]).keyid == keys[0]["keyid"]


def test_signing_key_from_pem_text(app_config: dict[str, Any], tmp_path: Path) -> None:
    """Production passes the PEM itself (FORGE_SIGNING_KEY) instead of a file path."""
    from anvil_client.wire import generate_private_key, private_key_pem
    from forge_app import create_app

    key = generate_private_key()
    app = create_app(
        {
            **app_config,
            "FORGE_SIGNING_KEY": private_key_pem(key).decode(),
            "FORGE_INSTANCE_PATH": str(tmp_path / "other-instance"),
        }
    )
    try:
        keys = app.test_client().get("/.well-known/anvil-keys.json").get_json()
        assert keys[0]["public_key"] == public_key_text(key.public_key())
        assert not (tmp_path / "other-instance" / "signing-key.pem").exists()
    finally:
        with app.app_context():
            db.engine.dispose()


def test_generated_development_key_is_private(app: Flask) -> None:
    app.test_client().get("/.well-known/anvil-keys.json")
    mode = (Path(app.instance_path) / "signing-key.pem").stat().st_mode & 0o777
    assert mode == 0o600


def test_a_two_set_channel_is_read_through_the_store_route_like_a_client(
    app: Flask, world: Any
) -> None:
    """What the FORGE publishes (pointer v2, one entry per set) verifies with the key from
    /.well-known/anvil-keys.json, and each entry's object is served with its signed hash."""
    import dataclasses

    from anvil_client.wire import ObjectRef, check_object, verify_pointer
    from forge_app.models import Project, PromptSet, PromptSetVersion, User
    from forge_app.services.tokens import create_token
    from tests.forge_app.conftest import SAMPLE_PROMPTS, add_prompts, lock_version

    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    with app.app_context():
        other = PromptSet(project_id=world.project_id, name="Other", description="", status="LIVE")
        db.session.add(other)
        db.session.commit()
        other_world = dataclasses.replace(world, set_id=other.id)
    add_prompts(app, other_world, {"other.hello": {"template": "Hello", "metadata": {}}})
    lock_version(app, other_world)
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        create_token(project, "svc", user=owner)
        publishing.ensure_default_channels(project)
        channel = publishing.get_channel(project, "production")
        assert channel is not None
        for version in db.session.scalars(select(PromptSetVersion)):
            publishing.publish_version(version, channel, user=owner)
        db.session.commit()
    client = app.test_client()
    [key] = client.get("/.well-known/anvil-keys.json").get_json()
    pid = str(world.project_id)
    envelope = client.get(f"/store/projects/{pid}/channels/production.json").data
    pointer = verify_pointer(
        envelope, [TrustedKey.parse(key["public_key"])], project_id=pid, channel="production"
    )
    assert sorted(r.name for r in pointer.releases) == ["Main", "Other"]
    for release in pointer.releases:
        assert isinstance(release.object, ObjectRef)
        check_object(release, client.get(f"/store/{release.object.path}").data)
