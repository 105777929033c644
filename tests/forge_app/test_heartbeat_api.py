"""``POST /api/v1/live/heartbeat`` (DESIGN §7): 204, 400, 401, 403, 429, the 16 KiB limit, the
per-token caps (issue 9, finding 7) and control/bidi characters (finding 10)."""

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
from forge_app.models import Project, User, utcnow
from forge_app.models.distribution import AccessToken
from forge_app.models.instances import LiveInstance
from forge_app.services.heartbeat_limits import SlidingWindowLimiter
from forge_app.services.tokens import create_token
from tests.forge_app.conftest import World

URL = "/api/v1/live/heartbeat"
INSTANCE = "0b9d7c3e-8f0a-4c7e-9a54-3f1e2d6b8a01"
SHA = "a" * 64
SET_ID = "5d0c1f6e-3b8a-4f5e-9c1d-2a3b4c5d6e7f"
OTHER_SET = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def served(version: str, sha: str = SHA, set_id: str = SET_ID) -> list[dict[str, str]]:
    return [{"prompt_set_id": set_id, "version": version, "content_sha256": sha}]


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "FORGE_HEARTBEAT_LIMIT": 3, "FORGE_HEARTBEAT_WINDOW": 60}


class Clock:
    """The limit windows' clock, pinned: 10 s into a 60-second window."""

    def __init__(self) -> None:
        self.now = 60_000_010.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from forge_app.blueprints import api

    pinned = Clock()
    monkeypatch.setattr(api, "_clock", pinned)
    return pinned


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
        "releases": [{"prompt_set_id": SET_ID, "version": "1.2.0", "content_sha256": SHA}],
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
    assert row.releases == served("1.2.0")
    assert row.last_error is None and row.client_version == "0.1.0"
    assert token_row(app, token).last_used_at is not None
    first_seen = row.first_seen_at

    update = body(
        world,
        sequence=4,
        releases=[*served("1.3.0", "b" * 64), *served("0.4.0", "c" * 64, OTHER_SET)],
        mode="frozen",
        last_error="store down",
    )
    assert send(client, token, update).status_code == 204
    [row] = instances(app)
    assert (row.sequence, row.version, row.mode, row.last_error) == (
        4,
        "1.3.0, 0.4.0",
        "frozen",
        "store down",
    )
    assert row.releases == [*served("1.3.0", "b" * 64), *served("0.4.0", "c" * 64, OTHER_SET)]
    assert row.first_seen_at == first_seen


def test_nulls_are_accepted_for_an_instance_that_serves_nothing(
    app: Flask, world: World, token: str
) -> None:
    payload = body(world, sequence=None, releases=[], last_error="no cache")
    assert send(app.test_client(), token, payload).status_code == 204
    [row] = instances(app)
    assert row.sequence is None and row.releases == [] and row.version is None
    assert row.last_error == "no cache"


def test_entries_are_stored_sorted_by_prompt_set(app: Flask, world: World, token: str) -> None:
    entries = [*served("0.4.0", "c" * 64, OTHER_SET), *served("1.2.0")]
    assert send(app.test_client(), token, body(world, releases=entries)).status_code == 204
    [row] = instances(app)
    assert [e["prompt_set_id"] for e in row.releases] == [SET_ID, OTHER_SET]


def test_the_real_client_body_is_accepted(app: Flask, world: World, token: str) -> None:
    from anvil_client._heartbeat import heartbeat_body

    data = heartbeat_body({**body(world), "last_error": "x" * 99_000})
    assert send(app.test_client(), token, data).status_code == 204
    [row] = instances(app)
    assert row.last_error is not None and 0 < len(row.last_error) <= 1000
    assert row.releases == served("1.2.0")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mode": "paused"}, "'mode'"),
        ({"sequence": "3"}, "'sequence'"),
        ({"sequence": True}, "'sequence'"),
        ({"sequence": 1.5}, "'sequence'"),
        ({"sequence": -1}, "'sequence'"),
        ({"channel": "Prod!"}, "'channel'"),
        ({"releases": served("1.2.0", "A" * 64)}, "'releases.content_sha256'"),
        ({"releases": served("not a version")}, "'releases.version'"),
        ({"releases": served("1.2.0") + served("1.3.0")}, "names prompt set"),
        ({"releases": [{**served("1.2.0")[0], "name": "x"}]}, "unknown field 'releases.name'"),
        ({"releases": None}, "'releases'"),
        ({"version": "1.2.0"}, "unknown field 'version'"),
        ({"content_sha256": SHA}, "unknown field 'content_sha256'"),
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


