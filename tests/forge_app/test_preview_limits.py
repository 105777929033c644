"""Previews and saves are bounded: per-user rate limit, a cap on concurrent forked previews,
and untrusted templates never evaluated, parsed without bounds or answered with a stack trace."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from anvil_client.errors import ConfigError
from anvil_client.wire import ENVIRONMENT
from anvil_client.wire._render import MAX_PROMPT_SET_CHARS, MAX_TEMPLATE_CHARS
from forge_app.blueprints.prompts import preview_slots
from forge_app.config import load_settings
from forge_app.extensions import db
from forge_app.models import Prompt
from forge_app.services.editing import MessageDraft, PromptDraft, check_draft
from tests.anvil_client.hostile_templates import HOSTILE


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **app_config,
        "FORGE_PREVIEW_LIMIT": 3,
        "FORGE_PREVIEW_WINDOW": 60,
        "FORGE_PREVIEW_CONCURRENCY": 1,
    }


def _preview_json(template: str) -> dict[str, Any]:
    return {"template": template, "samples": {"name": "Ada"}}


def test_previews_are_rate_limited_per_user(client_as: Any, set_url: str) -> None:
    url = f"{set_url}/prompts/preview"
    viewer = client_as("viewer")
    for _ in range(3):  # FORGE_PREVIEW_LIMIT of this module
        assert viewer.post(url, json=_preview_json("Hi {{ name }}")).status_code == 200
    refused = viewer.post(url, json=_preview_json("Hi {{ name }}"))
    assert refused.status_code == 429
    assert refused.is_json and "Too many previews" in refused.get_json()["error"]
    assert int(refused.headers["Retry-After"]) >= 1
    # Another user has a budget of their own.
    answer = client_as("editor").post(url, json=_preview_json("Hi {{ name }}"))
    assert answer.status_code == 200
    assert answer.get_json()["messages"] == [{"role": "text", "content": "Hi Ada"}]


def test_previews_beyond_the_concurrency_cap_are_refused(
    app: Flask, client_as: Any, set_url: str
) -> None:
    url = f"{set_url}/prompts/preview"
    editor = client_as("editor")
    with app.app_context():
        slots = preview_slots(app)
    with slots.take():  # FORGE_PREVIEW_CONCURRENCY of this module is 1: it is taken
        busy = editor.post(url, json=_preview_json("Hi {{ name }}"))
        page = editor.get(f"{set_url}/prompts/new")
    assert busy.status_code == 429
    assert busy.is_json and "busy" in busy.get_json()["error"]
    assert busy.headers["Retry-After"] == "1"
    assert page.status_code == 200  # the editor page still opens; its preview says why not
    assert editor.post(url, json=_preview_json("Hi {{ name }}")).status_code == 200


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("parentheses", "nests too deeply"),
        ("nested_ifs", "nests too deeply"),
        ("filter_chain", "nests more than 32 levels deep"),
        ("join_folded", "would be too large"),
        ("macro_exponential", "CPU time|too many loop iterations and calls|longer than"),
        ("set_doubling", "would be too large"),
    ],
)
def test_a_hostile_preview_is_one_json_problem(
    client_as: Any, set_url: str, name: str, fragment: str
) -> None:
    answer = client_as("editor").post(
        f"{set_url}/prompts/preview", json=_preview_json(HOSTILE[name])
    )
    assert answer.status_code == 200 and answer.is_json
    result = answer.get_json()
    assert not result["ok"]
    assert any(re.search(fragment, p["message"]) for p in result["problems"]), result["problems"]


def _form(template: str) -> dict[str, str]:
    return {"key": "hostile.save", "kind": "text", "template": template, "action": "save"}


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        (HOSTILE["parentheses"], "nests too deeply"),
        (HOSTILE["nested_fors"], "nests blocks more than 16 deep"),
        ("x" * (MAX_TEMPLATE_CHARS + 1), f"at most {MAX_TEMPLATE_CHARS:,} are allowed"),
    ],
)
def test_saving_a_hostile_template_is_refused_with_a_sentence(
    app: Flask, client_as: Any, set_url: str, template: str, fragment: str
) -> None:
    answer = client_as("editor").post(f"{set_url}/prompts/new", data=_form(template))
    assert answer.status_code == 400
    assert fragment in answer.get_data(True)
    with app.app_context():
        assert db.session.query(Prompt).filter_by(key="hostile.save").count() == 0


def test_saving_evaluates_nothing_in_the_request(
    app: Flask, client_as: Any, set_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jinja2 folds constant expressions when it compiles or inspects a template; a filter
    # with constant arguments would run here, in the FORGE's own process.
    calls: list[object] = []

    def spy(*args: object, **kwargs: object) -> str:
        calls.append(args)
        return "x"

    monkeypatch.setitem(ENVIRONMENT.filters, "join", spy)
    answer = client_as("editor").post(
        f"{set_url}/prompts/new", data=_form("{{ 'ab' | join('-') }} {{ name }}")
    )
    assert answer.status_code == 302
    assert calls == []
    with app.app_context():
        assert db.session.query(Prompt).filter_by(key="hostile.save").one().variables == ["name"]


def test_a_prompt_has_a_total_template_size_limit() -> None:
    rows = [MessageDraft("user", "y" * MAX_TEMPLATE_CHARS)]
    count = MAX_PROMPT_SET_CHARS // MAX_TEMPLATE_CHARS + 1
    checked = check_draft(PromptDraft(key="chat.big", kind="chat", messages=rows * count))
    assert not checked.ok
    assert [p.message for p in checked.problems if p.field == "messages"] == [
        f"The templates hold {count * MAX_TEMPLATE_CHARS:,} characters; at most "
        f"{MAX_PROMPT_SET_CHARS:,} are allowed in one prompt."
    ]


def test_the_preview_limits_are_forge_settings(tmp_path: Path) -> None:
    environ = {
        "FORGE_INSTANCE_PATH": str(tmp_path),
        "FORGE_PREVIEW_LIMIT": "5",
        "FORGE_PREVIEW_WINDOW": "30",
        "FORGE_PREVIEW_CONCURRENCY": "2",
    }
    settings = load_settings({}, environ=environ)
    assert (settings.preview_limit, settings.preview_window, settings.preview_concurrency) == (
        5,
        30,
        2,
    )
    defaults = load_settings({}, environ={"FORGE_INSTANCE_PATH": str(tmp_path)})
    assert (defaults.preview_limit, defaults.preview_window, defaults.preview_concurrency) == (
        120,
        60,
        4,
    )
    with pytest.raises(ConfigError, match="FORGE_PREVIEW_CONCURRENCY must be a whole number"):
        load_settings({}, environ={**environ, "FORGE_PREVIEW_CONCURRENCY": "0"})
