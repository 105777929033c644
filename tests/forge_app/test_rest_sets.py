"""REST API v1: the operations under ``/projects/<id>/sets/<set_id>`` load the set once, after
the role check (``require_set_role``), and the project page and the API read the same summary
of each set (``services.project_pages.set_summaries``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version
from tests.forge_app.test_rest_api import Api, error_of, make_token


def test_every_set_operation_answers_404_for_a_set_outside_the_project(
    app: Flask, world: World
) -> None:
    api = Api(app.test_client(), make_token(app, world, "owner"))
    foreign = f"/projects/{world.other_project_id}/sets/{world.set_id}"
    unknown = f"/projects/{world.project_id}/sets/{uuid.uuid4()}"
    malformed = f"/projects/{world.project_id}/sets/not-a-uuid"
    for base in (unknown, malformed):
        for path in ("", "/versions", "/versions/1.0.0", "/prompts", "/prompts/a.b"):
            response = api.get(f"{base}{path}")
            assert response.status_code == 404, (base, path)
            assert error_of(response)["code"] == "not_found"
        submitted = api.send("POST", f"{base}/submit", {"revision": 1})
        assert submitted.status_code == 404
    assert api.get(f"{foreign}/prompts").status_code == 404


def test_the_role_is_checked_before_the_set_is_looked_up(app: Flask, world: World) -> None:
    viewer = Api(app.test_client(), make_token(app, world, "viewer"))
    body = {"key": "a.b", "template": "Hi"}
    for set_id in (world.set_id, uuid.uuid4()):
        response = viewer.send("POST", f"/projects/{world.project_id}/sets/{set_id}/prompts", body)
        assert response.status_code == 403


def test_the_project_page_and_the_api_show_the_same_latest_release(
    app: Flask, world: World, client_as: Callable[[str], FlaskClient]
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    version = lock_version(app, world)
    api = Api(app.test_client(), make_token(app, world, "viewer"))
    listed = api.get(f"/projects/{world.project_id}/sets").get_json()["items"]
    one = api.get(f"/projects/{world.project_id}/sets/{world.set_id}").get_json()
    assert listed == [one]
    assert one["current_version"] == version and one["prompt_count"] == len(SAMPLE_PROMPTS)
    html = client_as("viewer").get(f"/projects/{world.project_id}").get_data(as_text=True)
    assert f"/sets/{world.set_id}/versions/{version}" in html
