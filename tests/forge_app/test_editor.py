"""The prompt editor: validation at the line, metadata, chat prompts, preview, concurrency,
and the pages working without JavaScript."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from forge_app.extensions import db
from forge_app.models import AuditEvent, Prompt
from forge_app.services.editing import PromptDraft, check_draft
from forge_app.services.previews import render_preview
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts


def _form(**fields: str) -> dict[str, str]:
    data = {"key": "welcome.message", "kind": "text", "template": "Hi {{ name }}", "action": "save"}
    data.update(fields)
    return data


def _prompt(app: Flask, key: str) -> Prompt:
    with app.app_context():
        prompt = db.session.query(Prompt).filter_by(key=key).one()
        db.session.expunge(prompt)
        return prompt


def test_create_a_text_prompt_with_metadata(app: Flask, client_as: Any, set_url: str) -> None:
    editor = client_as("editor")
    response = editor.post(
        f"{set_url}/prompts/new",
        data=_form(
            template="Welcome {{ name }}!\r\n{% if vip %}VIP{% endif %}",
            description="Greets",
            model="gpt-4o-mini",
            temperature="0.3",
            max_tokens="200",
            tags="onboarding, email, onboarding",
            **{"sample-name": "Ada", "sample-vip": ""},
        ),
    )
    assert response.status_code == 302
    prompt = _prompt(app, "welcome.message")
    assert prompt.kind == "text"
    assert prompt.template == "Welcome {{ name }}!\n{% if vip %}VIP{% endif %}"  # LF only
    assert prompt.variables == ["name", "vip"]
    assert prompt.meta == {
        "description": "Greets",
        "model": "gpt-4o-mini",
        "temperature": 0.3,
        "max_tokens": 200,
        "tags": ["onboarding", "email"],
    }
    assert prompt.samples == {"name": "Ada", "vip": ""}
    page = editor.get(response.headers["Location"]).get_data(True)
    assert "Welcome Ada!" in page  # the saved samples render the preview


def test_a_broken_template_points_at_its_line_and_keeps_the_text(
    app: Flask, client_as: Any, set_url: str
) -> None:
    editor = client_as("editor")
    broken = "Line one\nLine two {{ name }}\nLine three {% if x %}\nno endif here"
    response = editor.post(f"{set_url}/prompts/new", data=_form(template=broken))
    assert response.status_code == 400
    page = response.get_data(True)
    assert 'data-goto-line="4"' in page or 'data-goto-line="3"' in page
    assert re.search(r"Line [34]</a>: ", page)
    assert "Line three {% if x %}" in page  # nothing typed is lost
    with app.app_context():
        assert db.session.query(Prompt).count() == 0


def test_field_problems_are_all_reported(client_as: Any, set_url: str) -> None:
    response = client_as("editor").post(
        f"{set_url}/prompts/new",
        data=_form(key="Bad Id", temperature="hot", max_tokens="-3", extra_metadata="[1]"),
    )
    page = response.get_data(True)
    assert response.status_code == 400
    assert "Use lowercase letters" in page
    assert "Temperature is a number from 0 to 2" in page
    assert "Max tokens is a whole number" in page
    assert "Give a JSON object" in page


def test_chat_prompt_and_adding_a_message_without_javascript(
    app: Flask, client_as: Any, set_url: str
) -> None:
    editor = client_as("editor")
    data = _form(
        key="support.chat",
        kind="chat",
        template="",
        **{
            "messages-0-role": "system",
            "messages-0-template": "You help {{ product }} users.",
            "messages-1-role": "user",
            "messages-1-template": "{{ question }}",
        },
    )
    page = editor.post(f"{set_url}/prompts/new", data={**data, "action": "add_message"})
    assert page.status_code == 200
    html = page.get_data(True)
    assert 'name="messages-2-template"' in html  # a third, empty row
    assert "You help {{ product }} users." in html
    assert editor.post(f"{set_url}/prompts/new", data=data).status_code == 302
    prompt = _prompt(app, "support.chat")
    assert prompt.kind == "chat" and prompt.template is None
    assert prompt.messages == [
        {"role": "system", "template": "You help {{ product }} users."},
        {"role": "user", "template": "{{ question }}"},
    ]
    assert prompt.variables == ["product", "question"]


def test_a_chat_message_error_names_the_message(client_as: Any, set_url: str) -> None:
    response = client_as("editor").post(
        f"{set_url}/prompts/new",
        data=_form(
            key="c",
            kind="chat",
            **{
                "messages-0-role": "user",
                "messages-0-template": "ok",
                "messages-1-role": "user",
                "messages-1-template": "{{ x",
            },
        ),
    )
    assert response.status_code == 400
    assert 'data-problem-field="messages-1-template"' in response.get_data(True)


def test_preview_without_javascript(client_as: Any, set_url: str) -> None:
    response = client_as("editor").post(
        f"{set_url}/prompts/new",
        data=_form(
            template="Dear {{ name }}, {{ greeting }}", action="preview", **{"sample-name": "Ada"}
        ),
    )
    assert response.status_code == 200
    page = response.get_data(True)
    assert "Dear Ada, ⟨greeting⟩" in page
    assert 'name="sample-greeting"' in page


def test_preview_endpoint_uses_the_client_sandbox(client_as: Any, set_url: str) -> None:
    client = client_as("viewer")
    url = f"{set_url}/prompts/preview"
    result = client.post(
        url,
        json={
            "kind": "chat",
            "messages": [
                {"role": "system", "template": "Be {{ tone }}"},
                {"role": "user", "template": "{{ q }}"},
            ],
            "samples": {"tone": "kind", "q": "Why?"},
        },
    ).get_json()
    assert result["ok"] and result["variables"] == ["q", "tone"]
    assert result["messages"] == [
        {"role": "system", "content": "Be kind"},
        {"role": "user", "content": "Why?"},
    ]
    result = client.post(
        url, json={"template": "{{ x.__class__.__mro__ }}", "samples": {"x": "s"}}
    ).get_json()
    assert not result["ok"] and "sandbox" in result["problems"][0]["message"]  # blocked, not run
    result = client.post(url, json={"template": "a\n{% for %}"}).get_json()
    assert not result["ok"] and result["problems"][0]["line"] == 2
    result = client.post(url, json={"template": "{{ 'x' * 100000000 }}"}).get_json()
    assert not result["ok"]
    assert client.post(url, data="nope", content_type="application/json").status_code == 400


def test_two_editors_never_overwrite_each_other_silently(
    app: Flask, client_as: Any, set_url: str
) -> None:
    first, second = client_as("editor"), client_as("owner")
    assert first.post(f"{set_url}/prompts/new", data=_form()).status_code == 302
    url = f"{set_url}/prompts/welcome.message"
    revision = re.search(r'name="revision" value="(\d+)"', first.get(url).get_data(True)).group(1)  # type: ignore[union-attr]
    assert second.get(url).status_code == 200  # both open the editor at the same revision
    assert (
        first.post(url, data=_form(template="First {{ name }}", revision=revision)).status_code
        == 302
    )
    response = second.post(url, data=_form(template="Second {{ name }}", revision=revision))
    assert response.status_code == 409
    page = response.get_data(True)
    assert "saved this prompt while you were editing" in page
    assert "Second {{ name }}" in page  # the second editor's text is kept
    assert "First" in page  # and the saved version is shown for comparison
    assert _prompt(app, "welcome.message").template == "First {{ name }}"
    new_revision = re.search(r'name="revision" value="(\d+)"', page).group(1)  # type: ignore[union-attr]
    assert (
        second.post(
            url, data=_form(template="Second {{ name }}", revision=new_revision)
        ).status_code
        == 302
    )
    assert _prompt(app, "welcome.message").template == "Second {{ name }}"


def test_rename_and_delete(app: Flask, client_as: Any, set_url: str) -> None:
    editor = client_as("editor")
    editor.post(f"{set_url}/prompts/new", data=_form())
    editor.post(f"{set_url}/prompts/new", data=_form(key="other"))
    url = f"{set_url}/prompts/welcome.message"
    response = editor.post(url, data=_form(key="other", revision="1"))
    assert response.status_code == 400 and "already has a prompt" in response.get_data(True)
    response = editor.post(url, data=_form(key="welcome.renamed", revision="1"))
    assert response.status_code == 302 and response.headers["Location"].endswith("/welcome.renamed")
    assert editor.post(f"{set_url}/prompts/welcome.renamed/delete").status_code == 302
    with app.app_context():
        assert [p.key for p in db.session.query(Prompt)] == ["other"]
        actions = [e.action for e in db.session.query(AuditEvent).order_by(AuditEvent.id)]
        assert actions == ["prompt.create", "prompt.create", "prompt.update", "prompt.delete"]
        rename = db.session.query(AuditEvent).filter_by(action="prompt.update").one()
        assert rename.details["renamed"] == {"from": "welcome.message", "to": "welcome.renamed"}


def test_viewers_see_a_read_only_editor(client_as: Any, set_url: str) -> None:
    client_as("editor").post(f"{set_url}/prompts/new", data=_form())
    page = client_as("viewer").get(f"{set_url}/prompts/welcome.message").get_data(True)
    assert '<fieldset class="editor-main" disabled>' in page
    assert "Save prompt" not in page


def test_editing_keeps_metadata_it_has_no_field_for() -> None:
    entry = {
        "template": "x",
        "metadata": {"tags": "a, b", "temperature": 1, "owner": {"team": "growth"}, "model": " m "},
    }
    draft = PromptDraft.from_entry("k", entry)
    assert draft.temperature == "1" and draft.tags == "" and draft.model == ""
    checked = check_draft(draft)
    assert checked.entry == entry  # byte-for-byte the same metadata after a no-op edit


@pytest.mark.parametrize(
    ("template", "fragment"),
    [("{{ name }", "line 1"), ("ok\n{% endif %}", "line 2")],
)
def test_check_draft_reports_lines(template: str, fragment: str) -> None:
    checked = check_draft(PromptDraft(key="k", template=template))
    assert not checked.ok
    assert f"line {checked.problems[0].line}" == fragment


def test_render_preview_shows_missing_variables() -> None:
    preview = render_preview(PromptDraft(key="k", template="{{ a }}-{{ b }}", samples={"a": "1"}))
    assert preview.messages == [{"role": "text", "content": "1-⟨b⟩"}]
    assert preview.missing == ["b"]


def test_search_by_id_and_text(app: Flask, world: World, client_as: Any) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    client = client_as("viewer")
    url = f"/projects/{world.project_id}/search"
    page = client.get(url, query_string={"q": "WELCOME"}).get_data(True)
    assert "<mark>welcome</mark>.message" in page
    page = client.get(url, query_string={"q": "users."}).get_data(True)
    assert "support.chat" in page and "<mark>users.</mark>" in page
    page = client.get(url, query_string={"q": "%"}).get_data(True)  # LIKE wildcards are literal
    assert "No prompt matches" in page
    outsider = client_as("outsider")
    assert outsider.get(url, query_string={"q": "welcome"}).status_code == 404
