"""``/metrics`` (issue 14 §2): Prometheus text, protected by FORGE_METRICS_TOKEN, with
heartbeats by outcome, publications by kind and instances by state from the database, and
request latency. (Summing over gunicorn workers: tests/integration/test_multiworker.py.)"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from forge_app.extensions import db
from forge_app.models import utcnow
from forge_app.models.distribution import Channel, Publication
from forge_app.models.instances import LiveInstance
from tests.forge_app.conftest import World
from tests.forge_app.test_heartbeat_api import body, make_token, send

METRICS_TOKEN = "metrics-secret-token"
SET_ID = "11111111-2222-3333-4444-555555555555"
GOOD = "a" * 64
BAD = "b" * 64


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "FORGE_METRICS_TOKEN": METRICS_TOKEN}


def scrape(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def heartbeats(samples: dict[Any, float], outcome: str) -> float:
    return samples.get(("anvil_forge_heartbeats_total", (("outcome", outcome),)), 0.0)


def test_metrics_need_the_token(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    right = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert right.status_code == 200


def test_without_a_token_setting_metrics_are_off(app_config: dict[str, Any]) -> None:
    from forge_app import create_app

    config = {**app_config, "FORGE_METRICS_TOKEN": ""}
    assert create_app(config).test_client().get("/metrics").status_code == 404
    public = create_app({**config, "FORGE_METRICS_PUBLIC": "1"})
    assert public.test_client().get("/metrics").status_code == 200


def test_heartbeats_are_counted_by_outcome(app: Flask, world: World) -> None:
    token = make_token(app, world.project_id, world.users["owner"])
    before = scrape(app)
    client = app.test_client()
    assert send(client, token, body(world)).status_code == 204
    assert send(client, token, body(world, sequence=4)).status_code == 204
    assert send(client, "anvil_unknown", body(world)).status_code == 401
    assert send(client, token, body(world, mode="sideways")).status_code == 400
    after = scrape(app)
    assert heartbeats(after, "accepted") - heartbeats(before, "accepted") == 2
    assert heartbeats(after, "unauthorized") - heartbeats(before, "unauthorized") == 1
    assert heartbeats(after, "invalid") - heartbeats(before, "invalid") == 1
    latency = [
        value
        for (name, labels), value in after.items()
        if name == "anvil_forge_request_seconds_count" and ("group", "heartbeat") in labels
    ]
    assert sum(latency) >= 4


def test_publications_and_instance_states_come_from_the_database(app: Flask, world: World) -> None:
    now = utcnow()
    with app.app_context():
        channel = Channel(project_id=world.project_id, name="production")
        db.session.add(channel)
        db.session.flush()
        entry = {"prompt_set_id": SET_ID, "version": "1.0.0", "content_sha256": GOOD}
        for sequence, kind in ((1, "publish"), (2, "rollback"), (3, "publish")):
            db.session.add(
                Publication(
                    project_id=world.project_id,
                    channel_id=channel.id,
                    sequence=sequence,
                    kind=kind,
                    releases_json=json.dumps([{**entry, "name": "Main"}]),
                )
            )

        def instance(**values: Any) -> None:
            served = values.pop("served", [entry])
            row = LiveInstance(
                project_id=world.project_id,
                instance_id=str(uuid.uuid4()),
                token_id="t" * 12,
                hostname="h",
                channel="production",
                mode="accepting",
                sequence=values.pop("sequence", 3),
                client_version="0.1.0",
                last_seen_at=values.pop("last_seen_at", now),
                **values,
            )
            row.releases = served
            db.session.add(row)

        instance()  # applied
        instance()  # applied
        instance(served=[{**entry, "content_sha256": BAD}])  # drift
        instance(last_seen_at=now - timedelta(hours=2))  # silent
        instance(last_error="cannot reach the store")  # error
        instance(sequence=2)  # pending: has not caught up yet
        instance(archived_at=now)  # archived: not counted
        db.session.commit()
    samples = scrape(app)

    def state(name: str) -> float:
        return samples[("anvil_forge_instances", (("state", name),))]

    assert [state(s) for s in ("applied", "drift", "silent", "error", "pending")] == [2, 1, 1, 1, 1]
    assert samples[("anvil_forge_publications_total", (("kind", "publish"),))] == 2
    assert samples[("anvil_forge_publications_total", (("kind", "rollback"),))] == 1
