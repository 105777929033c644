"""Recording heartbeats in the database, on SQLite and PostgreSQL: upsert, the race of two
first heartbeats, rejected (revoked-token) heartbeats, the shared limit counters, archiving;
and the rule that judges an instance's whole entry list (``select_releases``'s)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from anvil_client.wire import Pointer, select_releases
from forge_app.extensions import db
from forge_app.models import AuditEvent, Project, User, utcnow
from forge_app.models.instances import LiveInstance
from forge_app.services import heartbeats
from forge_app.services.heartbeat_limits import HeartbeatLimits, TooManyHeartbeats, count_heartbeat
from forge_app.services.heartbeats import (
    HeartbeatBody,
    HeartbeatError,
    parse_heartbeat,
    record_heartbeat,
    record_rejected_heartbeat,
)
from forge_app.services.instance_archive import archive_silent_instances
from forge_app.services.instances import ChannelTarget, Entry, describe_instances
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
        "releases": [{"prompt_set_id": "set-a", "version": "1.0.0", "content_sha256": "e" * 64}],
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
    real_find = heartbeats._find
    calls = []

    def stale_find(*args: Any) -> LiveInstance | None:
        calls.append(args)
        # The first look happens "before the other request committed its row".
        return None if len(calls) == 1 else real_find(*args)

    monkeypatch.setattr(heartbeats, "_find", stale_find)
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


def test_parse_rejects_more_than_16_kib_before_parsing() -> None:
    with pytest.raises(HeartbeatError, match="larger than 16384 bytes"):
        parse_heartbeat(b" " * 16385)


def test_a_target_without_previous_knows_nothing_for_the_other_bucket() -> None:
    entry = {"prompt_set_id": "set-a", "version": "2.0.0", "content_sha256": "f" * 64}
    target = ChannelTarget.from_records("production", 5, [entry], rollout_percent=0)
    assert target.expected_for(str(uuid.uuid4())) is None
    full = ChannelTarget.from_records("production", 5, [entry], rollout_percent=100)
    assert full.expected_for(str(uuid.uuid4())) == (Entry("set-a", "2.0.0", "f" * 64),)


def _entry(set_id: str, version: str, sha: str) -> dict[str, Any]:
    return {
        "prompt_set_id": set_id,
        "name": set_id.upper(),
        "version": version,
        "content_sha256": sha,
        "object": {
            "path": f"projects/p/bundles/{sha}.jwe",
            "sha256": sha,
            "size": 1,
            "encoding": "jwe",
        },
    }


def _pointer(percent: int | None) -> Pointer:
    new = [_entry("set-a", "2.0.0", "1" * 64), _entry("set-b", "1.0.0", "4" * 64)]
    old = [_entry("set-a", "1.0.0", "2" * 64), _entry("set-b", "1.0.0", "4" * 64)]
    body = {
        "type": "anvil.pointer/v2",
        "project_id": "p",
        "channel": "production",
        "sequence": 3,
        "published_at": "2026-01-15T10:30:00Z",
        "releases": new,
        "rollout": None if percent is None else {"percent": percent, "previous": old},
    }
    return Pointer.parse(json.dumps(body).encode())


@pytest.mark.parametrize("percent", [None, 0, 30, 70, 100])
def test_the_expected_list_is_the_one_select_releases_gives(percent: int | None) -> None:
    pointer = _pointer(percent)
    target = ChannelTarget.from_pointer(pointer)
    for _ in range(200):
        instance_id = str(uuid.uuid4())
        chosen = select_releases(pointer, instance_id)
        expected = target.expected_for(instance_id)
        assert expected is not None
        assert [(e.prompt_set_id, e.version, e.content_sha256, e.name) for e in expected] == [
            (r.prompt_set_id, r.version, r.content_sha256, r.name) for r in chosen
        ]


def _row(instance_id: str, entries: list[tuple[str, str, str]], sequence: int = 3) -> LiveInstance:
    row = LiveInstance(
        instance_id=instance_id,
        channel="production",
        sequence=sequence,
        token_id="t" * 12,
        last_seen_at=utcnow(),
    )
    row.releases = [{"prompt_set_id": p, "version": v, "content_sha256": c} for p, v, c in entries]
    return row


def test_drift_compares_the_whole_list() -> None:
    target = ChannelTarget.from_pointer(_pointer(None))
    both = [("set-a", "2.0.0", "1" * 64), ("set-b", "1.0.0", "4" * 64)]
    rows = [
        _row(str(uuid.uuid4()), both),
        _row(str(uuid.uuid4()), list(reversed(both))),  # the order does not matter
        _row(str(uuid.uuid4()), both[:1]),  # a set missing
        _row(str(uuid.uuid4()), [*both, ("set-c", "0.1.0", "9" * 64)]),  # one too many
        _row(str(uuid.uuid4()), [both[0], ("set-b", "0.9.0", "5" * 64)]),  # one set behind
        _row(str(uuid.uuid4()), []),  # nothing at all
    ]
    views = describe_instances(
        rows, targets={"production": target}, revoked_tokens=set(), stale_after=timedelta(hours=1)
    )
    assert [v.drift for v in views] == [False, False, True, True, True, True]
    assert views[2].drift_note == "should serve SET-B 1.0.0"
    assert views[3].drift_note == "should not serve set-c 0.1.0"
    assert views[4].drift_note == "should serve SET-B 1.0.0"
    assert views[0].version == "SET-A 2.0.0, SET-B 1.0.0"


def test_drift_during_a_rollout_follows_each_instance_bucket() -> None:
    pointer = _pointer(50)
    target = ChannelTarget.from_pointer(pointer)
    rows = []
    for _ in range(40):
        instance_id = str(uuid.uuid4())
        chosen = select_releases(pointer, instance_id)
        rows.append(
            _row(instance_id, [(r.prompt_set_id, r.version, r.content_sha256) for r in chosen])
        )
    views = describe_instances(
        rows, targets={"production": target}, revoked_tokens=set(), stale_after=timedelta(hours=1)
    )
    assert not any(v.drift for v in views)
    # Swap what two instances of different buckets serve: both drift now.
    inside = next(r for r, v in zip(rows, views, strict=True) if v.expected == target.releases)
    outside = next(r for r, v in zip(rows, views, strict=True) if v.expected == target.previous)
    inside.releases, outside.releases = outside.releases, inside.releases
    views = describe_instances(
        rows, targets={"production": target}, revoked_tokens=set(), stale_after=timedelta(hours=1)
    )
    assert sum(v.drift for v in views) == 2


def test_counters_are_atomic_upserts_on_this_backend(app: Flask, world: World) -> None:
    limits = HeartbeatLimits(per_instance=2, per_token=3, window=60)
    instance = str(uuid.uuid4())
    with app.app_context():
        for _ in range(2):
            count_heartbeat(
                db.session, token_id="t" * 12, instance_id=instance, limits=limits, now=6000.0
            )
        with pytest.raises(TooManyHeartbeats, match="from this instance") as refused:
            count_heartbeat(
                db.session, token_id="t" * 12, instance_id=instance, limits=limits, now=6001.0
            )
        assert refused.value.retry_after == 59.0
        with pytest.raises(TooManyHeartbeats, match="with this ACCESS_TOKEN"):
            count_heartbeat(
                db.session, token_id="t" * 12, instance_id="other", limits=limits, now=6002.0
            )
        db.session.commit()
        # The next window starts again.
        count_heartbeat(
            db.session, token_id="t" * 12, instance_id=instance, limits=limits, now=6060.0
        )
        db.session.commit()


def test_silent_instances_are_archived_and_audited(app: Flask, world: World) -> None:
    from datetime import timedelta as days

    old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        assert project is not None
        for instance_id in (old, fresh):
            record_heartbeat(
                db.session,
                project_id=world.project_id,
                token_id="t" * 12,
                body=heartbeat(world, instance_id),
            )
        db.session.commit()
        row = db.session.scalar(select(LiveInstance).where(LiveInstance.instance_id == old))
        assert row is not None
        row.last_seen_at = utcnow() - days(days=31)
        db.session.commit()
        assert archive_silent_instances(db.session, project, older_than=days(days=30)) == 1
        db.session.commit()
        assert archive_silent_instances(db.session, project, older_than=days(days=30)) == 0
        archived = set(
            db.session.scalars(
                select(LiveInstance.instance_id).where(LiveInstance.archived_at.is_not(None))
            )
        )
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "instance.archive"))
        assert archived == {old}
        assert event is not None and event.actor_email == "system"
        assert event.details["count"] == 1 and event.details["instance_ids"] == [old]
        # A heartbeat brings it back.
        record_heartbeat(
            db.session, project_id=world.project_id, token_id="t" * 12, body=heartbeat(world, old)
        )
        db.session.commit()
        row = db.session.scalar(select(LiveInstance).where(LiveInstance.instance_id == old))
        assert row is not None and row.archived_at is None


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
