"""Sessions end on the server (issue 9, finding 8): signing out revokes the session (a copied
cookie included), "Sign out everywhere" ends them all, and idle and absolute lifetimes hold."""

from __future__ import annotations

import time
import types
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import itsdangerous.timed
import pytest
from flask import Flask
from flask.testing import FlaskClient

from forge_app import create_app
from forge_app.extensions import db
from forge_app.models import AuditEvent, User
from forge_app.models.accounts import RevokedSession
from tests.forge_app.conftest import PASSWORD, World, login
from tests.forge_app.test_security import _csrf_from, _sign_in


@pytest.fixture(autouse=True)
def _close_csrf_app(request: pytest.FixtureRequest) -> Iterator[None]:
    """``csrf_app`` leaves its engine open; close its connections (PostgreSQL) after a test."""
    if "csrf_app" not in request.fixturenames:
        yield
        return
    app: Flask = request.getfixturevalue("csrf_app")
    yield
    with app.app_context():
        db.engine.dispose()


def _copy(app: Flask, source: FlaskClient, *names: str) -> FlaskClient:
    """A new client holding copies of ``source``'s cookies (what a thief would take)."""
    thief = app.test_client()
    for name in names:
        for path in ("/", "/login"):
            cookie = source.get_cookie(name, path=path)
            if cookie is not None:
                thief.set_cookie(name, cookie.value, path=path)
    return thief


def _plain_sign_in(client: FlaskClient, email: str, **extra: str) -> Any:
    """Sign in on an app without CSRF protection."""
    return client.post("/login", data={"email": email, "password": PASSWORD, **extra})


