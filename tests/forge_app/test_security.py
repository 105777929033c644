"""Sign-in, sessions, CSRF on every form, security headers and friendly error pages."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

from flask import Flask

from forge_app import create_app
from forge_app.app import CONTENT_SECURITY_POLICY
from forge_app.authz import public
from forge_app.extensions import db
from forge_app.models import LoginAttempt
from tests.forge_app.conftest import PASSWORD, SAMPLE_PROMPTS, World, add_prompts, lock_version


def _csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', html)
    if match is None:
        match = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match is not None, "no CSRF token in the page"
    return match.group(1)


def _sign_in(client: Any, email: str, password: str = PASSWORD, **extra: str) -> Any:
    page = client.get("/login")
    data = {"email": email, "password": password, "csrf_token": _csrf_from(page.get_data(True))}
    data.update(extra)
    return client.post("/login", data=data)


def test_sign_in_with_a_wrong_password_is_refused(csrf_app: Flask, csrf_world: World) -> None:
    client = csrf_app.test_client()
    response = _sign_in(client, csrf_world.emails["editor"], "wrong password")
    assert response.status_code == 401
    assert "do not match" in response.get_data(True)
    assert client.get("/projects/").status_code == 302


def test_sign_in_sets_a_hardened_session_cookie(csrf_app: Flask, csrf_world: World) -> None:
    client = csrf_app.test_client()
    response = _sign_in(client, csrf_world.emails["editor"])
    assert response.status_code == 302
    cookie = next(
        v for k, v in response.headers.items() if k == "Set-Cookie" and "forge_session" in v
    )
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # development default; production turns it on
    assert client.get("/projects/").status_code == 200


def test_secure_cookies_when_configured(app_config: dict[str, Any], password_hash: str) -> None:
    app = create_app({**app_config, "FORGE_COOKIE_SECURE": "true"})
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["REMEMBER_COOKIE_SECURE"] is True
    response = app.test_client().get("/login")
    assert "max-age" in response.headers["Strict-Transport-Security"]


def test_security_headers_keep_what_a_view_set(app_config: dict[str, Any]) -> None:
    app = create_app(app_config)

    @app.get("/framed")
    @public
    def framed() -> Any:
        response = app.make_response("<p>framed</p>")
        response.headers["x-frame-options"] = "SAMEORIGIN"  # any case: the same header
        response.headers["Cache-Control"] = "max-age=60"
        return response

    response = app.test_client().get("/framed")
    assert response.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert response.headers.getlist("Cache-Control") == ["max-age=60"]
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in response.headers  # not configured


def test_sign_in_only_redirects_within_the_site(csrf_app: Flask, csrf_world: World) -> None:
    client = csrf_app.test_client()
    page = client.get("/login?next=//evil.example/x")
    data = {
        "email": csrf_world.emails["editor"],
        "password": PASSWORD,
        "csrf_token": _csrf_from(page.get_data(True)),
    }
    response = client.post("/login?next=//evil.example/x", data=data)
    assert response.headers["Location"] == "/projects/"
    client.post("/logout", data={"csrf_token": _csrf_from(client.get("/account").get_data(True))})
    page = client.get("/login")
    data["csrf_token"] = _csrf_from(page.get_data(True))
    response = client.post("/login?next=/orgs/", data=data)
    assert response.headers["Location"] == "/orgs/"


def test_sign_in_is_rate_limited_per_account(csrf_app: Flask, csrf_world: World) -> None:
    client = csrf_app.test_client()
    email = csrf_world.emails["viewer"]
    for _ in range(5):
        assert _sign_in(client, email, "wrong password").status_code == 401
    # Even the right password is refused now, without being checked.
    response = _sign_in(client, email)
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.get_data(True)
    assert int(response.headers["Retry-After"]) > 0
    # Another account from the same address is still fine.
    assert _sign_in(csrf_app.test_client(), csrf_world.emails["editor"]).status_code == 302
    with csrf_app.app_context():
        assert db.session.query(LoginAttempt).filter_by(email=email).count() == 5


def test_logout_needs_post_and_ends_the_session(csrf_app: Flask, csrf_world: World) -> None:
    client = csrf_app.test_client()
    _sign_in(client, csrf_world.emails["editor"])
    assert client.get("/logout").status_code == 405
    token = _csrf_from(client.get("/account").get_data(True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/projects/").status_code == 302


def test_passwords_are_hashed_with_scrypt(app: Flask, world: World) -> None:
    from forge_app.models import User

    with app.app_context():
        user = db.session.get(User, world.users["editor"])
        assert user is not None
        assert user.password_hash.startswith("scrypt:")
        assert PASSWORD not in user.password_hash


def test_change_password(client_as: Any, app: Flask, world: World) -> None:
    client = client_as("editor")
    response = client.post(
        "/account",
        data={
            "current": "nope",
            "new": "a brand new passphrase",
            "confirm": "a brand new passphrase",
        },
    )
    assert "not your current password" in response.get_data(True)
    response = client.post(
        "/account",
        data={
            "current": PASSWORD,
            "new": "a brand new passphrase",
            "confirm": "a brand new passphrase",
        },
    )
    assert response.status_code == 302
    from werkzeug.security import check_password_hash

    from forge_app.models import User

    with app.app_context():
        user = db.session.get(User, world.users["editor"])
        assert user is not None and check_password_hash(
            user.password_hash, "a brand new passphrase"
        )


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.forms.append({"method": (attributes.get("method") or "get").lower(), "inputs": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"].append(attributes.get("name"))


def test_every_post_route_refuses_a_request_without_csrf_token(
    csrf_app: Flask, csrf_world: World
) -> None:
    add_prompts(csrf_app, csrf_world, SAMPLE_PROMPTS)
    lock_version(csrf_app, csrf_world)
    client = csrf_app.test_client()
    assert _sign_in(client, csrf_world.emails["owner"]).status_code == 302
    refused = 0
    for rule in csrf_app.url_map.iter_rules():
        if "POST" not in (rule.methods or ()) or rule.endpoint.startswith("api."):
            continue
        values = {
            "project_id": csrf_world.project_id,
            "set_id": csrf_world.set_id,
            "version": "0.1.0",
            "key": "welcome.message",
            "org_slug": csrf_world.org_slug,
            "membership_id": 1,
            "connection_id": 1,
            "invitation_id": 1,
        }
        with csrf_app.test_request_context():
            from flask import url_for

            url = url_for(rule.endpoint, **{k: values.get(k, "x") for k in rule.arguments})
        response = client.post(url, data={"name": "x", "revision": "1"})
        if url.startswith("/api/"):
            # Bearer-token APIs: the session cookie does not authorise them, so no CSRF.
            assert response.status_code == 401, (url, response.status_code)
            continue
        assert response.status_code == 400, (url, response.status_code)
        assert "security token" in response.get_data(True)
        refused += 1
    assert refused >= 15
    # Still signed in, and nothing changed: the set is still LOCKED at 0.1.0.
    page = client.get(f"/projects/{csrf_world.project_id}/sets/{csrf_world.set_id}")
    assert page.status_code == 200 and "Locked" in page.get_data(True)


def test_every_rendered_post_form_carries_a_csrf_token(csrf_app: Flask, csrf_world: World) -> None:
    add_prompts(csrf_app, csrf_world, SAMPLE_PROMPTS)
    lock_version(csrf_app, csrf_world)
    client = csrf_app.test_client()
    _sign_in(client, csrf_world.emails["owner"])
    base = f"/projects/{csrf_world.project_id}"
    set_url = f"{base}/sets/{csrf_world.set_id}"
    pages = [
        "/projects/",
        f"/orgs/{csrf_world.org_slug}",
        base,
        f"{base}/settings",
        set_url,
        f"{set_url}/versions/0.1.0",
        f"{set_url}/prompts/welcome.message",
        f"{set_url}/settings",
    ]
    # and the draft-editing pages
    pages_after_unlock = [f"{set_url}/prompts/new", f"{set_url}/import", f"{set_url}/submit"]
    post_forms = 0

    def check(url: str) -> None:
        """Every POST form on the page and on the confirmation pages it links to."""
        nonlocal post_forms
        page = client.get(url).get_data(True)
        confirmations = re.findall(r'href="(/confirm/[^"]+)"', page)
        for text in [page, *(client.get(html.unescape(c)).get_data(True) for c in confirmations)]:
            parser = _Forms()
            parser.feed(text)
            for form in parser.forms:
                if form["method"] == "post":
                    assert "csrf_token" in form["inputs"], url
                    post_forms += 1

    for url in pages:
        check(url)
    unlock = next(
        c
        for c in re.findall(r'href="(/confirm/[^"]+)"', client.get(set_url).get_data(True))
        if "/unlock" in client.get(html.unescape(c)).get_data(True)
    )
    confirmation = client.get(html.unescape(unlock)).get_data(True)
    token = _csrf_from(confirmation)
    revision = re.search(r'name="revision" value="(\d+)"', confirmation)
    assert revision is not None
    client.post(f"{set_url}/unlock", data={"csrf_token": token, "revision": revision.group(1)})
    for url in pages_after_unlock:
        check(url)
    assert post_forms >= 12


def test_preview_endpoint_needs_the_csrf_header(csrf_app: Flask, csrf_world: World) -> None:
    client = csrf_app.test_client()
    _sign_in(client, csrf_world.emails["editor"])
    url = f"/projects/{csrf_world.project_id}/sets/{csrf_world.set_id}/prompts/preview"
    body = {"kind": "text", "template": "Hi {{ name }}", "samples": {"name": "Ada"}}
    assert client.post(url, json=body).status_code == 400
    token = _csrf_from(client.get("/account").get_data(True))
    response = client.post(url, json=body, headers={"X-CSRFToken": token})
    assert response.status_code == 200
    assert response.get_json()["messages"][0]["content"] == "Hi Ada"


def test_security_headers_on_every_page(client_as: Any, world: World) -> None:
    client = client_as("editor")
    for url in ("/projects/", "/login", f"/projects/{world.project_id}", "/nope"):
        headers = client.get(url).headers
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"


def test_pages_have_no_inline_scripts_or_styles(client_as: Any, world: World, set_url: str) -> None:
    client = client_as("owner")
    for url in ("/projects/", f"/projects/{world.project_id}", set_url, f"{set_url}/prompts/new"):
        html = client.get(url).get_data(True)
        assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, url
        assert " style=" not in html and "<style" not in html, url
        assert re.search(r"\son[a-z]+=", html) is None, url  # no inline event handlers


def test_friendly_404_and_500_without_stack_traces(
    app_config: dict[str, Any], world: World
) -> None:
    app = create_app({**app_config, "TESTING": False, "PROPAGATE_EXCEPTIONS": False})

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals /etc/passwd")

    from tests.forge_app.conftest import login

    client = login(app.test_client(), world.users["editor"])
    response = client.get("/boom")
    body = response.get_data(True)
    assert response.status_code == 500
    assert "Something went wrong" in body
    assert "Traceback" not in body and "secret internals" not in body
    response = client.get("/projects/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404 and "Not found" in response.get_data(True)
    with client.get("/static/nope.css") as missing:
        assert missing.status_code == 404
    json_404 = client.get("/nope", headers={"Accept": "application/json"})
    assert json_404.status_code == 404 and "error" in json_404.get_json()


def test_static_files_are_public(app: Flask) -> None:
    with app.test_client().get("/static/forge.css") as response:
        assert response.status_code == 200 and response.mimetype == "text/css"
