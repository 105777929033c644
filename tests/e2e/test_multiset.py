"""One channel, two prompt sets, in Chromium (issue 8): the owner publishes *Support bot* and
*Checkout helper* to ``production`` from the FORGE, the example application
(``examples/live_app.py``, a separate process embedding ``anvil_client`` and polling the FORGE's
own ``/store``) renders prompts of both, the owner removes one set on its confirmation page
and then rolls the channel back, and the application follows each step."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from forge_app.extensions import db
from forge_app.models import Organisation, Project, PromptSet, Role, User
from forge_app.services import publishing
from forge_app.services.drafts import replace_prompts
from forge_app.services.tokens import create_token
from forge_app.services.workflow import approve, submit
from tests.e2e.conftest import PASSWORD, LiveForge

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "live_app.py"

SUPPORT = {"support.greeting": {"template": "Hi {{ customer_name }}, this is {{ product }}."}}
CHECKOUT = {
    "checkout.upsell": {
        "template": "With {{ cart_items }}, try something from {{ catalogue }}.",
    }
}
GREETING = "Hi Ada, this is Acme Cloud."
UPSELL = "With a laptop, try something from Acme accessories."
UPSELL_FALLBACK = "(fallback: not published)"


def sign_in(page: Any, forge: LiveForge, role: str) -> None:
    page.goto(f"{forge.url}/login")
    page.fill("#email", forge.emails[role])
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/projects/$"))


def seed(forge: LiveForge) -> tuple[uuid.UUID, dict[str, uuid.UUID], str, str]:
    """A project with two LOCKED sets (0.1.0 each), nothing published, and an ACCESS_TOKEN.
    Returns (project id, set ids by name, token text, public key)."""
    with forge.app.app_context():
        session = db.session
        org = session.query(Organisation).filter_by(slug="acme").one()
        users = {u.email.split("@")[0]: u for u in session.query(User).all()}
        owner, editor, reviewer = users["owner"], users["editor"], users["reviewer"]
        project = Project(org_id=org.id, name="Acme Cloud", description="")
        session.add(project)
        session.flush()
        sets: dict[str, uuid.UUID] = {}
        for name, prompts in (("Support bot", SUPPORT), ("Checkout helper", CHECKOUT)):
            prompt_set = PromptSet(project_id=project.id, name=name, description="")
            session.add(prompt_set)
            session.flush()
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
            sets[name] = prompt_set.id
        _, token = create_token(project, "example app", user=owner)
        session.commit()
        return project.id, sets, token, publishing.forge_public_key_text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def example_app(tmp_path: Path) -> Iterator[Any]:
    """Starts ``examples/live_app.py`` for a project; stopped by its PID afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(forge: LiveForge, project_id: uuid.UUID, token: str, public_key: str) -> str:
        config = tmp_path / "anvil.toml"
        config.write_text(
            f'store = "{forge.url}/store"\n'
            f'project_id = "{project_id}"\n'
            'channel = "production"\n'
            f'trusted_keys = ["{public_key}"]\n'
            'access_token_env = "ANVIL_ACCESS_TOKEN"\n'
            f'cache_dir = "{tmp_path / "cache"}"\n'
            "poll_interval = 1\n"
            f'forge_url = "{forge.url}"\n',
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
        env.update({"ANVIL_ACCESS_TOKEN": token, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--config", str(config), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "Example app on" in line, line
        return f"http://127.0.0.1:{port}/"

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()  # this PID only
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def publish_from_the_version_page(page: Any, set_url: str) -> Any:
    """Publish to LIVE → production → the confirmation (returned as its plan table)."""
    page.goto(f"{set_url}/versions/0.1.0")
    page.click("text=Publish to LIVE")
    page.check("input[name=channel][value=production]")
    page.click("button:has-text('Review and publish')")
    plan = page.locator("#publish-plan")
    expect(plan).to_be_visible()
    return plan


def test_two_sets_on_production_removed_and_rolled_back(
    live_forge: LiveForge,
    page: Any,
    browser: Any,
    screenshots: Path,
    example_app: Any,
) -> None:
    forge = live_forge
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    project_id, sets, token, public_key = seed(forge)
    project_url = f"{forge.url}/projects/{project_id}"
    example_url = example_app(forge, project_id, token, public_key)
    app_page = browser.new_page()  # the running application, in its own tab
    try:
        check_the_flow(forge, page, app_page, screenshots, project_url, sets, example_url, errors)
    finally:
        app_page.close()


def check_the_flow(
    forge: LiveForge,
    page: Any,
    app_page: Any,
    screenshots: Path,
    project_url: str,
    sets: dict[str, uuid.UUID],
    example_url: str,
    errors: list[str],
) -> None:

    # The owner publishes both sets to production, one after the other.
    sign_in(page, forge, "owner")
    plan = publish_from_the_version_page(page, f"{project_url}/sets/{sets['Support bot']}")
    expect(plan.locator("tr[data-change=added]")).to_contain_text("Support bot")
    page.click("button:has-text('Publish to production')")
    page.wait_for_url(re.compile(r".*/channels/production/publications/1$"))

    plan = publish_from_the_version_page(page, f"{project_url}/sets/{sets['Checkout helper']}")
    expect(plan.locator("tr[data-change=unchanged]")).to_contain_text("Support bot")
    expect(plan.locator("tr[data-change=added]")).to_contain_text("Checkout helper")
    page.screenshot(path=str(screenshots / "multiset-01-confirm.png"), full_page=True)
    page.click("button:has-text('Publish to production')")
    page.wait_for_url(re.compile(r".*/channels/production/publications/2$"))

    # The example application renders prompts of both sets (its page reloads itself).
    app_page.goto(example_url)
    expect(app_page.locator("#sets li")).to_have_count(2, timeout=30_000)
    expect(app_page.locator("#sets")).to_contain_text("Support bot")
    expect(app_page.locator("#sets")).to_contain_text("Checkout helper")
    expect(app_page.locator('[data-prompt="support.greeting"]')).to_contain_text(GREETING)
    expect(app_page.locator('[data-prompt="checkout.upsell"]')).to_contain_text(UPSELL)
    app_page.screenshot(path=str(screenshots / "multiset-02-example.png"), full_page=True)

    # The channel page lists both sets, and the project overview says what production serves.
    page.goto(f"{project_url}/channels/production")
    served = page.locator("#channel-sets tbody tr")
    expect(served).to_have_count(2)
    expect(page.locator("#channel-history")).to_contain_text("Checkout helper added")
    page.goto(project_url)
    production = page.locator('#channel-overview tr[data-channel="production"]')
    expect(production).to_contain_text("Support bot")
    expect(production).to_contain_text("Checkout helper")
    page.screenshot(path=str(screenshots / "multiset-03-overview.png"), full_page=True)

    # Remove Checkout helper: a confirmation page (no window.confirm), then the removal.
    page.goto(f"{project_url}/channels/production")
    page.on("dialog", lambda dialog: errors.append(f"unexpected dialog: {dialog.message}"))
    page.locator(f'#channel-sets tr[data-set="{sets["Checkout helper"]}"]').locator(
        "text=Remove…"
    ).click()
    expect(page.locator("h1")).to_contain_text("Remove Checkout helper from production?")
    page.screenshot(path=str(screenshots / "multiset-04-remove.png"), full_page=True)
    page.click("button:has-text('Remove Checkout helper from production')")
    page.wait_for_url(re.compile(r".*/channels/production$"))
    expect(page.locator(".flash")).to_contain_text("Checkout helper removed")
    expect(served).to_have_count(1)
    expect(served).to_contain_text("Support bot")

    expect(app_page.locator("#sets li")).to_have_count(1, timeout=30_000)
    expect(app_page.locator('[data-prompt="checkout.upsell"]')).to_contain_text(UPSELL_FALLBACK)
    expect(app_page.locator('[data-prompt="support.greeting"]')).to_contain_text(GREETING)

    # Roll the channel back to sequence 2: the whole list returns.
    page.locator('#channel-history tr[data-sequence="2"]').locator(
        "text=Roll back to this…"
    ).click()
    expect(page.locator("#rollback-plan tr[data-change=added]")).to_contain_text("Checkout helper")
    expect(page.locator("#rollback-plan tr[data-change=unchanged]")).to_contain_text("Support bot")
    page.click("button:has-text('Roll back production')")
    page.wait_for_url(re.compile(r".*/channels/production/publications/4$"))
    page.goto(f"{project_url}/channels/production")
    expect(served).to_have_count(2)
    expect(page.locator("#channel-history")).to_contain_text(
        "Rolled back to sequence 2: Checkout helper added"
    )
    page.screenshot(path=str(screenshots / "multiset-05-rolled-back.png"), full_page=True)

    expect(app_page.locator("#sets li")).to_have_count(2, timeout=30_000)
    expect(app_page.locator('[data-prompt="checkout.upsell"]')).to_contain_text(UPSELL)
    assert errors == [], errors  # no JavaScript errors, no dialogs, no CSP violations
