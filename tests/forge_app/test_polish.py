"""Issue 13, pages and words: unambiguous LIVE labels, publishing without a token, preview
placeholders, a version's prompts, word-level diffs, per-prompt history, server-side
validation, and the one confirmation pattern (a page)."""

from __future__ import annotations

import html
import re
from typing import Any

from flask import Flask

from forge_app.diffing import diff_prompt_sets
from forge_app.services.editing import MessageDraft, PromptDraft
from forge_app.services.previews import render_preview
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version
from tests.forge_app.test_distribution import Env


def _preview(client: Any, set_url: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"{set_url}/prompts/preview", json={"key": "a", **body})
    assert response.status_code == 200
    return response.get_json()  # type: ignore[no-any-return]


# --- 1. LIVE labels ---------------------------------------------------------------------


def test_live_labels_say_which_live(app: Flask, world: World, client_as: Any, set_url: str) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    page = client_as("viewer").get(set_url).get_data(True)
    assert "Draft (LIVE)" in page and "Live draft" not in page
    assert "LIVE as a status means editable" in page  # the one-line hint
    project = client_as("viewer").get(f"/projects/{world.project_id}").get_data(True)
    assert ">LIVE instances</a>" in project
    version = lock_version(app, world)
    reviewer = client_as("reviewer").get(f"{set_url}/versions/{version}").get_data(True)
    assert "Publish to LIVE instances…" in reviewer
    assert "Sends this version to the applications (LIVE instances)" in reviewer


# --- 2. publishing with no active ACCESS_TOKEN --------------------------------------------


def test_publish_confirmation_without_a_token_says_so_and_disables_the_button(
    app: Flask, world: World, client_as: Any
) -> None:
    env = Env(app, world)
    add_prompts(app, world, SAMPLE_PROMPTS)
    version = lock_version(app, world)
    owner = client_as("owner")
    page = owner.get(env.version_url(version) + "?channel=development").get_data(True)
    assert 'id="no-tokens"' in page and "no active ACCESS_TOKEN" in page
    assert f'href="/projects/{world.project_id}/tokens"' in page
    button = re.search(r"<button[^>]*data-publish[^>]*>", page)
    assert (
        button
        and "disabled" in button.group(0)
        and 'aria-describedby="no-tokens"' in button.group(0)
    )
    env.token()
    page = owner.get(env.version_url(version) + "?channel=development").get_data(True)
    button = re.search(r"<button[^>]*data-publish[^>]*>", page)
    assert button and "disabled" not in button.group(0) and 'id="no-tokens"' not in page


# --- 3. preview placeholders ----------------------------------------------------------------


def test_placeholders_are_the_same_for_text_and_chat_new_and_saved() -> None:
    new_text = render_preview(PromptDraft(key="a", template="Hi {{ name }}"))
    saved_text = render_preview(
        PromptDraft(key="a", template="Hi {{ name }}", samples={"name": ""})
    )
    chat = render_preview(
        PromptDraft(
            key="a",
            kind="chat",
            messages=[MessageDraft("user", "Hi {{ name }}")],
            samples={"name": ""},
        )
    )
    assert [m["content"] for m in (*new_text.messages, *saved_text.messages, *chat.messages)] == [
        "Hi ⟨name⟩"
    ] * 3
    assert new_text.missing == saved_text.missing == chat.missing == ["name"]


def test_placeholder_text_never_feeds_a_computation() -> None:
    preview = render_preview(
        PromptDraft(
            key="a",
            template="{{ items|length }}|{% for i in items %}x{% endfor %}|"
            "{% if vip %}VIP{% else %}plain{% endif %}|{{ name|default('friend') }}",
        )
    )
    assert preview.messages[0]["content"] == "0||plain|friend"
    arithmetic = render_preview(PromptDraft(key="a", template="{{ count + 1 }}"))
    assert arithmetic.problems and "Give count a sample value" in arithmetic.problems[0].message
    given = render_preview(
        PromptDraft(key="a", template="{{ items|length }}", samples={"items": "abc"})
    )
    assert given.messages[0]["content"] == "3"


def test_samples_survive_a_syntax_error() -> None:
    broken = render_preview(
        PromptDraft(key="a", template="{{ name }} {% if %}", samples={"name": "Ann"})
    )
    assert broken.problems and broken.variables == ["name"]


