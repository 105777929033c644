"""The heartbeat API's service (forge_app.services.heartbeat_ingest) on SQLite and on
PostgreSQL, where the common heartbeat is one statement: every answer, the token's use, the
statements sent, no session cookie, and the idle-connection ping (forge_app.extensions)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select, text, update

from forge_app import extensions
from forge_app.extensions import db
from forge_app.metrics import HEARTBEATS
from forge_app.models import utcnow
from forge_app.models.distribution import AccessToken
from forge_app.models.instances import LiveInstance
from tests.forge_app.conftest import World
from tests.forge_app.test_heartbeat_api import INSTANCE, body, make_token, send, token_row


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "FORGE_HEARTBEAT_LIMIT": 3, "FORGE_HEARTBEAT_WINDOW": 60}


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    from forge_app.blueprints import api

    monkeypatch.setattr(api, "_clock", lambda: 60_000_010.0)


@pytest.fixture
def token(app: Flask, world: World) -> str:
    return make_token(app, world.project_id, world.users["owner"])


def counted(outcome: str) -> float:
    return float(HEARTBEATS.labels(outcome=outcome)._value.get())


def test_every_answer_on_this_backend(app: Flask, world: World, token: str) -> None:
    client = app.test_client()
    before = {name: counted(name) for name in ("accepted", "unauthorized", "forbidden")}
    assert send(client, token, body(world, sequence=1)).status_code == 204  # new: ORM path
    assert send(client, token, body(world, sequence=2)).status_code == 204  # known
    with app.app_context():
        row = db.session.scalar(select(LiveInstance))
        assert row is not None and row.sequence == 2
    wrong = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    refused = send(client, wrong, body(world))
    assert refused.status_code == 401
    assert refused.get_json() == {"error": "the ACCESS_TOKEN is missing or unknown"}
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="anvil"'
    other = make_token(app, world.other_project_id, world.users["outsider"], "other")
    assert send(client, other, body(world)).status_code == 403
    limited = send(client, token, body(world, sequence=3))
    assert limited.status_code == 204
    limited = send(client, token, body(world, sequence=4))  # a 4th in the window: limit 3
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "50"
    assert limited.headers["Cache-Control"] == "no-store"
    with app.app_context():
        row = db.session.scalar(select(LiveInstance))
        assert row is not None and row.sequence == 3  # the refused one changed nothing
    assert counted("accepted") - before["accepted"] == 3
    assert counted("unauthorized") - before["unauthorized"] == 1
    assert counted("forbidden") - before["forbidden"] == 1


def test_a_revoked_token_is_refused_and_marks_its_instance(
    app: Flask, world: World, token: str
) -> None:
    client = app.test_client()
    assert send(client, token, body(world, sequence=1)).status_code == 204
    with app.app_context():
        db.session.execute(update(AccessToken).values(revoked_at=utcnow()))
        db.session.commit()
    refused = send(client, token, body(world, sequence=2, last_error="boom"))
    assert refused.status_code == 401
    assert refused.get_json() == {"error": "the ACCESS_TOKEN was revoked"}
    with app.app_context():
        row = db.session.scalar(select(LiveInstance))
        assert row is not None
        assert row.token_rejected_at is not None
        assert (row.sequence, row.last_error) == (2, "boom")


def test_the_token_use_is_written_at_most_once_a_minute(
    app: Flask, world: World, token: str
) -> None:
    client = app.test_client()
    assert send(client, token, body(world, sequence=1)).status_code == 204
    first = token_row(app, token).last_used_at
    assert first is not None
    assert send(client, token, body(world, sequence=2)).status_code == 204
    assert token_row(app, token).last_used_at == first
    backdated = utcnow() - timedelta(minutes=2)
    with app.app_context():
        db.session.execute(update(AccessToken).values(last_used_at=backdated))
        db.session.commit()
    assert send(client, token, body(world, sequence=3)).status_code == 204
    used = token_row(app, token).last_used_at
    assert used is not None and used >= first > backdated


@pytest.fixture
def statements(app: Flask) -> Iterator[list[str]]:
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", note)
    yield sent
    event.remove(engine, "before_cursor_execute", note)


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_known_instance_costs_one_statement_on_postgresql(
    app: Flask, world: World, token: str, statements: list[str]
) -> None:
    client = app.test_client()
    assert send(client, token, body(world, sequence=1)).status_code == 204
    statements.clear()
    assert send(client, token, body(world, sequence=2)).status_code == 204
    assert len(statements) == 1
    assert statements[0].startswith("WITH tok AS")


def test_the_live_api_neither_reads_nor_sets_a_session_cookie(
    app: Flask, world: World, token: str
) -> None:
    client = app.test_client()
    client.set_cookie("forge_session", "not-even-signed")
    response = send(client, token, body(world))
    assert response.status_code == 204
    assert "Set-Cookie" not in response.headers
    page = client.get("/healthz")  # elsewhere the cookie is read (and dropped: invalid)
    assert page.status_code == 200


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_idle_pooled_connection_that_died_is_replaced(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        engine = db.engine
        with engine.connect() as other:
            with engine.connect() as connection:
                pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
            # Back in the pool, the first connection's server process goes away.
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monkeypatch.setattr(extensions, "PING_AFTER_IDLE_SECONDS", 0.0)
        for _ in range(2):  # whichever of the two pooled connections comes first
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 1")).scalar() == 1


def test_a_new_instance_of_another_token_takes_the_capped_path(
    app: Flask, world: World, token: str
) -> None:
    client = app.test_client()
    assert send(client, token, body(world)).status_code == 204
    second = make_token(app, world.project_id, world.users["owner"], "second")
    assert send(client, second, body(world, sequence=9)).status_code == 204
    with app.app_context():
        [row] = db.session.scalars(select(LiveInstance)).all()
        assert (row.instance_id, row.token_id, row.sequence) == (INSTANCE, second[6:18], 9)
