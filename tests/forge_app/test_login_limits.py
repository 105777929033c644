"""Sign-in throttling (issue 9, findings 5 and 6): progressive delays per account, address and
device, counted atomically before the password check, and proxy-aware client addresses.

The race tests run the FORGE in a real threaded HTTP server on a file SQLite database and on a
real PostgreSQL (pgserver), with parallel requests released together by a barrier.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask

from forge_app import create_app
from forge_app.extensions import db
from forge_app.models import LoginAttempt, User, utcnow
from forge_app.services.users import RateLimited, ThrottlePolicy, authenticate
from tests.forge_app.conftest import PASSWORD, World
from tests.servers import served as serve_app

WRONG = "not the password"


def _sign_in(client: Any, email: str, password: str = PASSWORD, **environ: Any) -> Any:
    return client.post(
        "/login", data={"email": email, "password": password}, environ_base=environ or None
    )


def _at(address: str) -> dict[str, str]:
    return {"REMOTE_ADDR": address}


# ----------------------------------------------------------------------- the policy


def test_failures_earn_doubling_waits_up_to_a_cap(app: Flask, world: World) -> None:
    policy = ThrottlePolicy(
        free_failures=3,
        free_failures_per_address=100,
        first_delay=timedelta(seconds=10),
        max_delay=timedelta(seconds=40),
    )
    email = world.emails["viewer"]
    start = utcnow()
    with app.app_context():

        def attempt(seconds: int, password: str = WRONG) -> User | None:
            return authenticate(
                db.session,
                email,
                password,
                ip="10.1.1.1",
                policy=policy,
                now=start + timedelta(seconds=seconds),
            )

        for _ in range(3):
            assert attempt(0) is None
        waits = []
        clock = 0
        for _ in range(4):
            with pytest.raises(RateLimited) as limited:
                attempt(clock, PASSWORD)  # even the right password waits, unchecked
            waits.append(limited.value.retry_after)
            clock += limited.value.retry_after
            assert attempt(clock) is None
        assert waits == [10, 20, 40, 40]
        with pytest.raises(RateLimited, match="Try again in 40 seconds"):
            attempt(clock)
        assert db.session.query(LoginAttempt).filter_by(email=email).count() == 7
        # Quiet for longer than reset_after: the failures are forgotten.
        assert attempt(clock + 13 * 3600, PASSWORD) is not None


def test_a_success_clears_the_account_but_not_the_address(app: Flask, world: World) -> None:
    policy = ThrottlePolicy(free_failures=2, free_failures_per_address=3)
    with app.app_context():
        # failures against two accounts from one address, then the attacker's own account
        for name in ("viewer", "editor"):
            assert (
                authenticate(db.session, world.emails[name], WRONG, ip="10.9.9.9", policy=policy)
                is None
            )
        owner = authenticate(
            db.session, world.emails["owner"], PASSWORD, ip="10.9.9.9", policy=policy
        )
        assert owner is not None
        assert (
            authenticate(db.session, world.emails["admin"], WRONG, ip="10.9.9.9", policy=policy)
            is None
        )
        # three failures from this address: the next stranger's attempt from it waits
        with pytest.raises(RateLimited):
            authenticate(
                db.session, world.emails["reviewer"], PASSWORD, ip="10.9.9.9", policy=policy
            )
        # the owner signed in from here before: a known address is not slowed down by it
        assert authenticate(
            db.session, world.emails["owner"], PASSWORD, ip="10.9.9.9", policy=policy
        )


# ----------------------------------------------------------------------- strangers


def test_a_strangers_failures_do_not_lock_the_owner_out(app: Flask, world: World) -> None:
    """Finding 6: the right password from a browser or an address that signed in before still
    signs in while a stranger hammers the account; strangers wait."""
    email = world.emails["editor"]
    laptop = app.test_client()
    assert _sign_in(laptop, email, **_at("192.0.2.10")).status_code == 302
    device_cookie = laptop.get_cookie("forge_device", path="/login")
    assert device_cookie is not None and device_cookie.http_only
    laptop.post("/logout")

    stranger = app.test_client()
    statuses = Counter(
        _sign_in(stranger, email, WRONG, **_at("198.51.100.66")).status_code for _ in range(12)
    )
    assert statuses == {401: 5, 429: 7}
    page = _sign_in(stranger, email, PASSWORD, **_at("198.51.100.67"))
    assert page.status_code == 429 and "Too many failed sign-in attempts" in page.get_data(True)
    assert int(page.headers["Retry-After"]) > 0

    # The owner's browser (device cookie), even from a new address, signs in.
    assert _sign_in(laptop, email, **_at("203.0.113.50")).status_code == 302
    laptop.post("/logout")
    # A new browser at the address the owner signed in from before, too.
    assert _sign_in(app.test_client(), email, **_at("192.0.2.10")).status_code == 302


def test_a_device_cookie_of_another_account_does_not_help(app: Flask, world: World) -> None:
    browser = app.test_client()
    assert _sign_in(browser, world.emails["outsider"], **_at("192.0.2.20")).status_code == 302
    browser.post("/logout")
    for _ in range(5):
        assert (
            _sign_in(browser, world.emails["viewer"], WRONG, **_at("192.0.2.21")).status_code == 401
        )
    assert _sign_in(browser, world.emails["viewer"], **_at("192.0.2.21")).status_code == 429
    forged = app.test_client()
    forged.set_cookie("forge_device", "eyJhIjoiMSIsImQiOiJ4In0.forged", path="/login")
    assert _sign_in(forged, world.emails["viewer"], **_at("192.0.2.22")).status_code == 429


@pytest.fixture
def proxied_app(app_config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app({**app_config, "FORGE_TRUSTED_PROXIES": "1"})
    yield app
    with app.app_context():
        db.engine.dispose()


def test_behind_a_proxy_each_client_has_its_own_address(proxied_app: Flask, world: World) -> None:
    """Finding 6: every request comes from the proxy's address; with FORGE_TRUSTED_PROXIES
    the forwarded address counts, so a stranger's burst does not stop everybody."""
    stranger, user = proxied_app.test_client(), proxied_app.test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for i in range(40):
        stranger.post(
            "/login",
            data={"email": f"nobody{i}@example.com", "password": WRONG},
            headers={"X-Forwarded-For": "198.51.100.66"},
            environ_base=proxy,
        )
    assert (
        stranger.post(
            "/login",
            data={"email": world.emails["viewer"], "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.66"},
            environ_base=proxy,
        ).status_code
        == 429
    )
    response = user.post(
        "/login",
        data={"email": world.emails["viewer"], "password": PASSWORD},
        headers={"X-Forwarded-For": "192.0.2.7", "X-Forwarded-Proto": "https"},
        environ_base=proxy,
    )
    assert response.status_code == 302
    with proxied_app.app_context():
        ips = {row.ip for row in db.session.query(LoginAttempt)}
    assert ips == {"198.51.100.66", "192.0.2.7"}


