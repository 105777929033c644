"""A double-click sends a form once: no second ACCESS_TOKEN the user never sees, no second
publication, approval or rollback. (Found by the FORGE review: every POST form could be sent
twice, e.g. by clicking again while a slow publish was on its way.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from forge_app.extensions import db
from forge_app.models.distribution import AccessToken
from tests.e2e.conftest import PASSWORD, LiveForge
from tests.e2e.test_layout import _seed

pytestmark = pytest.mark.e2e

#: Counts the submissions the page lets through and holds each one back (as a slow network
#: would keep the page in place); registered on window, so it runs after the page's own
#: handlers and sees whether they let the submission through.
COUNT_SUBMISSIONS = """() => {
  window.sentForms = 0;
  window.addEventListener("submit", (event) => {
    if (!event.defaultPrevented) window.sentForms += 1;
    event.preventDefault();
  });
}"""


def _sign_in(page: Any, forge: LiveForge) -> None:
    page.goto(f"{forge.url}/login")
    page.fill("#email", forge.emails["owner"])
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/projects/$"))


@pytest.mark.parametrize(
    ("path", "button"),
    [
        ("/projects/{project}/tokens", "Generate token"),
        ("/projects/{project}/sets/{set}/versions/0.1.0/publish?channel=staging", "Publish to"),
        ("/projects/{project}/sets/{set}", "Unlock for editing"),
    ],
)
def test_a_second_click_does_not_send_the_form_again(
    live_forge: LiveForge, page: Any, path: str, button: str
) -> None:
    project_id, set_id = _seed(live_forge)
    _sign_in(page, live_forge)
    page.goto(live_forge.url + path.format(project=project_id, set=set_id))
    if page.locator("#name").count():
        page.fill("#name", "double-clicked")
    confirm_link = page.locator(f"a:has-text('{button}…')")
    if confirm_link.count():  # a confirmation page first (issue 13: one pattern, a page)
        confirm_link.first.click()
        page.wait_for_url(re.compile(r".*/confirm/"))
    page.evaluate(COUNT_SUBMISSIONS)
    target = page.locator(f"button:has-text('{button}')").first
    target.click()
    target.click()
    assert page.evaluate("window.sentForms") == 1


def test_a_double_click_generates_one_token(live_forge: LiveForge, page: Any) -> None:
    project_id, _ = _seed(live_forge)
    _sign_in(page, live_forge)
    page.goto(f"{live_forge.url}/projects/{project_id}/tokens")
    page.fill("#name", "double-clicked")
    page.dblclick("button:has-text('Generate token')")
    page.wait_for_selector("text=Your new token: copy it now")
    with live_forge.app.app_context():
        count = db.session.scalar(
            select(func.count(AccessToken.id)).where(AccessToken.name == "double-clicked")
        )
    assert count == 1
