"""Every page fits its screen, on a desktop and on a phone: long prompt ids, hashes and
ACCESS_TOKEN ids wrap instead of widening the page, and no page logs a script error or a CSP
violation. (Found by the FORGE review: hidden table labels and long ids pushed pages sideways.)"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from forge_app.extensions import db
from forge_app.models import Organisation, Project, PromptSet, Role, User
from forge_app.services import publishing
from forge_app.services.drafts import replace_prompts
from forge_app.services.tokens import create_token
from forge_app.services.versions import latest_release
from forge_app.services.workflow import approve, submit
from tests.e2e.conftest import PASSWORD, LiveForge

pytestmark = pytest.mark.e2e

LONG_KEY = "a" * 60 + "." + "b_c" * 22  # 127 characters, no place to break
LONG_NAME = "Ünïcode-prøject-✓-" + "x" * 100  # 118 characters, no space


def _seed(forge: LiveForge) -> tuple[uuid.UUID, uuid.UUID]:
    """A project whose set has a long-id prompt, a locked version, a token and a publication."""
    with forge.app.app_context():
        session = db.session
        org = session.query(Organisation).filter_by(slug="acme").one()
        users = {u.email: u for u in session.query(User)}
        editor, reviewer = users[forge.emails["editor"]], users[forge.emails["reviewer"]]
        owner = users[forge.emails["owner"]]
        project = Project(org_id=org.id, name=LONG_NAME, description="Long ids")
        session.add(project)
        session.flush()
        prompt_set = PromptSet(project_id=project.id, name="Set-" + LONG_NAME, description="")
        session.add(prompt_set)
        session.flush()
        prompts = {
            LONG_KEY: {"template": "Hello {{ name }} — ünïcode ✓", "metadata": {}},
            "support.greeting": {"template": "Hi {{ name }}", "metadata": {"tags": ["x"]}},
        }
        replace_prompts(session, prompt_set, prompts, editor, remove_missing=True)
        submit(
            session,
            prompt_set,
            editor,
            role=Role.EDITOR,
            bump="minor",
            changelog="First",
            expected_revision=prompt_set.revision,
        )
        approve(
            session, prompt_set, reviewer, role=Role.REVIEWER, expected_revision=prompt_set.revision
        )
        session.commit()
        create_token(project, "token-" + LONG_NAME, user=owner)
        session.commit()
        publishing.ensure_default_channels(project)
        channel = publishing.get_channel(project, "production")
        version = latest_release(session, prompt_set)
        assert channel is not None and version is not None
        publishing.publish_version(version, channel, user=owner)
        session.commit()
        return project.id, prompt_set.id


def _pages(project_id: uuid.UUID, set_id: uuid.UUID) -> list[str]:
    base = f"/projects/{project_id}"
    sets = f"{base}/sets/{set_id}"
    return [
        "/projects/",
        base,
        sets,
        f"{sets}/versions",
        f"{sets}/versions/0.1.0",
        f"{sets}/diff?from=0.1.0&to=draft",
        f"{sets}/prompts/{LONG_KEY}",
        f"{base}/search?q=aaaa",
        f"{base}/audit",
        f"{base}/channels",
        f"{base}/channels/production",
        f"{base}/channels/production/publications/1",
        f"{base}/tokens",
        f"{base}/instances",
        f"{base}/settings",
        "/orgs/acme",
    ]


@pytest.mark.parametrize("width", [1360, 390])
def test_pages_fit_the_screen_without_script_errors(
    live_forge: LiveForge, browser: Any, screenshots: Path, width: int
) -> None:
    project_id, set_id = _seed(live_forge)
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on(
        "console",
        lambda m: (
            problems.append(f"console: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        page.goto(f"{live_forge.url}/login")
        page.fill("#email", live_forge.emails["owner"])
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/projects/$"))
        for path in _pages(project_id, set_id):
            response = page.goto(live_forge.url + path)
            assert response is not None and response.status == 200, path
            wide = page.evaluate("document.documentElement.scrollWidth")
            if wide > width:
                problems.append(f"{path} is {wide}px wide on a {width}px screen")
        if width < 860:
            # On a phone the navigation is a bar on top, as tall as its content, even on a
            # short page (it used to stretch to fill the screen).
            page.goto(f"{live_forge.url}/forges/")
            bar = page.evaluate("document.querySelector('.sidebar').getBoundingClientRect().height")
            if bar > 200:
                problems.append(f"the navigation bar is {bar}px tall on a short page")
        for name, path in [
            ("projects", "/projects/"),
            ("audit", f"/projects/{project_id}/audit"),
            ("long-id", f"/projects/{project_id}/sets/{set_id}"),
            ("channel", f"/projects/{project_id}/channels/production"),
            ("tokens", f"/projects/{project_id}/tokens"),
        ]:
            page.goto(live_forge.url + path)
            page.screenshot(path=str(screenshots / f"layout-{name}-{width}.png"), full_page=True)
    finally:
        context.close()
    assert problems == []