def test_forwarded_headers_are_ignored_without_trusted_proxies(app: Flask, world: World) -> None:
    client = app.test_client()
    client.post(
        "/login",
        data={"email": world.emails["viewer"], "password": WRONG},
        headers={"X-Forwarded-For": "192.0.2.99"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    with app.app_context():
        assert {row.ip for row in db.session.query(LoginAttempt)} == {"10.0.0.1"}


# ----------------------------------------------------------------------- races


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app in a real threaded HTTP server on 127.0.0.1."""
    with serve_app(app) as url:
        yield url


def _parallel_sign_ins(url: str, email: str, passwords: list[str]) -> Counter[int]:
    barrier = threading.Barrier(len(passwords))
    statuses: list[int] = []
    lock = threading.Lock()

    def one(password: str) -> None:
        with requests.Session() as http:
            barrier.wait()
            response = http.post(
                f"{url}/login",
                data={"email": email, "password": password},
                allow_redirects=False,
                timeout=120,
            )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=one, args=(password,)) for password in passwords]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(statuses)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_parallel_sign_ins_check_no_more_passwords_than_allowed(
    app: Flask, world: World, served: str
) -> None:
    """Finding 5: forty parallel attempts for one account; five passwords are checked."""
    email = world.emails["viewer"]
    statuses = _parallel_sign_ins(served, email, [WRONG] * 40)
    assert statuses == {401: 5, 429: 35}
    with app.app_context():
        assert db.session.query(LoginAttempt).filter_by(email=email).count() == 5
    # The right password is not checked now either (this client is a stranger).
    assert _parallel_sign_ins(served, email, [PASSWORD]) == {429: 1}