def _signed_in(client: FlaskClient) -> bool:
    response = client.get("/account")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def _sign_out(client: FlaskClient) -> None:
    token = _csrf_from(client.get("/account").get_data(True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_a_session_cookie_copied_before_sign_out_is_refused_after(
    csrf_app: Flask, csrf_world: World
) -> None:
    browser = csrf_app.test_client()
    assert _sign_in(browser, csrf_world.emails["editor"]).status_code == 302
    copy = _copy(csrf_app, browser, "forge_session")
    assert _signed_in(copy)
    _sign_out(browser)
    assert not _signed_in(browser)
    assert not _signed_in(copy)
    with csrf_app.app_context():
        (revoked,) = db.session.query(RevokedSession).all()
        assert revoked.user_id == csrf_world.users["editor"]
    # Signing in again gives a new session that works.
    assert _sign_in(browser, csrf_world.emails["editor"]).status_code == 302
    assert _signed_in(browser)


def test_a_remember_cookie_copied_before_sign_out_is_refused_after(
    csrf_app: Flask, csrf_world: World
) -> None:
    browser = csrf_app.test_client()
    response = _sign_in(browser, csrf_world.emails["editor"], remember="y")
    assert response.status_code == 302
    copy = _copy(csrf_app, browser, "remember_token")
    assert _signed_in(copy)  # the remember cookie alone signs in
    _sign_out(browser)
    assert not _signed_in(_copy(csrf_app, copy, "remember_token"))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_sign_out_everywhere_ends_every_session(csrf_app: Flask, csrf_world: World) -> None:
    email = csrf_world.emails["reviewer"]
    laptop, phone = csrf_app.test_client(), csrf_app.test_client()
    assert _sign_in(laptop, email).status_code == 302
    assert _sign_in(phone, email, remember="y").status_code == 302
    stolen = _copy(csrf_app, phone, "remember_token")
    other_user = csrf_app.test_client()
    assert _sign_in(other_user, csrf_world.emails["editor"]).status_code == 302

    page = laptop.get("/account").get_data(True)
    assert "Sign out everywhere" in page
    assert laptop.get("/account/sign-out-everywhere").status_code == 405
    assert laptop.post("/account/sign-out-everywhere").status_code == 400  # no CSRF token
    assert _signed_in(phone)
    response = laptop.post("/account/sign-out-everywhere", data={"csrf_token": _csrf_from(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    for client in (laptop, phone, stolen):
        assert not _signed_in(client)
    assert _signed_in(other_user)
    with csrf_app.app_context():
        (event,) = db.session.query(AuditEvent).filter_by(action="user.sign_out_everywhere")
        assert event.actor_id == csrf_world.users["reviewer"]
        assert event.object_id == str(csrf_world.users["reviewer"])
    assert _sign_in(phone, email).status_code == 302
    assert _signed_in(phone)


def test_sessions_end_at_the_absolute_lifetime(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = login(app.test_client(), world.users["editor"])
    assert _signed_in(client)
    start = time.time()
    now = [start]
    clock = types.SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr("forge_app.app.time", clock)
    monkeypatch.setattr(itsdangerous.timed, "time", clock)
    while now[0] + 50 * 60 < start + 12 * 3600:  # active all day: a request every 50 minutes
        now[0] += 50 * 60
        assert _signed_in(client), (now[0] - start) / 3600
    assert now[0] > start + 11 * 3600
    now[0] = start + 12.1 * 3600
    assert not _signed_in(client)


def test_sessions_end_after_the_idle_lifetime_unless_kept(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.permanent_session_lifetime == timedelta(minutes=60)
    plain, kept = app.test_client(), app.test_client()
    assert _plain_sign_in(plain, world.emails["editor"]).status_code == 302
    assert _plain_sign_in(kept, world.emails["viewer"], remember="y").status_code == 302
    start = time.time()
    clock = types.SimpleNamespace(time=lambda: start + 59 * 60)
    monkeypatch.setattr(itsdangerous.timed, "time", clock)
    assert _signed_in(plain) and _signed_in(kept)  # each request restarts the idle time
    clock.time = lambda: start + 59 * 60 + 61 * 60
    assert not _signed_in(plain)
    assert _signed_in(kept)  # "keep me signed in": only the absolute lifetime applies


def test_the_lifetimes_are_settings(app_config: dict[str, Any]) -> None:
    app = create_app(
        {**app_config, "FORGE_SESSION_IDLE_MINUTES": "15", "FORGE_SESSION_MAX_HOURS": "2"}
    )
    assert app.permanent_session_lifetime == timedelta(minutes=15)
    assert app.config["REMEMBER_COOKIE_DURATION"] == timedelta(hours=2)
    assert app.config["FORGE_SESSION_MAX_AGE"] == timedelta(hours=2)
    with app.app_context():
        db.engine.dispose()


def test_the_session_cookie_lasts_the_idle_lifetime(app: Flask, world: World) -> None:
    client = app.test_client()
    response = _plain_sign_in(client, world.emails["editor"])
    cookie = next(
        v for k, v in response.headers.items() if k == "Set-Cookie" and "forge_session" in v
    )
    assert "Expires=" in cookie
    session_cookie = client.get_cookie("forge_session")
    assert session_cookie is not None and session_cookie.expires is not None
    lifetime = session_cookie.expires.timestamp() - time.time()
    assert 55 * 60 < lifetime <= 60 * 60 + 5


def test_a_changed_password_ends_other_sessions_with_their_remember_cookies(
    app: Flask, world: World
) -> None:
    phone = app.test_client()
    assert _plain_sign_in(phone, world.emails["editor"], remember="y").status_code == 302
    stolen = _copy(app, phone, "remember_token")
    laptop = login(app.test_client(), world.users["editor"])
    new = "a brand new passphrase"
    response = laptop.post("/account", data={"current": PASSWORD, "new": new, "confirm": new})
    assert response.status_code == 302
    assert _signed_in(laptop)
    assert not _signed_in(phone) and not _signed_in(stolen)
    with app.app_context():
        user = db.session.get(User, world.users["editor"])
        assert user is not None and user.session_generation == 0
