"""Usage charts: accessible inline SVG on the prompt, version and channel pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from forge_app.charts import bar_chart, line_chart, usage_panel
from forge_app.usage_reads import UsageBucket
from tests.forge_app.conftest import World
from tests.forge_app.safe_releases_helpers import heartbeat, two_versions
from tests.forge_app.test_distribution import Env

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _bucket(minutes: int, renders: int, errors: int, tokens: int = 0) -> UsageBucket:
    return UsageBucket(
        bucket_start=T0 + timedelta(minutes=minutes),
        channel="production",
        prompt_id="p",
        content_sha256="",
        renders=renders,
        render_errors=errors,
        calls=0,
        call_errors=0,
        input_tokens=tokens,
        output_tokens=tokens // 2,
        latency_ms=0.0,
        errors={},
    )


def test_a_bar_chart_is_labelled_and_scaled() -> None:
    chart = bar_chart("Calls", [(T0, 10.0), (T0 + timedelta(minutes=5), 40.0)], unit="calls")
    svg = str(chart.svg)
    assert svg.startswith('<svg class="usage-chart" role="img"')
    assert re.search(r"<title id=\"[^\"]+\">Calls</title>", svg)
    assert "50 calls in all" in chart.summary and "12:00 to 12:05 UTC" in chart.summary
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)"', svg)]
    assert heights[1] == pytest.approx(4 * heights[0])  # 40 is four times as tall as 10
    assert ">40<" in svg and ">12:00<" in svg and ">12:05 UTC<" in svg  # axis labels
    assert chart.rows == [("12:00", ["10"]), ("12:05", ["40"])]


def test_text_in_a_chart_is_escaped() -> None:
    chart = line_chart("<b>x</b>", {"<i>": [(T0, 1.0)]}, unit="%")
    assert "<b>" not in str(chart.svg) and "&lt;b&gt;" in str(chart.svg)


def test_a_line_chart_leaves_gaps_for_missing_values() -> None:
    chart = line_chart(
        "Error rate", {"Error rate": [(T0, 10.0), (T0 + timedelta(minutes=5), None)]}, unit="%"
    )
    assert chart.rows == [("12:00", ["10.0%"]), ("12:05", ["—"])]
    assert str(chart.svg).count("<polyline") == 1


def test_the_panel_sums_buckets_and_computes_the_error_rate() -> None:
    panel = usage_panel([_bucket(0, 100, 5, 1000), _bucket(0, 100, 15), _bucket(5, 50, 0)])
    assert not panel.empty and panel.calls == 250 and panel.errors == 20
    titles = [c.title for c in panel.charts]
    assert titles == ["Calls", "Error rate", "Tokens in and out"]
    assert panel.charts[1].rows == [("12:00", ["10.0%"]), ("12:05", ["0.0%"])]
    assert usage_panel([]).empty


@pytest.fixture
def env(app: Flask, world: World) -> Env:
    return Env(app, world)


def test_pages_show_the_charts_of_reported_usage(env: Env, app: Flask, client_as: Any) -> None:
    token = env.token()
    first, _ = two_versions(env)
    sha = env.entry("production").content_sha256
    client = app.test_client()
    assert (
        heartbeat(
            client,
            env,
            token,
            prompts=[
                {
                    "prompt_id": "welcome.message",
                    "content_sha256": sha,
                    "renders": 40,
                    "errors": {"MissingVariable": 2},
                    "calls": 40,
                    "input_tokens": 4000,
                    "output_tokens": 900,
                },
            ],
        )
        == 204
    )
    viewer = client_as("viewer")
    pages = {
        "channel": f"/projects/{env.pid}/channels/production",
        "version": f"/projects/{env.pid}/sets/{env.world.set_id}/versions/{first}",
    }
    for name, url in pages.items():
        text = viewer.get(url).get_data(as_text=True)
        assert 'class="usage-chart" role="img"' in text, name
        assert "40 calls, 2 errors." in text, name
        assert '<table class="visually-hidden">' in text, name
    # The prompt page: the prompt's own usage.
    from sqlalchemy import select

    from forge_app.extensions import db
    from forge_app.models import Prompt

    with app.app_context():
        prompt = db.session.scalar(select(Prompt).where(Prompt.key == "welcome.message"))
        assert prompt is not None
    text = viewer.get(
        f"/projects/{env.pid}/sets/{env.world.set_id}/prompts/welcome.message"
    ).get_data(as_text=True)
    assert "Usage of welcome.message" in text and "40 calls, 2 errors." in text
