"""Browser-test fixtures: a live FORGE on 127.0.0.1 (Werkzeug in a thread) and Chromium.

    def test_x(live_forge, page):
        page.goto(live_forge.url + "/login")

Chromium is Debian's (/usr/bin/chromium) driven by Playwright; screenshots go to
``test-output/e2e/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forge_app import create_app
from forge_app.extensions import db
from forge_app.models import Role
from forge_app.schema import upgrade_database
from forge_app.services.users import add_member, create_org, create_user, hash_password
from tests.servers import served

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "e2e password for tests"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "e2e"


@dataclass
class LiveForge:
    url: str
    app: Any
    emails: dict[str, str]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        from tests.servers import missing_tool

        missing_tool(f"Chromium is not installed at {CHROMIUM} (apt install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def live_forge(tmp_path: Path) -> Iterator[LiveForge]:
    """A FORGE with org "acme" (editor, reviewer, owner), served on a free port."""

    url = f"sqlite:///{tmp_path / 'forge.db'}"
    upgrade_database(url)
    app = create_app(
        {
            "FORGE_DATABASE_URL": url,
            "FORGE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FORGE_SECRET_KEY": "e2e-secret-" + "k" * 32,
            "FORGE_DATA_KEY": "e2e-data-key",
        }
    )
    emails = {}
    with app.app_context():
        org = create_org(db.session, "Acme", "acme")
        password_hash = hash_password(PASSWORD)
        for role in ("editor", "reviewer", "owner"):
            email = f"{role}@acme.test"
            user = create_user(
                db.session, email, name=f"{role.title()} Person", password_hash=password_hash
            )
            add_member(db.session, org, user, Role.parse(role))
            emails[role] = email
        db.session.commit()
    with served(app) as url:
        yield LiveForge(url, app, emails)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