@pytest.mark.parametrize(
    "missing", ["instance_id", "last_error", "client_version", "sequence", "releases"]
)
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


def test_16_kib_is_the_limit(app: Flask, world: World, token: str) -> None:
    client = app.test_client()
    payload = body(world, last_error="")
    room = 16384 - len(json.dumps(payload).encode())
    assert room > 4096  # more than any last_error may hold: fill with entries instead
    entries = [
        {"prompt_set_id": f"set-{n:03d}", "version": "1.0.0", "content_sha256": SHA}
        for n in range(100)
    ]
    exactly = body(world, releases=entries, last_error="")
    padding = 16384 - len(json.dumps(exactly).encode())
    assert 0 <= padding <= 4096
    exactly["last_error"] = "e" * padding
    data = json.dumps(exactly).encode()
    assert len(data) == 16384
    assert send(client, token, data).status_code == 204
    too_big = json.dumps({**exactly, "last_error": "e" * (padding + 1)}).encode()
    response = send(client, token, too_big)
    assert response.status_code == 400
    assert response.get_json() == {"error": "the heartbeat body is larger than 16384 bytes"}
    [row] = instances(app)
    assert row.last_error == "e" * padding and len(row.releases) == 100


def test_more_than_100_entries_is_400(app: Flask, world: World, token: str) -> None:
    entries = [
        {"prompt_set_id": f"s{n}", "version": "1.0.0", "content_sha256": SHA} for n in range(101)
    ]
    response = send(app.test_client(), token, body(world, releases=entries))
    assert response.status_code == 400
    assert "'releases'" in response.get_json()["error"]


def test_a_body_without_content_length_is_capped_too(app: Flask, world: World, token: str) -> None:
    import io

    data = json.dumps(body(world, hostname="h" * 20_000)).encode()
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
    assert "larger than 16384" in response.get_json()["error"]


# --- finding 10: control and bidi characters cannot spoof the Instances page -----------------

# RIGHT-TO-LEFT OVERRIDE, NUL, ESC, RIGHT-TO-LEFT ISOLATE, ZERO WIDTH SPACE, LINE SEPARATOR
SPOOFS = ["web\u202e1", "web\u00001", "web\u001b[31m1", "web\u20671", "web\u200b1", "web\u20281"]


@pytest.mark.parametrize("text", SPOOFS)
@pytest.mark.parametrize(
    "where", ["hostname", "client_version", "releases.version", "releases.prompt_set_id"]
)
def test_control_and_bidi_characters_are_refused(
    app: Flask, world: World, token: str, text: str, where: str
) -> None:
    if where.startswith("releases."):
        entry = {**served("1.2.0")[0]}
        entry[where.split(".")[1]] = "1.2.0-" + text if where.endswith("version") else text
        payload = body(world, releases=[entry])
    else:
        payload = body(world, **{where: text})
    response = send(app.test_client(), token, payload)
    assert response.status_code == 400
    message = response.get_json()["error"]
    assert f"'{where}'" in message and "control or bidirectional character (U+" in message
    assert "\n" not in message and len(message) < 300
    assert instances(app) == []


def test_an_error_message_is_kept_but_made_harmless(app: Flask, world: World, token: str) -> None:
    error = "store\u202e down\nat line 3\u0000\u001b[31m red\u2067"
    assert send(app.test_client(), token, body(world, last_error=error)).status_code == 204
    [row] = instances(app)
    assert row.last_error == "store down at line 3 [31m red"


def test_the_instances_page_never_shows_a_bidi_override(
    app: Flask, world: World, token: str, client_as: Any
) -> None:
    send(app.test_client(), token, body(world, last_error="ok\u202eevil"))
    html = client_as("viewer").get(f"/projects/{world.project_id}/instances").get_data(True)
    assert INSTANCE in html and "okevil" in html
    assert "\u202e" not in html


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


def test_the_window_is_fixed_and_retry_after_says_when_it_ends(
    app: Flask, world: World, token: str, clock: Clock
) -> None:
    client = app.test_client()
    for _ in range(3):
        assert send(client, token, body(world)).status_code == 204
    response = send(client, token, body(world))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "50"  # 10 s into the 60-second window
    clock.now += 50
    assert send(client, token, body(world, sequence=4)).status_code == 204
    [row] = instances(app)
    assert row.sequence == 4


