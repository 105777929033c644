"""Authorisation on every route, found by walking ``app.url_map`` (so new routes are covered).

Anonymous users are sent to sign in (or get 401 from the API); a member of another
organisation gets 403 or 404 from every route that names an object; routes without object
arguments never show another organisation's data; admin pages need a site administrator.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.routing import Rule

from forge_app.authz import is_public
from forge_app.extensions import db
from forge_app.models import Membership
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version

SKIPPED_METHODS = {"HEAD", "OPTIONS"}


def _protected_rules(app: Flask) -> list[Rule]:
    rules = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or is_public(app.view_functions[rule.endpoint]):
            continue
        rules.append(rule)
    return rules


def _arguments(app: Flask, world: World, version: str) -> dict[str, Any]:
    with app.app_context():
        membership_id = db.session.scalar(
            select(Membership.id).where(Membership.user_id == world.users["editor"])
        )
    return {
        "project_id": world.project_id,
        "set_id": world.set_id,
        "version": version,
        "key": "welcome.message",
        "org_slug": world.org_slug,
        "membership_id": membership_id,
    }


def _url(app: Flask, rule: Rule, known: dict[str, Any]) -> tuple[str, bool]:
    """Build the rule's URL from known values; unknown arguments get placeholders."""
    values: dict[str, Any] = {}
    all_known = True
    for name in rule.arguments:
        if name in known:
            values[name] = known[name]
            continue
        all_known = False
        converter = type(rule._converters[name]).__name__.lower()
        if "uuid" in converter:
            values[name] = uuid.uuid4()
        elif "integer" in converter:
            values[name] = 1
        else:
            values[name] = "x"
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values), all_known


@pytest.fixture
def version(app: Flask, world: World) -> str:
    add_prompts(app, world, SAMPLE_PROMPTS)
    return lock_version(app, world)


def denial_failures(app: Flask, world: World, client_as: Any, version: str) -> list[str]:
    """Every way a protected route fails to deny access, as readable lines."""
    known = _arguments(app, world, version)
    anonymous = app.test_client()
    outsider = client_as("outsider")
    owner = client_as("owner")
    failures: list[str] = []
    checked = 0
    for rule in _protected_rules(app):
        url, all_known = _url(app, rule, known)
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            checked += 1
            response = anonymous.open(url, method=method)
            location = response.headers.get("Location", "")
            if rule.endpoint.startswith("api."):
                if response.status_code != 401:
                    failures.append(f"anonymous {method} {url}: {response.status_code}")
            elif response.status_code != 302 or "/login" not in location:
                failures.append(f"anonymous {method} {url}: {response.status_code}")

            response = outsider.open(url, method=method)
            if rule.arguments:
                if response.status_code not in (403, 404):
                    failures.append(f"outsider {method} {url}: {response.status_code}")
            elif rule.endpoint.startswith("admin."):
                if response.status_code != 403:
                    failures.append(f"outsider {method} {url}: {response.status_code}")
            else:  # lists of one's own things: never another organisation's data
                body = response.get_data(as_text=True)
                if "Checkout" in body or str(world.project_id) in body:
                    failures.append(f"outsider {method} {url}: shows acme's data")

            if method == "GET" and all_known and rule.arguments:
                # The URL is real: its own organisation's owner can open it.
                status = owner.get(url).status_code
                if status not in (200, 302):
                    failures.append(f"owner GET {url}: {status} (the walk built a bad URL)")
    assert checked >= 40, "the walk did not cover the app"
    return failures


def test_every_protected_route_is_denied_to_anonymous_and_other_orgs(
    app: Flask, world: World, client_as: Any, version: str
) -> None:
    assert denial_failures(app, world, client_as, version) == []


def test_the_walk_catches_a_route_without_authorisation(
    app: Flask, world: World, client_as: Any, version: str
) -> None:
    @app.get("/projects/<uuid:project_id>/leak")
    def leak(project_id: uuid.UUID) -> str:
        return "secret prompts"

    failures = denial_failures(app, world, client_as, version)
    assert any(f.startswith("outsider GET") and "/leak" in f for f in failures), failures


def test_roles_below_the_minimum_get_403(client_as: Any, world: World, set_url: str) -> None:
    viewer = client_as("viewer")
    editor = client_as("editor")
    assert viewer.get(f"{set_url}/prompts/new").status_code == 403
    assert viewer.post(f"{set_url}/submit", data={"bump": "minor"}).status_code == 403
    assert editor.post(f"{set_url}/approve", data={"revision": "1"}).status_code == 403
    assert editor.get(f"/projects/new/{world.org_slug}").status_code == 403
    assert client_as("reviewer").post(f"{set_url}/delete").status_code == 403
    assert (
        editor.post(f"/orgs/{world.org_slug}/members", data={"email": "x@y.z"}).status_code == 403
    )
    assert editor.get("/admin/").status_code == 403
    assert client_as("admin").get("/admin/").status_code == 200


def test_objects_of_one_project_are_not_reachable_through_another(
    app: Flask, world: World, client_as: Any
) -> None:
    """The outsider owns project B; A's prompt set id under B's URL must not resolve."""
    outsider = client_as("outsider")
    url = f"/projects/{world.other_project_id}/sets/{world.set_id}"
    assert outsider.get(url).status_code == 404
    assert outsider.get(f"/projects/{world.other_project_id}").status_code == 200
