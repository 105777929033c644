"""``POST /api/v1/live/heartbeat`` (DESIGN §7): 204, 400, 401, 403, 429 and the 4 KiB limit."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from forge_app import create_app
from forge_app.extensions import db
from forge_app.live_instances import SlidingWindowLimiter
from forge_app.models import Project, User, utcnow
from forge_app.models.distribution import AccessToken
from forge_app.models.instances import LiveInstance
from forge_app.services.tokens import create_token
from tests.forge_app.conftest import World

URL = "/api/v1/live/heartbeat"
INSTANCE = "0b9d7c3e-8f0a-4c7e-9a54-3f1e2d6b8a01"
SHA = "a" * 64


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "FORGE_HEARTBEAT_LIMIT": 3, "FORGE_HEARTBEAT_WINDOW": 60}


def make_token(app: Flask, project_id: uuid.UUID, owner_id: int, name: str = "svc") -> str:
    with app.app_context():
        project = db.session.get(Project, project_id)
        owner = db.session.get(User, owner_id)
        assert project is not None and owner is not None
        _, text = create_token(project, name, user=owner)
        db.session.commit()
        return text


@pytest.fixture
def token(app: Flask, world: World) -> str:
    return make_token(app, world.project_id, world.users["owner"])


def body(world: World, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "instance_id": INSTANCE,
        "hostname": "web-1.internal",
        "project_id": str(world.project_id),
        "channel": "production",
        "mode": "accepting",
        "sequence": 3,
        "version": "1.2.0",
        "content_sha256": SHA,
        "last_error": None,
        "client_version": "0.1.0",
    }
    data.update(changes)
    return data


def send(client: FlaskClient, token: str | None, payload: Any, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post(URL, data=data, headers=headers, content_type="application/json", **kwargs)


def instances(app: Flask) -> list[LiveInstance]:
    with app.app_context():
        return list(db.session.scalars(select(LiveInstance).order_by(LiveInstance.id)))


def token_row(app: Flask, text: str) -> AccessToken:
    with app.app_context():
        row = db.session.scalar(select(AccessToken).where(AccessToken.token_id == text[6:18]))
        assert row is not None
        return row


def test_recorded_and_updated(app: Flask, world: World, token: str) -> None:
    client = app.test_client()
    assert token_row(app, token).last_used_at is None
    response = send(client, token, body(world))
    assert response.status_code == 204
    assert response.data == b""
    [row] = instances(app)
    assert (row.project_id, row.instance_id, row.token_id) == (
        world.project_id,
        INSTANCE,
        token[6:18],
    )
    assert (row.hostname, row.channel, row.mode, row.sequence, row.version) == (
        "web-1.internal",
        "production",
        "accepting",
        3,
        "1.2.0",
    )
    assert row.content_sha256 == SHA and row.last_error is None and row.client_version == "0.1.0"
    assert token_row(app, token).last_used_at is not None
    first_seen = row.first_seen_at

    update = body(world, sequence=4, version="1.3.0", mode="frozen", last_error="store down")
    assert send(client, token, update).status_code == 204
    [row] = instances(app)
    assert (row.sequence, row.version, row.mode, row.last_error) == (
        4,
        "1.3.0",
        "frozen",
        "store down",
    )
    assert row.first_seen_at == first_seen


def test_nulls_are_accepted_for_an_instance_that_serves_nothing(
    app: Flask, world: World, token: str
) -> None:
    payload = body(world, sequence=None, version=None, content_sha256=None, last_error="no cache")
    assert send(app.test_client(), token, payload).status_code == 204
    [row] = instances(app)
    assert row.sequence is None and row.version is None and row.last_error == "no cache"


def test_the_real_client_body_is_accepted(app: Flask, world: World, token: str) -> None:
    from anvil_client._heartbeat import heartbeat_body

    data = heartbeat_body({**body(world), "last_error": "x" * 9000})
    assert send(app.test_client(), token, data).status_code == 204
    [row] = instances(app)
    assert row.last_error is not None and 0 < len(row.last_error) <= 1000


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mode": "paused"}, "'mode'"),
        ({"sequence": "3"}, "'sequence'"),
        ({"sequence": True}, "'sequence'"),
        ({"sequence": 1.5}, "'sequence'"),
        ({"sequence": -1}, "'sequence'"),
        ({"channel": "Prod!"}, "'channel'"),
        ({"content_sha256": "A" * 64}, "'content_sha256'"),
        ({"instance_id": "not-a-uuid"}, "'instance_id'"),
        ({"hostname": None}, "'hostname'"),
        ({"hostname": "evil\nhost"}, "'hostname'"),
        ({"project_id": "not-a-uuid"}, "'project_id'"),
        ({"extra": 1}, "unknown field 'extra'"),
    ],
)
def test_invalid_fields_are_400_with_one_sentence(
    app: Flask, world: World, token: str, change: dict[str, Any], expected: str
) -> None:
    response = send(app.test_client(), token, body(world, **change))
    assert response.status_code == 400
    message = response.get_json()["error"]
    assert expected in message
    assert "\n" not in message and len(message) < 300 and "Traceback" not in message
    assert instances(app) == []


@pytest.mark.parametrize("missing", ["instance_id", "last_error", "client_version", "sequence"])
def test_every_field_is_required(app: Flask, world: World, token: str, missing: str) -> None:
    payload = body(world)
    del payload[missing]
    response = send(app.test_client(), token, payload)
    assert response.status_code == 400
    assert response.get_json() == {"error": f"the heartbeat has no field {missing!r}"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "the heartbeat body is not valid JSON"),
        (b"[1, 2]", "the heartbeat body must be a JSON object"),
        (b"", "the heartbeat body is not valid JSON"),
    ],
)
def test_not_a_json_object_is_400(
    app: Flask, world: World, token: str, raw: bytes, expected: str
) -> None:
    response = send(app.test_client(), token, raw)
    assert response.status_code == 400
    assert response.get_json() == {"error": expected}


def test_4_kib_is_the_limit(app: Flask, world: World, token: str) -> None:
    client = app.test_client()
    payload = body(world, last_error="")
    room = 4096 - len(json.dumps(payload).encode())
    exactly = json.dumps(body(world, last_error="e" * room)).encode()
    assert len(exactly) == 4096
    assert send(client, token, exactly).status_code == 204
    too_big = json.dumps(body(world, last_error="e" * (room + 1))).encode()
    response = send(client, token, too_big)
    assert response.status_code == 400
    assert response.get_json() == {"error": "the heartbeat body is larger than 4096 bytes"}
    [row] = instances(app)
    assert row.last_error == "e" * room


def test_a_body_without_content_length_is_capped_too(app: Flask, world: World, token: str) -> None:
    import io

    data = json.dumps(body(world, last_error="e" * 5000)).encode()
    response = app.test_client().post(
        URL,
        input_stream=io.BytesIO(data),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        environ_overrides={"wsgi.input_terminated": True},  # the server de-chunked it
    )
    assert response.status_code == 400
    assert "larger than 4096" in response.get_json()["error"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer not-a-token",
        "Bearer anvil_abcdefghijkl_" + "A" * 43,
    ],
)
def test_missing_or_unknown_token_is_401(
    app: Flask, world: World, token: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = app.test_client().post(
        URL, data=json.dumps(body(world)), headers=headers, content_type="application/json"
    )
    assert response.status_code == 401
    assert response.get_json() == {"error": "the ACCESS_TOKEN is missing or unknown"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert instances(app) == []


def test_right_id_with_a_wrong_secret_is_401(app: Flask, world: World, token: str) -> None:
    forged = token[:18] + ("B" if token[18] != "B" else "C") + token[19:]
    response = send(app.test_client(), forged, body(world))
    assert response.status_code == 401
    assert instances(app) == []
    assert token_row(app, token).last_used_at is None


def revoke(app: Flask, text: str) -> None:
    with app.app_context():
        row = db.session.scalar(select(AccessToken).where(AccessToken.token_id == text[6:18]))
        assert row is not None
        row.revoked_at = utcnow()
        db.session.commit()


def test_revoked_token_is_401_but_its_instance_is_marked(
    app: Flask, world: World, token: str
) -> None:
    client = app.test_client()
    assert send(client, token, body(world)).status_code == 204
    revoke(app, token)
    error = "the bundle of sequence 4 cannot be decrypted with this ACCESS_TOKEN"
    response = send(client, token, body(world, last_error=error))
    assert response.status_code == 401
    assert response.get_json() == {"error": "the ACCESS_TOKEN was revoked"}
    [row] = instances(app)
    assert row.token_rejected_at is not None
    assert row.last_error == error
    assert row.sequence == 3  # still what it served


def test_revoked_token_is_401_even_when_malformed_or_too_frequent(
    app: Flask, world: World, token: str
) -> None:
    client = app.test_client()
    assert send(client, token, body(world)).status_code == 204
    revoke(app, token)
    answers = [send(client, token, body(world)).status_code for _ in range(5)]  # limit is 3
    answers.append(send(client, token, b"{not json").status_code)
    answers.append(
        send(client, token, body(world, project_id=str(world.other_project_id))).status_code
    )
    assert answers == [401] * 7


def test_revoked_token_creates_no_instance(app: Flask, world: World, token: str) -> None:
    revoke(app, token)
    response = send(app.test_client(), token, body(world))
    assert response.status_code == 401
    assert instances(app) == []


def test_an_accepted_heartbeat_clears_the_revoked_mark(
    app: Flask, world: World, token: str
) -> None:
    client = app.test_client()
    assert send(client, token, body(world)).status_code == 204
    revoke(app, token)
    assert send(client, token, body(world)).status_code == 401
    fresh = make_token(app, world.project_id, world.users["owner"], "replacement")
    assert send(client, fresh, body(world)).status_code == 204
    [row] = instances(app)
    assert row.token_rejected_at is None and row.token_id == fresh[6:18]


def test_token_of_another_project_is_403(app: Flask, world: World, token: str) -> None:
    response = send(app.test_client(), token, body(world, project_id=str(world.other_project_id)))
    assert response.status_code == 403
    assert response.get_json() == {"error": "this ACCESS_TOKEN belongs to another project"}
    assert instances(app) == []


def test_too_many_per_token_and_instance_is_429(app: Flask, world: World, token: str) -> None:
    client = app.test_client()
    for _ in range(3):  # FORGE_HEARTBEAT_LIMIT of this module
        assert send(client, token, body(world)).status_code == 204
    response = send(client, token, body(world, sequence=9))
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "too many heartbeats" in response.get_json()["error"]
    [row] = instances(app)
    assert row.sequence == 3  # the refused one changed nothing
    # Another instance with the same token, or the same instance id under another token,
    # has a window of its own.
    other = body(world, instance_id=str(uuid.uuid4()))
    assert send(client, token, other).status_code == 204
    second = make_token(app, world.project_id, world.users["owner"], "second")
    assert send(client, second, body(world, sequence=5)).status_code == 204


def test_the_api_needs_no_cookie_and_no_csrf_token(
    app_config: dict[str, Any], world: World, token: str
) -> None:
    strict = create_app({**app_config, "WTF_CSRF_ENABLED": True, "TESTING": False})
    try:
        response = send(strict.test_client(), token, body(world))
        assert response.status_code == 204
    finally:
        with strict.app_context():
            db.engine.dispose()


def test_get_is_not_allowed(app: Flask, world: World) -> None:
    response = app.test_client().get(URL)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_instance_ids_are_unique_per_project(app: Flask, world: World, token: str) -> None:
    client = app.test_client()
    for _ in range(2):
        assert send(client, token, body(world)).status_code == 204
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(LiveInstance))
    assert count == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_window_slides() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, 60, clock=clock)
    assert limiter.hit("k") == 0 and limiter.hit("k") == 0
    wait = limiter.hit("k")
    assert wait == pytest.approx(60)
    clock.now += 30
    assert limiter.hit("k") == pytest.approx(30)
    assert limiter.hit("other") == 0
    clock.now += 30.5  # the first two are out of the window now
    assert limiter.hit("k") == 0


def test_the_limiter_forgets_the_least_recently_used_keys() -> None:
    limiter = SlidingWindowLimiter(1, 60, max_keys=2, clock=FakeClock())
    assert limiter.hit("a") == 0
    assert limiter.hit("b") == 0
    assert limiter.hit("a") > 0  # refused, and now the most recently used
    assert limiter.hit("c") == 0  # evicts "b", the least recently used
    assert limiter.hit("a") > 0  # still remembered
    assert limiter.hit("b") == 0  # forgotten: a fresh window


def set_last_used(app: Flask, text: str, moment: Any) -> None:
    with app.app_context():
        row = db.session.scalar(select(AccessToken).where(AccessToken.token_id == text[6:18]))
        assert row is not None
        row.last_used_at = moment
        db.session.commit()


def test_last_used_is_written_at_most_once_a_minute(app: Flask, world: World, token: str) -> None:
    client = app.test_client()
    recent = utcnow() - timedelta(seconds=10)
    set_last_used(app, token, recent)
    assert send(client, token, body(world)).status_code == 204
    assert token_row(app, token).last_used_at == recent
    old = utcnow() - timedelta(minutes=5)
    set_last_used(app, token, old)
    before = utcnow()
    assert send(client, token, body(world, sequence=4)).status_code == 204
    used = token_row(app, token).last_used_at
    assert used is not None and used >= before