def test_the_limit_is_shared_by_every_forge_process(
    app_config: dict[str, Any], app: Flask, world: World, token: str
) -> None:
    """Two app objects on one database (two processes, two workers): one window."""
    other = create_app(app_config)
    try:
        first, second = app.test_client(), other.test_client()
        assert send(first, token, body(world)).status_code == 204
        assert send(second, token, body(world)).status_code == 204
        assert send(first, token, body(world)).status_code == 204
        assert send(second, token, body(world)).status_code == 429
        assert send(first, token, body(world)).status_code == 429
    finally:
        with other.app_context():
            db.engine.dispose()


def test_counters_of_past_windows_are_deleted(
    app: Flask, world: World, token: str, clock: Clock
) -> None:
    from forge_app.models.instances import HeartbeatCounter

    client = app.test_client()
    for n in range(3):
        assert send(client, token, body(world, instance_id=str(uuid.uuid4()))).status_code == 204
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(HeartbeatCounter)) == 4
    clock.now += 60
    assert send(client, token, body(world)).status_code == 204
    with app.app_context():
        keys = set(db.session.scalars(select(HeartbeatCounter.key)))
    assert keys == {f"t:{token[6:18]}", f"i:{token[6:18]}:{INSTANCE}"}


# --- finding 7: one token cannot flood the Instances list -------------------------------------


@pytest.fixture
def capped(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "FORGE_MAX_INSTANCES_PER_TOKEN": 3}


def test_one_token_reports_at_most_the_configured_number_of_instances(
    capped: dict[str, Any], world: World, token: str
) -> None:
    app = create_app(capped)
    try:
        client = app.test_client()
        mine = [str(uuid.uuid4()) for _ in range(3)]
        for instance_id in mine:
            assert send(client, token, body(world, instance_id=instance_id)).status_code == 204
        response = send(client, token, body(world, instance_id=str(uuid.uuid4())))
        assert response.status_code == 403
        message = response.get_json()["error"]
        assert message == (
            "this ACCESS_TOKEN already reports 3 instances, the most allowed "
            "(FORGE_MAX_INSTANCES_PER_TOKEN); an owner can forget silent ones"
        )
        # The ones it has keep reporting, and another token has a cap of its own.
        assert send(client, token, body(world, instance_id=mine[0], sequence=4)).status_code == 204
        second = make_token(app, world.project_id, world.users["owner"], "second")
        assert send(client, second, body(world, instance_id=str(uuid.uuid4()))).status_code == 204
        assert len(instances(app)) == 4
        # An archived instance does not count.
        with app.app_context():
            row = db.session.scalar(select(LiveInstance).where(LiveInstance.instance_id == mine[1]))
            assert row is not None
            row.archived_at = utcnow()
            db.session.commit()
        assert send(client, token, body(world, instance_id=str(uuid.uuid4()))).status_code == 204
    finally:
        with app.app_context():
            db.engine.dispose()


def test_one_token_sends_at_most_the_configured_heartbeats_in_all(
    capped: dict[str, Any], world: World, token: str
) -> None:
    """The per-instance limit alone never stops random instance ids (finding 7)."""
    app = create_app(
        {**capped, "FORGE_MAX_INSTANCES_PER_TOKEN": 100, "FORGE_HEARTBEAT_TOKEN_LIMIT": 5}
    )
    try:
        client = app.test_client()
        answers = [
            send(client, token, body(world, instance_id=str(uuid.uuid4()))).status_code
            for _ in range(7)
        ]
        assert answers == [204] * 5 + [429] * 2
        response = send(client, token, body(world, instance_id=str(uuid.uuid4())))
        assert "with this ACCESS_TOKEN" in response.get_json()["error"]
        assert response.headers["Retry-After"] == "50"
        assert len(instances(app)) == 5
        second = make_token(app, world.project_id, world.users["owner"], "second")
        assert send(client, second, body(world)).status_code == 204
    finally:
        with app.app_context():
            db.engine.dispose()


def test_a_flood_of_random_instance_ids_makes_a_bounded_list(
    app_config: dict[str, Any], world: World, token: str
) -> None:
    """The report's attack: many made-up instance ids with one token."""
    app = create_app(
        {
            **app_config,
            "FORGE_MAX_INSTANCES_PER_TOKEN": 20,
            "FORGE_HEARTBEAT_TOKEN_LIMIT": 1000,
        }
    )
    try:
        client = app.test_client()
        answers = [
            send(client, token, body(world, instance_id=str(uuid.uuid4()))).status_code
            for _ in range(60)
        ]
        assert answers.count(204) == 20 and answers.count(403) == 40
        assert len(instances(app)) == 20
    finally:
        with app.app_context():
            db.engine.dispose()


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
