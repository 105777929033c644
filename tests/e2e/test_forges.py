"""The Forges menu in a real browser: the FORGE peers with itself (as the demo's "Demo peer"),
so browsing, connecting, the read-only indicators and copying a version all run end to end."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from forge_app.config import KnownForge
from forge_app.extensions import db
from forge_app.models import AuditEvent, Organisation, Project, PromptSet, Role, SetStatus, User
from forge_app.peering import add_known_forge
from forge_app.services.api_tokens import create_api_token
from forge_app.services.drafts import replace_prompts
from forge_app.services.workflow import approve, submit
from tests.e2e.conftest import PASSWORD, LiveForge

pytestmark = pytest.mark.e2e

TOKEN_ENV = "E2E_PEER_TOKEN"


def sign_in(page: Any, forge: LiveForge, role: str) -> None:
    page.goto(f"{forge.url}/login")
    page.fill("#email", forge.emails[role])
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/projects/$"))


def _peer_with_itself(forge: LiveForge, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project with a locked version, a read token of the reviewer, and this FORGE as peer."""
    with forge.app.app_context():
        session = db.session
        org = session.scalar(select(Organisation).where(Organisation.slug == "acme"))
        editor = session.scalar(select(User).where(User.email == forge.emails["editor"]))
        reviewer = session.scalar(select(User).where(User.email == forge.emails["reviewer"]))
        assert org is not None and editor is not None and reviewer is not None
        remote = Project(org_id=org.id, name="Partner bot <i>v2</i>", description="")
        home = Project(org_id=org.id, name="Home app", description="")
        session.add_all([remote, home])
        session.flush()
        prompt_set = PromptSet(project_id=remote.id, name="Support", status=SetStatus.LIVE.value)
        session.add(prompt_set)
        session.flush()
        prompts = {"support.hello": {"template": "Hello {{ name }}", "metadata": {}}}
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
            session,
            prompt_set,
            reviewer,
            role=Role.REVIEWER,
            expected_revision=prompt_set.revision,
        )
        _, token = create_api_token(session, reviewer, "Self peer", scope="read", days=7)
        session.commit()
    monkeypatch.setenv(TOKEN_ENV, token)
    add_known_forge(forge.app, KnownForge("Self peer", forge.url, TOKEN_ENV))


def test_browse_connect_indicators_and_copy(
    live_forge: LiveForge, page: Any, screenshots: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _peer_with_itself(live_forge, monkeypatch)
    sign_in(page, live_forge, "owner")

    page.click("nav.sidebar >> text=Forges")
    page.wait_for_url(re.compile(r".*/forges/$"))
    status = page.locator('[data-forge="self-peer"] [data-forge-status]')
    assert status.get_attribute("data-forge-status") == "reachable"

    page.click("text=Self peer")
    row = page.locator("tr", has_text="Partner bot <i>v2</i>")  # escaped: shown as text
    assert row.locator("td").nth(1).inner_text() == "1"  # its prompt count
    row.locator("button", has_text="Connect").click()
    page.wait_for_url(re.compile(r".*/forges/connected/\d+$"))
    header = page.locator("[data-remote-project]").first
    assert "🔗" in header.inner_text()
    assert page.locator("[data-readonly-badge]").inner_text() == "Read-only"
    assert page.locator("[data-remote-source]").inner_text().startswith("from Self peer")
    tinted = header.evaluate("e => getComputedStyle(e).backgroundColor")
    plain = page.evaluate(
        "() => { const d = document.createElement('div'); d.className = 'card';"
        " document.body.append(d); return getComputedStyle(d).backgroundColor; }"
    )
    assert tinted != plain
    main = page.locator("main")
    for control in ("Edit", "Publish", "Tokens", "New prompt", "Submit"):
        assert main.get_by_role("button", name=control).count() == 0
        assert main.get_by_role("link", name=control).count() == 0
    page.screenshot(path=str(screenshots / "forges-connected.png"))

    page.click("text=Support")
    page.click("a:text-is('0.1.0')")
    page.wait_for_url(re.compile(r".*/versions/0\.1\.0$"))
    assert "support.hello" in page.locator("main").inner_text()
    page.select_option("#copy-project", label="Acme / Home app")
    page.fill("#copy-name", "Support from partner")
    page.click("button:text('Copy into a local set')")
    page.wait_for_url(re.compile(r".*/projects/[0-9a-f-]+/sets/[0-9a-f-]+$"))
    assert "Copied version 0.1.0" in page.locator("main").inner_text()

    page.click("nav.sidebar >> text=Forges")
    card = page.locator("li.remote-project").first
    assert "Read-only" in card.inner_text() and "from Self peer" in card.inner_text()
    page.screenshot(path=str(screenshots / "forges-index.png"))

    with live_forge.app.app_context():
        actions = set(db.session.scalars(select(AuditEvent.action)))
        assert {"remote_project.connect", "prompt_set.copy"} <= actions
