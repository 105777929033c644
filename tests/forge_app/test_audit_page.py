"""The audit log page: filters (actor, action, object, dates), pagination and object links."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask

from forge_app.extensions import db
from forge_app.models import AuditEvent, utcnow
from tests.forge_app.conftest import World


def _edit_prompts(editor: Any, set_url: str, count: int) -> None:
    for index in range(count):
        response = editor.post(
            f"{set_url}/prompts/new",
            data={"key": f"p{index}", "kind": "text", "template": "Hi {{ name }}"},
        )
        assert response.status_code == 302


def _entries(page: str) -> int:
    return page.count('<li class="event">')


def _log(page: str) -> str:
    """The list of entries only (the filter's menus name actions too)."""
    return page.split('<ol class="events">')[1] if '<ol class="events">' in page else ""


def test_filters_narrow_the_log(app: Flask, world: World, client_as: Any, set_url: str) -> None:
    _edit_prompts(client_as("editor"), set_url, 3)
    client_as("owner").post(f"{set_url}/settings", data={"name": "Main set", "description": ""})
    viewer = client_as("viewer")
    base = f"/projects/{world.project_id}/audit"
    everything = viewer.get(base).get_data(True)
    assert _entries(everything) == 4
    by_editor = viewer.get(base, query_string={"actor": world.emails["editor"]}).get_data(True)
    assert _entries(by_editor) == 3 and "updated prompt set" not in _log(by_editor)
    family = viewer.get(base, query_string={"action": "prompt_set"}).get_data(True)
    assert _entries(family) == 1 and "updated prompt set" in _log(family)
    exact = viewer.get(base, query_string={"action": "prompt.create", "object": "P1"})
    assert _entries(exact.get_data(True)) == 1
    none = viewer.get(base, query_string={"object": "100%_"}).get_data(True)
    assert _entries(none) == 0 and "No entry matches" in none


def test_date_range_and_bad_dates(app: Flask, world: World, client_as: Any, set_url: str) -> None:
    _edit_prompts(client_as("editor"), set_url, 1)
    with app.app_context():  # the log is append-only: an old entry is inserted as old
        db.session.add(
            AuditEvent(
                created_at=utcnow() - timedelta(days=10),
                org_id=world.org_id,
                project_id=world.project_id,
                actor_email=world.emails["editor"],
                action="prompt.update",
                object_type="prompt",
                object_id="999",
                object_label="old",
                details={},
            )
        )
        db.session.commit()
    viewer = client_as("viewer")
    base = f"/projects/{world.project_id}/audit"
    today = utcnow().date()
    recent = viewer.get(base, query_string={"since": (today - timedelta(days=1)).isoformat()})
    assert _entries(recent.get_data(True)) == 1
    old = viewer.get(base, query_string={"until": (today - timedelta(days=5)).isoformat()})
    assert _entries(old.get_data(True)) == 1
    bad = viewer.get(base, query_string={"since": "yesterday"})
    page = bad.get_data(True)
    assert bad.status_code == 400 and 'id="since-error"' in page and "YYYY-MM-DD" in page
    backwards = viewer.get(base, query_string={"since": "2026-02-01", "until": "2026-01-01"})
    assert "before the start date" in backwards.get_data(True)


def test_pages_keep_the_filter_and_entries_link_to_objects(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    app.config["FORGE_PAGE_SIZE"] = 2
    _edit_prompts(client_as("editor"), set_url, 5)
    client_as("owner").post(f"{set_url}/settings", data={"name": "Renamed", "description": ""})
    viewer = client_as("viewer")
    base = f"/projects/{world.project_id}/audit"
    first = viewer.get(base, query_string={"action": "prompt.create"}).get_data(True)
    assert _entries(first) == 2 and 'rel="next"' in first
    older = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    assert "action=prompt.create" in older
    seen = 2
    while older:
        page = viewer.get(older).get_data(True)
        seen += _entries(page)
        assert "updated prompt set" not in _log(page)
        older = (
            page.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
            if 'rel="next"' in page
            else ""
        )
    assert seen == 5
    newest = viewer.get(base).get_data(True)
    assert f'href="{set_url}/prompts/p4"' in newest  # a prompt links to its editor
    assert f'href="{set_url}"' in newest  # the prompt set to its page
