"""Accessibility (issue 13): axe-core on the main pages at desktop and phone widths (no serious
or critical violation), and the specific findings: named roll-back buttons, one "Template"
field in the editor, full instance ids for screen readers, separated status cells, and
confirmations on pages instead of ``window.confirm``.

axe-core is vendored as ``tests/e2e/vendor/axe.min.js`` (MPL-2.0, licence header kept and the
licence beside it), so the check runs without a network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._seed_polish import Seeded, seed, sign_in
from tests.e2e.conftest import LiveForge

pytestmark = pytest.mark.e2e

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SERIOUS = ("serious", "critical")


def _axe(page: Any) -> list[dict[str, Any]]:
    """The serious and critical violations axe-core finds on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 4).map(
                    n => n.target.join(" ") + " :: " + (n.failureSummary || "").slice(0, 160))}));
        }"""
    )
    return [v for v in result if v["impact"] in SERIOUS]


def _pages(s: Seeded, forge: LiveForge) -> list[tuple[str, str]]:
    project, sets = s.project(forge), s.set(forge)
    return [
        ("projects", f"{forge.url}/projects/"),
        ("project", project),
        ("set", sets),
        ("editor", f"{sets}/prompts/welcome.message"),
        ("new-prompt", f"{sets}/prompts/new"),
        ("versions", f"{sets}/versions"),
        ("version", f"{sets}/versions/0.2.0"),
        ("history", f"{sets}/prompts/welcome.message/history"),
        ("diff", f"{sets}/diff?from=0.1.0&to=0.2.0"),
        ("audit", f"{project}/audit"),
        ("channels", f"{project}/channels"),
        ("channel", f"{project}/channels/production"),
        ("publish-confirm", f"{sets}/versions/0.2.0/publish?channel=development"),
        ("rollback", f"{project}/channels/production/rollback?sequence=1"),
        ("tokens", f"{project}/tokens"),
        ("instances", f"{project}/instances"),
        ("org", f"{forge.url}/orgs/acme"),
        ("account", f"{forge.url}/account"),
    ]


@pytest.mark.parametrize("width", [1360, 390])
def test_main_pages_have_no_serious_axe_violations(
    live_forge: LiveForge, browser: Any, screenshots: Path, width: int
) -> None:
    seeded = seed(live_forge)
    context = browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        page.goto(f"{live_forge.url}/login")
        if violations := _axe(page):
            found["login"] = violations
        sign_in(page, live_forge, "owner")
        for name, url in _pages(seeded, live_forge):
            response = page.goto(url)
            assert response is not None and response.status == 200, url
            if violations := _axe(page):
                found[name] = violations
            if name in ("editor", "channel", "instances", "audit", "version", "history"):
                page.screenshot(path=str(screenshots / f"a11y-{name}-{width}.png"), full_page=True)
    finally:
        context.close()
    assert found == {}, json.dumps(found, indent=1)


def test_roll_back_buttons_and_instance_ids_have_full_names(
    live_forge: LiveForge, page: Any
) -> None:
    seeded = seed(live_forge)
    sign_in(page, live_forge, "owner")
    page.goto(f"{seeded.project(live_forge)}/channels/production")
    rollbacks = page.get_by_role(
        "link", name=re.compile(r"^Roll back to this… production to sequence")
    )
    names = [rollbacks.nth(i).text_content() for i in range(rollbacks.count())]
    assert names and len(set(names)) == len(names)
    assert "sequence 1" in names[0] and "0.1.0" in names[0]

    page.goto(f"{seeded.project(live_forge)}/instances")
    row = page.locator("tbody tr").first
    instance_id = row.get_attribute("data-instance")
    assert instance_id
    # The visible short id is hidden from screen readers; the full id is read instead.
    cell = row.locator("td").first
    assert f"Instance id {instance_id}" in (cell.text_content() or "")
    assert cell.locator("code[aria-hidden=true]").inner_text() == instance_id[:8]
    status = row.locator("td").nth(4)
    assert status.locator("ul.flags > li").count() >= 1  # a list: items read apart


def test_editor_has_one_template_field(live_forge: LiveForge, page: Any) -> None:
    seeded = seed(live_forge, publish=False)
    sign_in(page, live_forge, "editor")
    page.goto(f"{seeded.set(live_forge)}/prompts/welcome.message")
    assert page.get_by_label("Template", exact=True).count() == 1
    assert page.get_by_label("Text of message 1").count() == 1  # the chat panel's, named apart


def test_confirmations_are_pages_never_dialogs(
    live_forge: LiveForge, page: Any, screenshots: Path
) -> None:
    seeded = seed(live_forge, publish=False)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, live_forge, "owner")
    page.goto(seeded.set(live_forge))
    page.click("a:has-text('Unlock for editing…')")
    page.wait_for_url(re.compile(r".*/confirm/"))
    heading = page.get_by_role("heading", level=1)
    assert heading.inner_text() == "Unlock for editing?"
    assert "Unlock Support bot for editing?" in page.inner_text("main")
    button = page.get_by_role("button", name="Unlock for editing")
    assert button.evaluate("b => b === document.activeElement")  # focus lands on the action
    page.screenshot(path=str(screenshots / "a11y-confirm-1360.png"), full_page=True)
    page.click("text=Cancel")
    assert "Locked" in page.inner_text(".status-panel")
    page.click("a:has-text('Unlock for editing…')")
    button = page.get_by_role("button", name="Unlock for editing")
    button.click()
    page.wait_for_selector("text=Unlocked for editing")
    assert dialogs == []
