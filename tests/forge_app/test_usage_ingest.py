"""Usage in heartbeats (issue 11, USAGE_CONTRACT.md): recorded once per report, added up in
time buckets by atomic upserts, caller variables, retention; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from forge_app.extensions import db
from forge_app.models.instances import LiveInstance
from forge_app.models.usage import CallerVariables, PromptUsage
from forge_app.usage import bucket_start, prune_usage
from forge_app.usage_reads import caller_variables, usage_series
from tests.forge_app.conftest import World
from tests.forge_app.test_heartbeat_api import body, make_token, send

SHA = "c" * 64


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "FORGE_HEARTBEAT_LIMIT": 1000}


@pytest.fixture
def token(app: Flask, world: World) -> str:
    return make_token(app, world.project_id, world.users["owner"])


def report(report_id: int, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "report_id": report_id,
        "from": "2026-11-30T20:00:00Z",
        "to": "2026-11-30T20:04:59Z",
        "prompts": [
            {
                "prompt_id": "support.greeting",
                "content_sha256": SHA,
                "renders": 120,
                "errors": {"MissingVariable": 2, "RenderError": 1},
                "calls": 118,
                "call_errors": 3,
                "input_tokens": 12345,
                "output_tokens": 6789,
                "latency_ms": 45678.5,
                "variables": [["customer_name", "product"], ["customer_name"]],
            },
            {
                "prompt_id": "support.fallback",
                "content_sha256": None,
                "renders": 4,
                "errors": {},
                "calls": 0,
                "call_errors": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "latency_ms": 0.0,
                "variables": [],
            },
        ],
        "other": {
            "renders": 3,
            "errors": 1,
            "calls": 2,
            "call_errors": 0,
            "input_tokens": 10,
            "output_tokens": 5,
            "latency_ms": 1.5,
        },
    }
    data.update(changes)
    return data


def rows(app: Flask) -> dict[tuple[str, str], PromptUsage]:
    with app.app_context():
        return {
            (r.prompt_id, r.content_sha256): r
            for r in db.session.scalars(select(PromptUsage).order_by(PromptUsage.id))
        }


def beat(app: Flask, world: World, token: str, usage: dict[str, Any], **changes: Any) -> Any:
    return send(app.test_client(), token, {**body(world, **changes), "usage": usage})


def test_a_report_is_stored_in_its_bucket(app: Flask, world: World, token: str) -> None:
    response = beat(app, world, token, report(1))
    assert response.status_code == 204, response.get_json()
    found = rows(app)
    assert set(found) == {("support.greeting", SHA), ("support.fallback", ""), ("(other)", "")}
    greeting = found[("support.greeting", SHA)]
    assert (greeting.renders, greeting.render_errors, greeting.calls, greeting.call_errors) == (
        120,
        3,
        118,
        3,
    )
    assert (greeting.input_tokens, greeting.output_tokens) == (12345, 6789)
    assert greeting.latency_ms == pytest.approx(45678.5)
    assert json.loads(greeting.errors_json) == {"MissingVariable": 2, "RenderError": 1}
    assert greeting.bucket_start == datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
    assert greeting.channel == "production"
    other = found[("(other)", "")]
    assert (other.renders, other.render_errors, other.calls) == (3, 1, 2)
    with app.app_context():
        instance = db.session.scalar(select(LiveInstance))
        assert instance is not None
        assert instance.last_usage_report_id == 1


def test_a_resent_report_counts_once(app: Flask, world: World, token: str) -> None:
    for _ in range(3):
        assert beat(app, world, token, report(7)).status_code == 204
    assert beat(app, world, token, report(5)).status_code == 204  # older: already covered
    assert rows(app)[("support.greeting", SHA)].renders == 120
    assert beat(app, world, token, report(8)).status_code == 204
    greeting = rows(app)[("support.greeting", SHA)]
    assert greeting.renders == 240
    assert json.loads(greeting.errors_json) == {"MissingVariable": 4, "RenderError": 2}


def test_the_first_heartbeat_of_an_instance_records_its_usage_too(
    app: Flask, world: World, token: str
) -> None:
    other = str(uuid.uuid4())
    assert beat(app, world, token, report(1)).status_code == 204
    assert beat(app, world, token, report(1), instance_id=other).status_code == 204
    assert rows(app)[("support.greeting", SHA)].renders == 240  # two instances, one bucket


def test_reports_from_many_instances_at_once_add_up_exactly(
    app: Flask, world: World, token: str
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(6)]
    for instance_id in ids:  # rows exist: the parallel part below is the update path
        assert beat(app, world, token, report(1), instance_id=instance_id).status_code == 204
    barrier = threading.Barrier(len(ids))
    statuses: list[int] = []

    def run(instance_id: str) -> None:
        barrier.wait()
        for n in range(2, 6):
            statuses.append(beat(app, world, token, report(n), instance_id=instance_id).status_code)

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [204] * 24
    greeting = rows(app)[("support.greeting", SHA)]
    assert greeting.renders == 120 * 30
    assert json.loads(greeting.errors_json) == {"MissingVariable": 60, "RenderError": 30}


def test_without_usage_nothing_is_counted(app: Flask, world: World, token: str) -> None:
    assert send(app.test_client(), token, body(world)).status_code == 204
    assert rows(app) == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"surprise": 1}, "usage.surprise"),
        ({"report_id": -1}, "usage.report_id"),
        ({"prompts": [{"prompt_id": "a", "renders": -3}]}, "usage.prompts.renders"),
        ({"prompts": [{"prompt_id": "a", "renders": "7"}]}, "usage.prompts.renders"),
        ({"prompts": [{"prompt_id": "a", "variables": [["not a name"]]}]}, "usage.prompts"),
        ({"to": "yesterday"}, "usage.to"),
        ({"to": "2026-11-30T19:00:00Z"}, "usage"),
    ],
)
def test_an_invalid_report_is_400_in_one_sentence(
    app: Flask, world: World, token: str, change: dict[str, Any], field: str
) -> None:
    response = beat(app, world, token, {**report(1), **change})
    assert response.status_code == 400
    message = response.get_json()["error"]
    assert field in message
    assert "\n" not in message
    assert "Traceback" not in message
    assert rows(app) == {}


def test_caller_variables_keep_the_union_of_sets(app: Flask, world: World, token: str) -> None:
    assert beat(app, world, token, report(1)).status_code == 204
    changed = report(2)
    changed["prompts"][0]["variables"] = [["customer_name", "order_id"]]
    assert beat(app, world, token, changed).status_code == 204
    with app.app_context():
        found = caller_variables(world.project_id, "support.greeting")
    assert found == {
        body(world)["instance_id"]: [
            ["customer_name"],
            ["customer_name", "order_id"],
            ["customer_name", "product"],
        ]
    }


def test_retention_prunes_old_buckets(app: Flask, world: World, token: str) -> None:
    assert beat(app, world, token, report(1)).status_code == 204
    with app.app_context():
        now = datetime(2026, 11, 30, 20, 10, tzinfo=UTC)
        assert prune_usage(db.session, now=now, retention_days=30) == 0
        later = now + timedelta(days=31)
        assert prune_usage(db.session, now=later, retention_days=30) == 3
        db.session.commit()
        assert db.session.scalar(select(func.count(PromptUsage.id))) == 0
    # Caller records go with their own age (last_seen_at is the FORGE's time of the report).
    with app.app_context():
        prune_usage(db.session, now=datetime.now(UTC) + timedelta(days=31), retention_days=30)
        db.session.commit()
        assert db.session.scalar(select(func.count(CallerVariables.id))) == 0


def test_a_report_with_a_future_or_ancient_window_lands_in_the_current_bucket(
    app: Flask, world: World, token: str
) -> None:
    future = report(1, **{"from": "2099-01-01T00:00:00Z", "to": "2099-01-01T00:05:00Z"})
    assert beat(app, world, token, future).status_code == 204
    start = rows(app)[("support.greeting", SHA)].bucket_start
    assert start <= datetime.now(UTC)
    assert start == bucket_start(start, 300)


def test_usage_series_filters(app: Flask, world: World, token: str) -> None:
    assert beat(app, world, token, report(1)).status_code == 204
    assert beat(app, world, token, report(1), channel="staging", instance_id=str(uuid.uuid4()))
    with app.app_context():
        everything = usage_series(world.project_id)
        production = usage_series(world.project_id, channel="production")
        greeting = usage_series(
            world.project_id, prompt_id="support.greeting", content_sha256s=[SHA]
        )
        none_yet = usage_series(world.project_id, since=datetime(2026, 11, 30, 21, 0, tzinfo=UTC))
    assert len(everything) == 6
    assert {b.channel for b in production} == {"production"}
    assert [(b.channel, b.renders) for b in greeting] == [("production", 120), ("staging", 120)]
    assert greeting[0].errors == {"MissingVariable": 2, "RenderError": 1}
    assert greeting[0].mean_latency_ms == pytest.approx(45678.5 / 118)
    assert none_yet == []
