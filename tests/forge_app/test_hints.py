"""The hint stream (issue 14 §3): ``GET /api/v1/live/hints`` as Server-Sent Events.

Shown in one process (the multi-worker test shows it across gunicorn workers): the token is
checked (401/403), a stream starts with the channel's newest sequence, a new publication wakes
it with ``event: hint`` and nothing but the channel and the sequence, idle streams get
keep-alive comments, a revoked token ends the stream, and a server that cannot hold streams
says so (503) rather than taking a whole worker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from forge_app.extensions import db
from forge_app.hints import HintHub
from forge_app.models.distribution import AccessToken, Channel, Publication
from tests.forge_app.conftest import World
from tests.forge_app.test_heartbeat_api import make_token

URL = "/api/v1/live/hints"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **app_config,
        "FORGE_HINT_KEEPALIVE_SECONDS": 0.05,
        "FORGE_HINT_POLL_SECONDS": 0.05,
    }


@pytest.fixture(autouse=True)
def stop_watcher(app: Flask) -> Iterator[None]:
    """The watcher thread ends before the app's database goes."""
    yield
    app.extensions["forge_hints"].stop()


@pytest.fixture
def token(app: Flask, world: World) -> str:
    return make_token(app, world.project_id, world.users["owner"])


def publish(app: Flask, project_id: uuid.UUID, channel: str, sequence: int) -> None:
    """A publications row, as every pointer change of the FORGE writes one."""
    with app.app_context():
        row = db.session.scalar(
            select(Channel).where(Channel.project_id == project_id, Channel.name == channel)
        )
        if row is None:
            row = Channel(project_id=project_id, name=channel)
            db.session.add(row)
            db.session.flush()
        db.session.add(
            Publication(
                project_id=project_id,
                channel_id=row.id,
                sequence=sequence,
                kind="publish",
                releases_json="[]",
            )
        )
        db.session.commit()


