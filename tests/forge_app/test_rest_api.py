"""REST API v1: personal API tokens, the same authorisation as the pages, reads with ETags and
pages, writes through the editor's and the workflow's rules, one error shape."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from forge_app.extensions import db
from forge_app.models import AuditEvent, PromptSet, User, utcnow
from forge_app.models.api_tokens import ApiToken
from forge_app.services.api_tokens import ApiTokenError, create_api_token
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version


def make_token(app: Flask, world: World, name: str, scope: str = "write", days: int = 30) -> str:
    with app.app_context():
        user = db.session.get(User, world.users[name])
        assert user is not None
        _, text = create_api_token(db.session, user, f"{name} token", scope=scope, days=days)
        db.session.commit()
        return text


class Api:
    """A test client that sends one bearer token and no cookies."""

    def __init__(self, client: FlaskClient, token: str | None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **headers: str) -> Any:
        return self.client.get(f"/api/v1{path}", headers={**self.headers, **headers})

    def send(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.open(f"/api/v1{path}", method=method, json=body, headers=self.headers)


@pytest.fixture
def api(app: Flask, world: World) -> Any:
    def make(name: str | None, scope: str = "write") -> Api:
        token = make_token(app, world, name, scope) if name else None
        return Api(app.test_client(), token)

    return make


def error_of(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------ tokens


def test_a_token_is_stored_only_as_a_hash_and_shown_once(app: Flask, world: World) -> None:
    text = make_token(app, world, "viewer", "read")
    assert text.startswith("forge_pat_")
    with app.app_context():
        row = db.session.scalar(select(ApiToken))
        assert row is not None
        assert text not in repr(row.__dict__)
        assert row.secret_hash != text and len(row.secret_hash) == 64
        events = db.session.scalars(select(AuditEvent.action)).all()
        assert "api_token.create" in events
        assert all(text not in str(e.details) for e in db.session.scalars(select(AuditEvent)))


def test_requests_without_a_good_token_are_401_with_one_sentence(
    app: Flask, world: World, api: Any, client_as: Any
) -> None:
    anonymous = api(None)
    response = anonymous.get("/orgs")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "unauthorized"
    wrong = Api(app.test_client(), "forge_pat_aaaaaaaaaaaa_" + "A" * 43)
    assert wrong.get("/orgs").status_code == 401
    # A signed-in browser session is not enough: the API only takes bearer tokens.
    assert client_as("owner").get("/api/v1/orgs").status_code == 401


def test_revoked_and_expired_tokens_stop_working(app: Flask, world: World, api: Any) -> None:
    client = api("viewer", "read")
    assert client.get("/orgs").status_code == 200
    with app.app_context():
        token = db.session.scalar(select(ApiToken))
        assert token is not None and token.last_used_at is not None
        token.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    response = client.get("/orgs")
    assert response.status_code == 401
    assert "expired" in error_of(response)["message"]
    with app.app_context():
        token = db.session.scalar(select(ApiToken))
        assert token is not None
        token.expires_at = utcnow() + timedelta(days=1)
        token.revoked_at = utcnow()
        db.session.commit()
    assert "revoked" in error_of(client.get("/orgs"))["message"]


def test_token_page_creates_once_lists_and_revokes(
    app: Flask, world: World, client_as: Any
) -> None:
    browser = client_as("editor")
    page = browser.get("/account/api-tokens/")
    assert page.status_code == 200
    form = {"name": "CI export", "scope": "read", "days": "30", "form_key": "k-1"}
    created = browser.post("/account/api-tokens/", data=form)
    assert created.status_code == 200
    assert created.headers["Cache-Control"] == "no-store"
    html = created.get_data(as_text=True)
    assert "forge_pat_" in html
    again = browser.post("/account/api-tokens/", data=form)  # a reloaded form
    assert again.status_code == 400
    assert "already created" in again.get_data(as_text=True)
    with app.app_context():
        token = db.session.scalar(select(ApiToken))
        assert token is not None and db.session.query(ApiToken).count() == 1
        token_id = token.token_id
    listing = browser.get("/account/api-tokens/").get_data(as_text=True)
    assert f"forge_pat_{token_id}_…" in listing
    assert "forge_pat_" + token_id + "_" + "x" not in listing
    # Another user cannot revoke it; its owner can.
    assert client_as("owner").post(f"/account/api-tokens/{token_id}/revoke").status_code == 404
    assert browser.post(f"/account/api-tokens/{token_id}/revoke").status_code == 302
    with app.app_context():
        token = db.session.scalar(select(ApiToken))
        assert token is not None and token.revoked_at is not None
        assert "api_token.revoke" in db.session.scalars(select(AuditEvent.action)).all()


@pytest.mark.parametrize(
    ("name", "scope", "days"), [("", "read", 30), ("x", "admin", 30), ("x", "read", 3)]
)
def test_bad_token_requests_are_refused(
    app: Flask, world: World, name: str, scope: str, days: int
) -> None:
    with app.app_context():
        user = db.session.get(User, world.users["editor"])
        assert user is not None
        with pytest.raises(ApiTokenError):
            create_api_token(db.session, user, name, scope=scope, days=days)


def test_tokens_are_rate_limited_per_token(app: Flask, world: World, api: Any) -> None:
    app.config["FORGE_API_RATE_LIMIT"] = 3
    first, second = api("viewer", "read"), api("editor", "read")
    assert [first.get("/orgs").status_code for _ in range(3)] == [200, 200, 200]
    limited = first.get("/orgs")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert error_of(limited)["code"] == "rate_limited"
    assert second.get("/orgs").status_code == 200  # another token has its own budget


# ------------------------------------------------------------------------------ reading


def test_reads_show_only_the_users_organisations(world: World, api: Any) -> None:
    outsider = api("outsider", "read")
    orgs = outsider.get("/orgs").get_json()["items"]
    assert [o["slug"] for o in orgs] == ["globex"]
    assert outsider.get(f"/orgs/{world.org_slug}/projects").status_code == 404
    assert outsider.get(f"/projects/{world.project_id}").status_code == 404
    viewer = api("viewer", "read")
    assert viewer.get("/orgs").get_json()["items"] == [
        {"slug": "acme", "name": "Acme", "role": "viewer"}
    ]


def test_projects_sets_versions_prompts_and_channels(app: Flask, world: World, api: Any) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    version = lock_version(app, world)
    client = api("viewer", "read")
    projects = client.get(f"/orgs/{world.org_slug}/projects").get_json()["items"]
    assert projects[0]["name"] == "Checkout"
    assert projects[0]["prompt_count"] == 2 and projects[0]["set_count"] == 1
    assert projects[0]["last_updated"] is not None
    sets = client.get(f"/projects/{world.project_id}/sets").get_json()["items"]
    assert sets[0]["status"] == "LOCKED" and sets[0]["current_version"] == version
    base = f"/projects/{world.project_id}/sets/{world.set_id}"
    versions = client.get(f"{base}/versions").get_json()["items"]
    assert [v["version"] for v in versions] == [version]
    detail = client.get(f"{base}/versions/{version}").get_json()
    import hashlib

    assert hashlib.sha256(detail["bundle"].encode()).hexdigest() == detail["content_sha256"]
    assert set(detail["prompts"]) == set(SAMPLE_PROMPTS)
    prompt = client.get(f"{base}/prompts/welcome.message").get_json()
    assert prompt["kind"] == "text" and prompt["variables"] == ["name", "plan"]
    assert client.get(f"{base}/prompts/missing.one").status_code == 404
    channels = client.get(f"/projects/{world.project_id}/channels").get_json()["items"]
    assert [c["name"] for c in channels][:3] == ["production", "staging", "development"]
    assert channels[0]["accepts"] == ["LOCKED"] and channels[0]["serves"] == []


def test_reads_carry_etags_and_answer_304(world: World, api: Any) -> None:
    client = api("viewer", "read")
    first = client.get(f"/projects/{world.project_id}/sets")
    etag = first.headers["ETag"]
    assert etag
    again = client.get(f"/projects/{world.project_id}/sets", **{"If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b""


def test_lists_are_paginated_with_link_headers(app: Flask, world: World, api: Any) -> None:
    prompts = {f"p.n{i}": {"template": f"Prompt {i}", "metadata": {}} for i in range(5)}
    add_prompts(app, world, prompts)
    client = api("viewer", "read")
    base = f"/projects/{world.project_id}/sets/{world.set_id}/prompts"
    page1 = client.get(f"{base}?per_page=2")
    body = page1.get_json()
    assert [p["key"] for p in body["items"]] == ["p.n0", "p.n1"]
    assert body["next"] and 'rel="next"' in page1.headers["Link"]
    keys = [p["key"] for p in body["items"]]
    url = body["next"]
    while url:
        page = client.client.get(url, headers=client.headers).get_json()
        keys += [p["key"] for p in page["items"]]
        url = page["next"]
    assert keys == sorted(prompts)
    bad = client.get(f"{base}?per_page=1000")
    assert bad.status_code == 400 and "per_page" in error_of(bad)["message"]


# ------------------------------------------------------------------------------ writing


def test_a_read_token_can_change_nothing(app: Flask, world: World, api: Any) -> None:
    client = api("owner", "read")
    response = client.send(
        "POST",
        f"/projects/{world.project_id}/sets/{world.set_id}/prompts",
        {"key": "a.b", "template": "Hi"},
    )
    assert response.status_code == 403
    assert error_of(response)["code"] == "read_only"
    with app.app_context():
        assert db.session.scalar(select(PromptSet.revision)) == 1


def test_a_token_never_does_more_than_its_users_role(world: World, api: Any) -> None:
    viewer = api("viewer", "write")
    response = viewer.send(
        "POST",
        f"/projects/{world.project_id}/sets/{world.set_id}/prompts",
        {"key": "a.b", "template": "Hi"},
    )
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"


def test_create_and_update_use_the_editors_validation_and_concurrency(
    app: Flask, world: World, api: Any
) -> None:
    client = api("editor")
    base = f"/projects/{world.project_id}/sets/{world.set_id}/prompts"
    bad = client.send("POST", base, {"key": "Bad Key", "template": "Hi {{ name"})
    assert bad.status_code == 400
    fields = {d["field"] for d in error_of(bad)["details"]}
    assert {"key", "template"} <= fields
    created = client.send(
        "POST",
        base,
        {"key": "greet.user", "template": "Hi {{ name }}", "metadata": {"temperature": 0.5}},
    )
    assert created.status_code == 201, created.get_json()
    prompt = created.get_json()
    assert prompt["variables"] == ["name"] and prompt["metadata"] == {"temperature": 0.5}
    assert client.send("POST", base, {"key": "greet.user", "template": "x"}).status_code == 409
    revision = prompt["revision"]
    updated = client.send(
        "PUT", f"{base}/greet.user", {"revision": revision, "template": "Hello {{ name }}"}
    )
    assert updated.status_code == 200
    stale = client.send(
        "PUT", f"{base}/greet.user", {"revision": revision, "template": "Overwrite"}
    )
    assert stale.status_code == 409
    assert error_of(stale)["details"] == {"revision": updated.get_json()["revision"]}
    both = client.send(
        "PUT", f"{base}/greet.user", {"revision": 9, "template": "a", "messages": []}
    )
    assert both.status_code == 400
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action)).all()
        assert "prompt.create" in actions and "prompt.update" in actions


def test_unknown_fields_and_non_json_bodies_are_400(world: World, api: Any) -> None:
    client = api("editor")
    base = f"/projects/{world.project_id}/sets/{world.set_id}"
    extra = client.send(
        "POST", f"{base}/submit", {"bump": "minor", "changelog": "x", "revision": 1, "x": 1}
    )
    assert extra.status_code == 400 and error_of(extra)["details"][0]["field"] == "x"
    raw = client.client.post(
        f"/api/v1{base}/submit",
        data="nonsense",
        headers={**client.headers, "Content-Type": "text/plain"},
    )
    assert raw.status_code == 400
    assert "JSON object" in error_of(raw)["message"]


def test_submit_and_the_four_eyes_rule_through_the_api(app: Flask, world: World, api: Any) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    base = f"/projects/{world.project_id}/sets/{world.set_id}"
    reviewer = api("reviewer")
    revision = reviewer.get(base).get_json()["revision"]
    submitted = reviewer.send(
        "POST", f"{base}/submit", {"bump": "minor", "changelog": "First", "revision": revision}
    )
    assert submitted.status_code == 200, submitted.get_json()
    body = submitted.get_json()
    assert body["status"] == "REVIEW" and body["pending_version"] == "0.1.0"
    own = reviewer.send("POST", f"{base}/approve", {"revision": body["revision"]})
    assert own.status_code == 403
    assert "another reviewer" in error_of(own)["message"]
    stale = api("reviewer2").send("POST", f"{base}/approve", {"revision": body["revision"] - 1})
    assert stale.status_code == 409
    approved = api("reviewer2").send("POST", f"{base}/approve", {"revision": body["revision"]})
    assert approved.status_code == 200
    assert approved.get_json()["version"] == "0.1.0"


def test_request_changes_through_the_api(app: Flask, world: World, api: Any) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    base = f"/projects/{world.project_id}/sets/{world.set_id}"
    editor = api("editor")
    revision = editor.get(base).get_json()["revision"]
    body = editor.send(
        "POST", f"{base}/submit", {"bump": "patch", "changelog": "c", "revision": revision}
    ).get_json()
    empty = api("reviewer").send(
        "POST", f"{base}/request-changes", {"comment": " ", "revision": body["revision"]}
    )
    assert empty.status_code == 400
    back = api("reviewer").send(
        "POST", f"{base}/request-changes", {"comment": "Shorter", "revision": body["revision"]}
    )
    assert back.status_code == 200 and back.get_json()["status"] == "LIVE"


def test_publish_and_roll_back_through_the_api(app: Flask, world: World, api: Any) -> None:
    from forge_app.models import Project
    from forge_app.services.tokens import create_token

    add_prompts(app, world, SAMPLE_PROMPTS)
    first = lock_version(app, world, "minor")
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        create_token(project, "svc", user=owner)
        db.session.commit()
    channel = f"/projects/{world.project_id}/channels/production"
    body = {"prompt_set_id": str(world.set_id), "version": first}
    refused = api("reviewer").send("POST", f"{channel}/publish", body)
    assert refused.status_code == 403  # production takes owners only, as on the page
    owner_api = api("owner")
    published = owner_api.send("POST", f"{channel}/publish", body)
    assert published.status_code == 200, published.get_json()
    one = published.get_json()
    assert one["sequence"] == 1 and one["serves"][0]["version"] == first
    missing = owner_api.send("POST", f"{channel}/publish", {**body, "version": "9.9.9"})
    assert missing.status_code == 404
    with app.app_context():
        from forge_app.services.workflow import unlock

        prompt_set = db.session.get(PromptSet, world.set_id)
        editor = db.session.get(User, world.users["editor"])
        assert prompt_set is not None and editor is not None
        from forge_app.models import Role

        unlock(db.session, prompt_set, editor, role=Role.EDITOR, expected_revision=None)
        db.session.commit()
    add_prompts(app, world, {"extra.one": {"template": "More", "metadata": {}}})
    second = lock_version(app, world, "minor", "Second")
    assert (
        owner_api.send("POST", f"{channel}/publish", {**body, "version": second}).status_code == 200
    )
    rolled = owner_api.send("POST", f"{channel}/rollback", {"sequence": 1})
    assert rolled.status_code == 200, rolled.get_json()
    assert rolled.get_json()["sequence"] == 3
    served = api("viewer", "read").get(f"/projects/{world.project_id}/channels").get_json()
    production = next(c for c in served["items"] if c["name"] == "production")
    assert production["sequence"] == 3 and production["serves"][0]["version"] == first
    nothing = owner_api.send("POST", f"{channel}/rollback", {"sequence": 99})
    assert nothing.status_code == 404


def test_unknown_paths_and_methods_answer_in_the_api_error_shape(api: Any, world: World) -> None:
    client = api("viewer", "read")
    missing = client.get("/no/such/thing")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = client.send("DELETE", "/orgs")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["Allow"] and error_of(wrong)["code"] == "method_not_allowed"
    # The LIVE heartbeat API (ACCESS_TOKENs) keeps its own answers.
    heartbeat = client.get("/live/heartbeat")
    assert heartbeat.status_code == 405 and isinstance(heartbeat.get_json()["error"], str)


def test_the_rest_package_exports_a_small_front_door() -> None:
    import forge_app.rest

    assert sorted(forge_app.rest.__all__) == [
        "ApiError",
        "OPERATIONS",
        "bp",
        "build_openapi",
        "schemas",
    ]