def test_a_viewer_can_try_sample_values(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    viewer = client_as("viewer")
    result = _preview(viewer, set_url, template="Hi {{ name }}", samples={"name": "Ann"})
    assert result["messages"][0]["content"] == "Hi Ann"
    page = viewer.get(f"{set_url}/prompts/welcome.message").get_data(True)
    assert '<fieldset class="editor-main" disabled>' in page
    sample = re.search(r'<input id="sample-name"[^>]*>', page)
    assert (
        sample
        and "disabled" not in page.split('<aside class="editor-side">')[1].split("</aside>")[0]
    )
    response = viewer.post(
        f"{set_url}/prompts/welcome.message",
        data={"action": "preview", "sample-name": "Zoë", "sample-plan": "Pro"},
    )
    assert response.status_code == 200
    assert "Welcome Zoë!\nYour plan: Pro" in html.unescape(response.get_data(True))
    assert (
        viewer.post(f"{set_url}/prompts/welcome.message", data={"action": "save"}).status_code
        == 403
    )


# --- 4 and 7. a version's prompts, per-prompt history ----------------------------------------


def test_version_page_shows_its_prompts_read_only(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    version = lock_version(app, world)
    page = html.unescape(client_as("viewer").get(f"{set_url}/versions/{version}").get_data(True))
    assert '<details class="snapshot-prompt" id="p-welcome.message" open>' in page
    assert "Welcome {{ name }}!" in page and "You help {{ product }} users." in page
    assert "Greets a new user" in page and "temperature" in page
    assert "Read-only" in page and "<textarea" not in page


def test_prompt_history_lists_the_versions_that_changed_it(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    env = Env(app, world)
    add_prompts(app, world, SAMPLE_PROMPTS)
    first = lock_version(app, world)
    second = env.release_new_version("Hello {{ name }}, welcome!")
    with app.app_context():  # a third version changes only the chat prompt
        from forge_app.extensions import db
        from forge_app.models import PromptSet, Role, User
        from forge_app.services.workflow import unlock

        prompt_set, owner = (
            db.session.get(PromptSet, world.set_id),
            db.session.get(User, world.users["owner"]),
        )
        assert prompt_set is not None and owner is not None
        unlock(
            db.session, prompt_set, owner, role=Role.OWNER, expected_revision=prompt_set.revision
        )
        db.session.commit()
    chat = {"messages": [{"role": "user", "template": "Q: {{ question }}"}], "metadata": {}}
    add_prompts(app, world, {"support.chat": chat})
    third = lock_version(app, world)
    viewer = client_as("viewer")
    page = html.unescape(viewer.get(f"{set_url}/prompts/welcome.message/history").get_data(True))
    steps = re.findall(r'id="change-([^"]+)"', page)
    assert steps == [second, first]
    assert "changed" in page and "added" in page
    assert page.count('<tr class="diff-add">') >= 2  # each change comes with its diff
    assert "Hello {{ name }}, welcome!" in page
    chat_page = viewer.get(f"{set_url}/prompts/support.chat/history").get_data(True)
    assert re.findall(r'id="change-([^"]+)"', chat_page) == [third, first]
    assert viewer.get(f"{set_url}/prompts/nope/history").status_code == 404


# --- 5. word-level diff ---------------------------------------------------------------------


def test_diff_highlights_whole_words() -> None:
    result = diff_prompt_sets(
        {"a": {"template": "We are reaching out today."}},
        {"a": {"template": "We are contacting you today."}},
    )
    rows = result.changed[0].sections[0].rows
    changed = [[text for text, marked in row.parts if marked] for row in rows]
    assert changed == [["reaching out"], ["contacting you"]]


# --- 9. server-side validation next to the field ------------------------------------------


def test_empty_changelog_is_refused_next_to_the_field(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    response = client_as("editor").post(
        f"{set_url}/submit", data={"bump": "minor", "changelog": "  "}
    )
    page = response.get_data(True)
    assert response.status_code == 400
    assert 'aria-describedby="changelog-error"' in page and 'id="changelog-error"' in page


def test_short_password_is_refused_next_to_the_field(client_as: Any) -> None:
    response = client_as("editor").post(
        "/account", data={"current": "whatever", "new": "short", "confirm": "short"}
    )
    page = response.get_data(True)
    assert 'id="new-error"' in page and "at least 10 characters" in page


# --- 12. one confirmation pattern ----------------------------------------------------------


def test_unlock_confirms_on_a_page_made_for_one_user(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    editor = client_as("editor")
    page = editor.get(set_url).get_data(True)
    assert "data-confirm" not in page
    link = re.search(r'href="(/confirm/[^"]+)">Unlock for editing…</a>', page)
    assert link, "the unlock button leads to the confirmation page"
    confirm = editor.get(html.unescape(link.group(1)))
    body = confirm.get_data(True)
    assert confirm.status_code == 200 and "Unlock Main for editing?" in body
    assert f'action="{set_url}/unlock"' in body and 'name="revision"' in body
    assert client_as("reviewer").get(html.unescape(link.group(1))).status_code == 404
    assert editor.get("/confirm/forged").status_code == 404
    form = dict(re.findall(r'name="(revision)" value="(\d+)"', body))
    assert editor.post(f"{set_url}/unlock", data=form).status_code == 302
    assert "Draft (LIVE)" in editor.get(set_url).get_data(True)


def test_roll_back_links_are_named_after_their_entry(
    app: Flask, world: World, client_as: Any
) -> None:
    from forge_app.services import publishing

    env = Env(app, world)
    add_prompts(app, world, SAMPLE_PROMPTS)
    first = lock_version(app, world)
    env.token()
    env.call(publishing.publish_version, f"version:{first}", "channel:production")
    second = env.release_new_version("Hello {{ name }}")
    env.call(publishing.publish_version, f"version:{second}", "channel:production")
    page = client_as("owner").get(env.channel_url("production")).get_data(True)
    names = re.findall(r'Roll back to this…<span class="visually-hidden">([^<]+)</span>', page)
    assert names and len(names) == len(set(names))
    assert any("sequence 1" in n and first in n for n in names)