def open_stream(
    app: Flask, token: str | None, project_id: Any, channel: str = "production", **environ: Any
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    query = {"project_id": str(project_id), "channel": channel}
    return app.test_client().get(
        URL, query_string=query, headers=headers, buffered=False, environ_overrides=environ
    )


def events(response: Any) -> Iterator[str]:
    for chunk in response.response:
        yield chunk.decode() if isinstance(chunk, bytes) else chunk


def next_hint(stream: Iterator[str], limit: int = 400) -> dict[str, Any]:
    """The next hint event (keep-alive comments skipped; ``limit`` chunks at most)."""
    for _ in range(limit):
        chunk = next(stream)
        if chunk.startswith("event: hint\n"):
            data = chunk.split("data: ", 1)[1].strip()
            found: dict[str, Any] = json.loads(data)
            return found
    raise AssertionError("no hint arrived")


def test_a_stream_starts_with_the_newest_sequence_and_is_woken_by_a_publication(
    app: Flask, world: World, token: str
) -> None:
    publish(app, world.project_id, "production", 4)
    response = open_stream(app, token, world.project_id)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    stream = events(response)
    assert next(stream).startswith(": anvil hints\nretry: ")
    assert next_hint(stream) == {"channel": "production", "sequence": 4}
    publish(app, world.project_id, "staging", 9)  # another channel: no hint for this stream
    publish(app, world.project_id, "production", 5)
    assert app.extensions["forge_hints"].check() >= 0  # the watcher may have seen it first
    assert next_hint(stream) == {"channel": "production", "sequence": 5}
    response.close()
    assert app.extensions["forge_hints"].count == 0


def test_a_hint_carries_the_channel_and_the_sequence_only(
    app: Flask, world: World, token: str
) -> None:
    publish(app, world.project_id, "production", 1)
    response = open_stream(app, token, world.project_id)
    stream = events(response)
    next(stream)
    chunk = next(stream)
    assert chunk == 'event: hint\ndata: {"channel": "production", "sequence": 1}\n\n'
    response.close()


def test_idle_streams_get_keep_alive_comments(app: Flask, world: World, token: str) -> None:
    response = open_stream(app, token, world.project_id)  # no publication yet: no first hint
    stream = events(response)
    next(stream)
    assert next(stream) == ": keep-alive\n\n"
    response.close()


def test_the_watcher_wakes_every_stream_of_the_channel(app: Flask, world: World) -> None:
    hub = HintHub(app)
    publish(app, world.project_id, "production", 1)
    key = (str(world.project_id), "production")
    first, second = hub.open(key, 10), hub.open(key, 10)
    other = hub.open((str(world.project_id), "staging"), 10)
    assert first is not None and second is not None and other is not None
    hub.check()  # learns where the table stands (and offers sequence 1)
    publish(app, world.project_id, "production", 2)
    assert hub.check() == 2
    assert (first.wait(0), second.wait(0), other.wait(0)) == (2, 2, None)
    assert hub.check() == 0  # nothing new
    assert hub.open(key, 3) is None  # full: three streams already
    for stream in (first, second, other):
        hub.close(stream)
    assert hub.count == 0
    hub.stop()


def test_the_token_is_checked(app: Flask, world: World, token: str) -> None:
    assert open_stream(app, None, world.project_id).status_code == 401
    assert open_stream(app, "anvil_nope", world.project_id).status_code == 401
    other = open_stream(app, token, world.other_project_id)
    assert other.status_code == 403
    assert other.get_json() == {"error": "this ACCESS_TOKEN belongs to another project"}
    bad = open_stream(app, token, world.project_id, channel="Not A Channel")
    assert bad.status_code == 400
    assert "channel" in bad.get_json()["error"]
    assert open_stream(app, token, "not-a-uuid").status_code == 400


def test_a_revoked_token_is_refused_and_ends_an_open_stream(
    app: Flask, world: World, token: str
) -> None:
    app.config["FORGE_HINT_RECHECK_SECONDS"] = 0.05
    response = open_stream(app, token, world.project_id)
    stream = events(response)
    next(stream)
    with app.app_context():
        row = db.session.scalar(select(AccessToken).where(AccessToken.token_id == token[6:18]))
        assert row is not None
        from forge_app.models import utcnow

        row.revoked_at = utcnow()
        db.session.commit()
    assert list(stream)[-1:] in ([": keep-alive\n\n"], [])  # then it ends
    refused = open_stream(app, token, world.project_id)
    assert refused.status_code == 401
    assert refused.get_json() == {"error": "the ACCESS_TOKEN was revoked"}


def test_a_worker_that_cannot_hold_streams_answers_503(
    app: Flask, world: World, token: str
) -> None:
    response = open_stream(app, token, world.project_id, SERVER_SOFTWARE="gunicorn/23.0.0")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "poll" in response.get_json()["error"]


def test_a_pointer_written_without_the_forge_wakes_streams(
    app: Flask, world: World, token: str
) -> None:
    """anvil-publish in CI writes no publications row: the watcher reads the store pointer
    (conditional GET by ETag) of each channel that has a stream."""
    import base64

    from anvil_client.wire import pointer_key
    from forge_app.services.publishing import forge_store

    hub = HintHub(app)
    key = (str(world.project_id), "production")
    stream = hub.open(key, 10)
    assert stream is not None

    def write_pointer(sequence: int) -> None:
        payload = base64.b64encode(json.dumps({"sequence": sequence}).encode()).decode()
        envelope = json.dumps({"payload": payload, "payloadType": "x", "signatures": []})
        with app.app_context():
            forge_store().put(pointer_key(*key), envelope.encode())

    assert hub.check_store() == 0  # no pointer yet
    write_pointer(11)
    assert hub.check_store() == 1
    assert stream.wait(0) == 11
    assert hub.check_store() == 0  # unchanged: a 304, no hint
    write_pointer(12)
    assert hub.check_store() == 1
    assert stream.wait(0) == 12
    hub.close(stream)
    hub.stop()
