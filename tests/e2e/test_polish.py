"""Issue 13 in a real browser: preview placeholders and kept samples, a viewer's samples,
publishing without a token, the audit log's filters and links, invitations, word-level diffs,
a version's prompts and a prompt's history, and the layout at desktop and phone widths
(screenshots in test-output/e2e/polish-*.png)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e._seed_polish import seed, sign_in
from tests.e2e.conftest import LiveForge

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "a long pass phrase for ana"


def _preview_text(page: Any) -> str:
    return " ".join(page.locator("#preview pre").all_inner_texts())


def test_preview_placeholders_and_samples(live_forge: LiveForge, page: Any) -> None:
    seeded = seed(live_forge, publish=False, unlocked=True)
    sign_in(page, live_forge, "editor")
    page.goto(f"{seeded.set(live_forge)}/prompts/new")
    page.fill("#key", "count.items")
    page.fill("#template", "{{ items|length }} for {{ name }}")
    expect(page.locator("#preview pre")).to_have_text("0 for ⟨name⟩")
    page.fill("#sample-items", "abc")
    expect(page.locator("#preview pre")).to_have_text("3 for ⟨name⟩")
    page.fill("#template", "{{ items|length }} for {{ name }} {% if %}")
    expect(page.locator("#preview .error-text")).to_contain_text("Line 1")
    expect(page.locator("#sample-items")).to_have_value("abc")  # kept after the error
    page.fill("#template", "{{ items|length }} for {{ name }}!")
    expect(page.locator("#preview pre")).to_have_text("3 for ⟨name⟩!")
    # A saved chat prompt shows the same placeholder (it used to be empty text).
    page.goto(f"{seeded.set(live_forge)}/prompts/support.chat")
    page.fill("#messages-1-template", "Q: {{ question }}")
    expect(page.locator("#preview pre").last).to_have_text("Q: ⟨question⟩")


def test_a_viewer_tries_sample_values(live_forge: LiveForge, page: Any) -> None:
    seeded = seed(live_forge, publish=False)
    sign_in(page, live_forge, "viewer")
    page.goto(f"{seeded.set(live_forge)}/prompts/welcome.message")
    expect(page.locator("#template")).to_be_disabled()
    expect(page.locator("#sample-name")).to_be_enabled()
    page.fill("#sample-name", "Zoë")
    expect(page.locator("#preview pre")).to_contain_text("We are reaching out to Zoë today.")


def test_publishing_without_a_token_is_stopped_before_the_click(
    live_forge: LiveForge, page: Any, screenshots: Path
) -> None:
    seeded = seed(live_forge, publish=False, token=False)
    sign_in(page, live_forge, "owner")
    page.goto(f"{seeded.set(live_forge)}/versions/0.1.0")
    page.click("text=Publish to LIVE instances…")
    page.check("input[name=channel][value=development]")
    page.click("button:has-text('Review and publish…')")
    expect(page.locator("#no-tokens")).to_contain_text("no active ACCESS_TOKEN")
    expect(page.locator("button[data-publish]")).to_be_disabled()
    page.screenshot(path=str(screenshots / "polish-no-token-1360.png"), full_page=True)
    page.click("#no-tokens a")
    page.wait_for_url(re.compile(r".*/tokens$"))


def test_audit_log_filters_pages_and_links(live_forge: LiveForge, page: Any) -> None:
    seeded = seed(live_forge)
    sign_in(page, live_forge, "owner")
    page.goto(f"{seeded.project(live_forge)}/audit")
    everything = page.locator("li.event").count()
    page.select_option("#actor", live_forge.emails["reviewer"])
    page.click("button:has-text('Filter')")
    entries = page.locator("li.event")
    assert 0 < entries.count() < everything
    for text in entries.all_inner_texts():
        assert live_forge.emails["reviewer"] in text
    page.click("text=Clear filters")
    page.select_option("#action", "prompt_set.approve")
    page.click("button:has-text('Filter')")
    expect(page.locator("li.event")).to_have_count(2)
    page.locator("li.event a.event-object").first.click()
    page.wait_for_url(re.compile(r".*/sets/[0-9a-f-]+$"))


def test_invitation_flow(live_forge: LiveForge, browser: Any, page: Any, screenshots: Path) -> None:
    sign_in(page, live_forge, "owner")
    page.goto(f"{live_forge.url}/orgs/acme")
    page.select_option("#role", "reviewer")
    page.fill("#note", "Ana")
    page.click("button:has-text('Make an invitation link')")
    link = page.input_value("#invitation-link")
    assert "/orgs/join/inv_" in link
    expect(page.locator("#invitation-link")).to_have_css("font-family", re.compile("mono", re.I))
    guest_context = browser.new_context(viewport={"width": 390, "height": 844})
    guest = guest_context.new_page()
    try:
        guest.goto(link)
        expect(guest.locator("h1")).to_have_text("Join Acme")
        guest.fill("#email", "ana@acme.test")
        guest.fill("#password", "short")
        guest.fill("#confirm", "short")
        guest.click("button:has-text('Make my account and join')")
        expect(guest.locator("#password-error")).to_contain_text("at least 10 characters")
        expect(guest.locator("#password")).to_have_attribute("aria-invalid", "true")
        guest.screenshot(path=str(screenshots / "polish-join-error-390.png"), full_page=True)
        guest.fill("#password", NEW_PASSWORD)
        guest.fill("#confirm", NEW_PASSWORD)
        guest.click("button:has-text('Make my account and join')")
        guest.wait_for_url(re.compile(r".*/login"))
        guest.fill("#email", "ana@acme.test")
        guest.fill("#password", NEW_PASSWORD)
        guest.click("button[type=submit]")
        guest.wait_for_url(re.compile(r".*/orgs/acme$"))
        expect(guest.locator("main")).to_contain_text("Your role: reviewer")
        guest.goto(link)
        expect(guest.locator("main")).to_contain_text("already used")
    finally:
        guest_context.close()


def test_version_history_and_word_diff(live_forge: LiveForge, page: Any, screenshots: Path) -> None:
    seeded = seed(live_forge)
    sign_in(page, live_forge, "viewer")
    page.goto(f"{seeded.set(live_forge)}/versions/0.2.0")
    expect(page.locator("#p-welcome\\.message pre")).to_be_visible()
    expect(page.locator("#p-welcome\\.message")).to_contain_text("Greets a user")
    page.click("text=History of welcome.message")
    expect(page.locator("li.history-step")).to_have_count(2)
    marks = page.locator("li.history-step").first.locator("mark").all_inner_texts()
    assert marks == ["reaching out to", "contacting"]  # whole words, not "re|ac|h|ing"
    page.screenshot(path=str(screenshots / "polish-history-1360.png"), full_page=True)


@pytest.mark.parametrize("width", [1360, 390])
def test_tables_never_break_words_and_tokens_are_monospace(
    live_forge: LiveForge, browser: Any, screenshots: Path, width: int
) -> None:
    seeded = seed(live_forge)
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    broken: list[str] = []
    try:
        sign_in(page, live_forge, "owner")
        for name, path in [
            ("instances", "/instances"),
            ("channel", "/channels/production"),
            ("tokens", "/tokens"),
        ]:
            page.goto(seeded.project(live_forge) + path)
            # An inline element split over two lines has two boxes: a word broken mid-way.
            broken += page.evaluate(
                """() => [...document.querySelectorAll(
                    '.table td time, .table td code, .table td .instance-host, .table td .badge')]
                    .filter(el => el.getClientRects().length > 1
                                  && !/\\s/.test(el.textContent.trim()))
                    .map(el => el.textContent.trim())"""
            )
            page.screenshot(path=str(screenshots / f"polish-{name}-{width}.png"), full_page=True)
        page.goto(seeded.project(live_forge) + "/tokens")
        page.click("button:has-text('Show token')")
        page.wait_for_selector("input.token-value")
        family = page.evaluate(
            "getComputedStyle(document.querySelector('input.token-value')).fontFamily"
        )
        assert "mono" in family.lower(), family
    finally:
        context.close()
    assert broken == []
