"""Recording heartbeats in the database, on SQLite and PostgreSQL: upsert, the race of two
first heartbeats, and rejected (revoked-token) heartbeats."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from forge_app import live_instances
from forge_app.extensions import db
from forge_app.live_instances import (
    HeartbeatBody,
    HeartbeatError,
    ReleaseTarget,
    parse_heartbeat,
    record_heartbeat,
    record_rejected_heartbeat,
)
from forge_app.models import Project, User, utcnow
from forge_app.models.instances import LiveInstance
from forge_app.services.tokens import create_token
from tests.forge_app.conftest import World


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def heartbeat(world: World, instance_id: str, **changes: Any) -> HeartbeatBody:
    data = {
        "instance_id": instance_id,
        "hostname": "web-1",
        "project_id": str(world.project_id),
        "channel": "production",
        "mode": "accepting",
        "sequence": 1,
        "version": "1.0.0",
        "content_sha256": "e" * 64,
        "last_error": None,
        "client_version": "0.1.0",
        **changes,
    }
    return parse_heartbeat(json.dumps(data).encode())


def test_the_api_records_on_this_backend(app: Flask, world: World) -> None:
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        _, token = create_token(project, "svc", user=owner)
        db.session.commit()
    instance = str(uuid.uuid4())
    body = heartbeat(world, instance).model_dump()
    client = app.test_client()
    for sequence in (1, 2):
        response = client.post(
            "/api/v1/live/heartbeat",
            data=json.dumps({**body, "sequence": sequence}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 204
    with app.app_context():
        rows = list(db.session.scalars(select(LiveInstance)))
    assert [(r.instance_id, r.sequence) for r in rows] == [(instance, 2)]


def test_two_first_heartbeats_racing_end_in_one_row(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = str(uuid.uuid4())
    with app.app_context():
        record_heartbeat(
            db.session,
            project_id=world.project_id,
            token_id="a" * 12,
            body=heartbeat(world, instance, sequence=1),
        )
        db.session.commit()
    real_find = live_instances._find
    calls = []

    def stale_find(*args: Any) -> LiveInstance | None:
        calls.append(args)
        # The first look happens "before the other request committed its row".
        return None if len(calls) == 1 else real_find(*args)

    monkeypatch.setattr(live_instances, "_find", stale_find)
    with app.app_context():
        row = record_heartbeat(
            db.session,
            project_id=world.project_id,
            token_id="b" * 12,
            body=heartbeat(world, instance, sequence=7),
        )
        db.session.commit()
        assert row.sequence == 7
        rows = list(db.session.scalars(select(LiveInstance)))
    assert len(calls) == 2
    assert [(r.sequence, r.token_id) for r in rows] == [(7, "b" * 12)]


def test_a_rejected_heartbeat_only_updates_the_instance_of_that_token(
    app: Flask, world: World
) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    with app.app_context():
        record_heartbeat(
            db.session,
            project_id=world.project_id,
            token_id="t" * 12,
            body=heartbeat(world, mine),
        )
        db.session.commit()
        error = "the bundle cannot be decrypted with this ACCESS_TOKEN"
        updated = record_rejected_heartbeat(
            db.session,
            project_id=world.project_id,
            token_id="t" * 12,
            body=heartbeat(world, mine, last_error=error),
        )
        assert updated is not None and updated.token_rejected_at is not None
        assert updated.last_error == error
        # Another token cannot touch it, and no row is created for an unknown instance.
        assert (
            record_rejected_heartbeat(
                db.session,
                project_id=world.project_id,
                token_id="u" * 12,
                body=heartbeat(world, mine, last_error="spoofed"),
            )
            is None
        )
        assert (
            record_rejected_heartbeat(
                db.session,
                project_id=world.project_id,
                token_id="t" * 12,
                body=heartbeat(world, other),
            )
            is None
        )
        db.session.commit()
        rows = list(db.session.scalars(select(LiveInstance)))
    assert [(r.instance_id, r.last_error) for r in rows] == [(mine, error)]


def test_parse_rejects_more_than_4_kib_before_parsing() -> None:
    with pytest.raises(HeartbeatError, match="larger than 4096 bytes"):
        parse_heartbeat(b" " * 4097)


def test_release_target_without_previous_knows_nothing_for_the_other_bucket() -> None:
    target = ReleaseTarget("production", 5, "2.0.0", "f" * 64, rollout_percent=0)
    assert target.expected_for(str(uuid.uuid4())) == (None, None)
    full = ReleaseTarget("production", 5, "2.0.0", "f" * 64, rollout_percent=100)
    assert full.expected_for(str(uuid.uuid4())) == ("2.0.0", "f" * 64)


def test_utcnow_is_used_for_last_seen(app: Flask, world: World) -> None:
    before = utcnow()
    with app.app_context():
        row = record_heartbeat(
            db.session,
            project_id=world.project_id,
            token_id="t" * 12,
            body=heartbeat(world, str(uuid.uuid4())),
        )
        db.session.commit()
        assert row.last_seen_at >= before and row.first_seen_at == row.last_seen_at
