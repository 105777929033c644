"""Safe releases in Chromium (issue 11): the usage charts, the guard settings, scheduling (and
cancelling) a publish, and the caller-compatibility warning an owner must confirm."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from forge_app.extensions import db
from forge_app.models import Organisation, Project, PromptSet, Role, User
from forge_app.services import publishing
from forge_app.services.drafts import replace_prompts
from forge_app.services.tokens import create_token
from forge_app.services.workflow import approve, submit, unlock
from tests.e2e.conftest import PASSWORD, LiveForge

pytestmark = pytest.mark.e2e

V1 = {"support.greeting": {"template": "Hi {{ customer_name }}, this is {{ product }}."}}
V2 = {
    "support.greeting": {"template": "Hi {{ customer_name }} ({{ tier }}), this is {{ product }}."}
}


def sign_in(page: Any, forge: LiveForge, role: str) -> None:
    page.goto(f"{forge.url}/login")
    page.fill("#email", forge.emails[role])
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/projects/$"))


def _lock(
    session: Any, prompt_set: PromptSet, prompts: dict[str, Any], users: dict[str, User]
) -> None:
    replace_prompts(session, prompt_set, prompts, users["editor"], remove_missing=True)
    submit(
        session,
        prompt_set,
        users["editor"],
        role=Role.EDITOR,
        bump="minor",
        changelog="Change",
        expected_revision=prompt_set.revision,
    )
    approve(
        session,
        prompt_set,
        users["reviewer"],
        role=Role.REVIEWER,
        expected_revision=prompt_set.revision,
    )


def seed(forge: LiveForge) -> tuple[uuid.UUID, uuid.UUID]:
    """Support bot 0.1.0 on production; three checkout-service instances report usage and
    call support.greeting with {customer_name, product}; 0.2.0 also needs ``tier``."""
    with forge.app.app_context():
        session = db.session
        org = session.query(Organisation).filter_by(slug="acme").one()
        users = {u.email.split("@")[0]: u for u in session.query(User).all()}
        project = Project(org_id=org.id, name="Acme Cloud", description="")
        session.add(project)
        session.flush()
        prompt_set = PromptSet(project_id=project.id, name="Support bot", description="")
        session.add(prompt_set)
        session.flush()
        _lock(session, prompt_set, V1, users)
        _, token = create_token(project, "checkout-service", user=users["owner"])
        session.commit()
        publishing.ensure_default_channels(project)
        channel = publishing.get_channel(project, "production")
        assert channel is not None
        from forge_app.services.versions import latest_release

        first = latest_release(session, prompt_set)
        assert first is not None
        publication = publishing.publish_version(first, channel, user=users["owner"])
        session.commit()
        release = publication.releases[0]
        unlock(session, prompt_set, users["owner"], role=Role.OWNER, expected_revision=None)
        _lock(session, prompt_set, V2, users)
        session.commit()
        ids = (project.id, prompt_set.id)
    client = forge.app.test_client()
    now = datetime.now(UTC)
    for n in range(3):
        for minutes, report in ((10, 1), (5, 2), (0, 3)):
            moment = (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
            body = {
                "instance_id": str(uuid.UUID(int=n + 1)),
                "hostname": "checkout-service",
                "project_id": str(ids[0]),
                "channel": "production",
                "mode": "accepting",
                "sequence": publication.sequence,
                "releases": [
                    {k: release[k] for k in ("prompt_set_id", "version", "content_sha256")}
                ],
                "last_error": None,
                "client_version": "0.1.0",
                "usage": {
                    "report_id": report,
                    "from": moment,
                    "to": moment,
                    "prompts": [
                        {
                            "prompt_id": "support.greeting",
                            "content_sha256": release["content_sha256"],
                            "renders": 20 * report,
                            "errors": {"RenderError": report},
                            "calls": 20 * report,
                            "input_tokens": 900 * report,
                            "output_tokens": 300 * report,
                            "variables": [["customer_name", "product"]],
                        }
                    ],
                },
            }
            response = client.post(
                "/api/v1/live/heartbeat",
                data=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}"},
                content_type="application/json",
            )
            assert response.status_code == 204
    return ids


def test_charts_guard_schedule_and_compatibility(live_forge: LiveForge, page: Any) -> None:
    project_id, set_id = seed(live_forge)
    sign_in(page, live_forge, "owner")
    channel_url = f"{live_forge.url}/projects/{project_id}/channels/production"

    # Charts: inline SVG with a title, and the numbers in a hidden table.
    page.goto(channel_url)
    charts = page.locator("svg.usage-chart[role=img]")
    expect(charts).to_have_count(3)
    expect(page.locator("svg.usage-chart title").first).to_have_text("Calls")
    expect(page.locator(".usage-panel")).to_contain_text("errors.")
    assert page.locator("svg.usage-chart rect").count() >= 1

    # Guard settings.
    page.click("text=Guard and schedule settings")
    page.fill("#max_error_rate", "5")
    page.fill("#min_calls", "30")
    page.fill("#window_minutes", "20")
    page.fill("#stages", "10, 50, 100")
    page.fill("#hold_minutes", "5")
    page.click("text=Save guard")
    expect(page.locator(".flash-success")).to_contain_text("The guard of production is saved.")
    page.goto(channel_url)
    expect(page.locator("#guard-status")).to_contain_text("passes 5.0% after 30 calls")

    # Schedule a publish of 0.2.0: its compatibility warnings need the owner's tick here too.
    # Then see it on the channel page, and cancel it.
    when = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")

    def schedule(confirm: bool) -> None:
        page.goto(f"{channel_url}/safety")
        page.select_option("#kind", "publish")
        page.fill("#run_at", when)
        page.select_option("#version", label="Support bot 0.2.0")
        if confirm:
            page.check("#schedule-compat-confirmed")
        page.click("#schedule-form button[type=submit]")

    schedule(confirm=False)
    expect(page.locator(".flash-error").first).to_contain_text("an owner must confirm")
    expect(page.locator(".flash-error").nth(1)).to_contain_text("0.2.0 also needs tier")
    schedule(confirm=True)
    expect(page.locator(".flash-success")).to_contain_text(
        f"Publish Support bot 0.2.0 on production at {when} UTC"
    )
    page.goto(channel_url)
    expect(page.locator("#scheduled-jobs")).to_contain_text(
        f"Publish Support bot 0.2.0 at {when} UTC"
    )
    page.goto(f"{channel_url}/safety")
    page.click("#scheduled-jobs button:has-text('Cancel')")
    expect(page.locator(".flash-success")).to_contain_text("Cancelled: Publish Support bot 0.2.0.")

    # The compatibility warning on the Publish to LIVE confirmation; the owner must confirm.
    page.goto(
        f"{live_forge.url}/projects/{project_id}/sets/{set_id}/versions/0.2.0/publish?channel=production"
    )
    expect(page.locator("#compat-warnings")).to_contain_text(
        "3 instances of checkout-service call support.greeting with {customer_name, product}; "
        "0.2.0 also needs tier → MissingVariable."
    )
    page.click("button[data-publish]")
    expect(page.locator(".flash-error")).to_contain_text("an owner must confirm")
    page.check("#compat-confirmed")
    page.click("button[data-publish]")
    expect(page.locator(".flash-success")).to_contain_text(
        "Published Support bot 0.2.0 to production"
    )
