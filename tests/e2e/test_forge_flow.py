"""The Context Engineer's main path in a real Chromium: sign in, create a project and a prompt
set, write a text and a chat prompt (with a validation error and a live preview), submit,
approve as a second user, and look at the version and its diff."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import PASSWORD, LiveForge

pytestmark = pytest.mark.e2e


def sign_in(page: Any, forge: LiveForge, role: str) -> None:
    page.goto(f"{forge.url}/login")
    page.fill("#email", forge.emails[role])
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/projects/$"))


def sign_out(page: Any) -> None:
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r".*/login$"))


def test_author_review_and_version(live_forge: LiveForge, page: Any, screenshots: Path) -> None:
    forge = live_forge
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Pages answer 400/409 on purpose (a form with problems), so resource failures are judged
    # by their responses: scripts, styles and the preview endpoint must never fail.
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and r.request.resource_type != "document"
            else None
        ),
    )

    page.goto(f"{forge.url}/login")
    page.screenshot(path=str(screenshots / "01-login.png"))
    sign_in(page, forge, "owner")

    # a project (owners create projects)
    page.click("text=New project")
    page.fill("#name", "Checkout assistant")
    page.fill("#description", "Prompts of the checkout helper.")
    page.click("button:has-text('Create project')")
    page.wait_for_selector("text=Project Checkout assistant is created")

    # a prompt set
    page.click("text=New prompt set")
    page.fill("#name", "Support bot")
    page.click("button:has-text('Create prompt set')")
    page.wait_for_selector("text=Prompt set Support bot is created")
    set_url = page.url

    # a text prompt: first a broken template, then a good one with a live preview
    page.click("text=New text prompt")
    page.fill("#key", "support.greeting")
    page.fill("#template", "Hello {{ name }}!\n{% if vip %}\nWelcome back.")
    page.fill("#description", "First message")
    page.click("[data-save]")
    error = page.locator(".error-text", has_text="Line")
    error.first.wait_for()
    assert "Line 3" in error.first.inner_text() or "Line 2" in error.first.inner_text()
    assert page.input_value("#template").startswith("Hello {{ name }}!")  # nothing lost
    page.screenshot(path=str(screenshots / "02-validation-error.png"), full_page=True)

    page.fill(
        "#template", "Hello {{ name }}!\n{% if vip %}Welcome back, valued customer.{% endif %}"
    )
    page.wait_for_selector("#sample-vip")
    page.fill("#sample-name", "Ada")
    page.fill("#sample-vip", "yes")
    expect(page.locator("#preview")).to_contain_text("Hello Ada!")
    assert "Welcome back, valued customer." in page.inner_text("#preview")
    page.screenshot(path=str(screenshots / "03-editor-preview.png"), full_page=True)
    page.keyboard.press("Control+s")  # the keyboard shortcut saves
    page.wait_for_selector("text=Prompt support.greeting is saved.")

    # a chat prompt
    page.goto(set_url)
    page.click("text=New chat prompt")
    page.fill("#key", "support.chat")
    page.fill("#messages-0-template", "You help {{ product }} customers. Be brief.")
    page.fill("#messages-1-template", "{{ question }}")
    page.click("[data-add-message]")
    page.fill("#messages-2-template", "Sure, let me check that for you.")
    expect(page.locator("#preview")).to_contain_text("Sure, let me check")
    page.click("[data-save]")
    page.wait_for_selector("text=Prompt support.chat is saved.")

    page.goto(set_url)
    page.screenshot(path=str(screenshots / "04-prompt-set.png"), full_page=True)
    assert page.locator("#prompts tbody tr").count() == 2

    # submit for review as the editor (a different person than the reviewer)
    sign_out(page)
    sign_in(page, forge, "editor")
    page.goto(set_url)
    page.click("text=Submit for review…")
    page.check("input[value=minor]")
    page.fill("#changelog", "Greeting and support chat, first version.")
    page.screenshot(path=str(screenshots / "05-submit.png"), full_page=True)
    page.click("button:has-text('Submit for review')")
    page.wait_for_selector("text=Submitted for review as 0.1.0")

    # approve as the reviewer
    sign_out(page)
    sign_in(page, forge, "reviewer")
    page.goto(set_url)
    page.click("text=Open the review")
    page.wait_for_selector("text=Greeting and support chat, first version.")
    page.screenshot(path=str(screenshots / "06-review.png"), full_page=True)
    page.click("button:has-text('Approve and lock 0.1.0')")
    page.wait_for_selector("text=Version 0.1.0 is locked")
    page.screenshot(path=str(screenshots / "07-version.png"), full_page=True)
    assert "support.greeting" in page.inner_text("main")

    # a second version, then the diff between the two
    page.goto(set_url)
    page.click("a:has-text('Unlock for editing…')")  # the confirmation page, not a dialog
    page.click("button:has-text('Unlock for editing')")
    page.wait_for_selector("text=Unlocked for editing")
    sign_out(page)
    sign_in(page, forge, "editor")
    page.goto(set_url)
    page.click("a.mono:has-text('support.greeting')")
    page.fill(
        "#template",
        "Hi {{ name }}, great to see you!\n{% if vip %}Welcome back, valued customer.{% endif %}",
    )
    page.click("[data-save]")
    page.wait_for_selector("text=Prompt support.greeting is saved.")
    page.goto(set_url)
    page.click("text=Submit for review…")
    page.check("input[value=patch]")
    page.fill("#changelog", "Warmer greeting.")
    page.click("button:has-text('Submit for review')")
    page.wait_for_selector("text=Submitted for review as 0.1.1")
    sign_out(page)
    sign_in(page, forge, "owner")
    page.goto(set_url)
    page.click("text=Open the review")
    page.click("button:has-text('Approve and lock 0.1.1')")
    page.wait_for_selector("text=Version 0.1.1 is locked")
    page.click("text=Diff with 0.1.0")
    page.wait_for_selector(".diff-prompt")
    assert page.locator(".diff-del").first.inner_text().strip().startswith("1")
    assert "great to see you" in page.inner_text(".diff-add")
    page.screenshot(path=str(screenshots / "08-diff.png"), full_page=True)

    page.goto(f"{forge.url}/projects/")
    page.click("text=Checkout assistant")
    page.screenshot(path=str(screenshots / "09-project.png"), full_page=True)
    page.click("text=Audit log")
    assert "approved and locked" in page.inner_text("main")
    page.screenshot(path=str(screenshots / "10-audit.png"), full_page=True)
    assert errors == [], errors  # no JavaScript errors, no CSP violations


def test_unsaved_changes_are_guarded_and_the_page_is_responsive(
    live_forge: LiveForge, page: Any, screenshots: Path
) -> None:
    forge = live_forge
    sign_in(page, forge, "owner")
    page.click("text=New project")
    page.fill("#name", "Mobile")
    page.click("button:has-text('Create project')")
    page.click("text=New prompt set")
    page.fill("#name", "Set")
    page.click("button:has-text('Create prompt set')")
    page.click("text=New text prompt")
    page.fill("#template", "Unsaved work {{ x }}")
    dialogs: list[str] = []

    def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.click("nav.sidebar >> text=Projects")  # leaving asks first; dismissing stays
    assert dialogs == ["beforeunload"]
    assert page.input_value("#template") == "Unsaved work {{ x }}"
    editor_url = page.url

    # Leaving anyway (a crash, an expired session…): the browser kept a copy to restore.
    page.remove_listener("dialog", dismiss)
    page.on("dialog", lambda dialog: dialog.accept())
    page.fill("#key", "kept.prompt")
    deadline = time.monotonic() + 10  # the copy is written shortly after the last keystroke
    while "kept.prompt" not in page.evaluate("() => JSON.stringify(window.localStorage)"):
        assert time.monotonic() < deadline, "the editor did not keep a copy"
        page.wait_for_timeout(50)
    page.goto(f"{forge.url}/projects/")
    page.goto(editor_url)
    page.click("text=Restore them")
    assert page.input_value("#template") == "Unsaved work {{ x }}"
    assert page.input_value("#key") == "kept.prompt"
    expect(page.locator("#preview")).to_contain_text("Unsaved work")
    page.click("[data-save]")
    page.wait_for_selector("text=Prompt kept.prompt is saved.")
    page.goto(editor_url)
    assert page.locator(".backup-banner").count() == 0  # a successful save clears the copy
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(screenshots / "11-mobile-editor.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways on a phone ({width}px)"
