"""The main job end to end in Chromium: an editor changes a prompt, submits it, a second person
approves it, the owner publishes it to production, and a running application (a separate
process embedding ``anvil_client``, polling the FORGE's own ``/store``) shows up as applied on
the publish status page, which updates by itself without a reload."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
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
from forge_app.services.versions import latest_release
from forge_app.services.workflow import approve, submit, unlock
from tests.e2e.conftest import PASSWORD, LiveForge

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

CLIENT = r"""
import json, os, sys
from anvil_client import AnvilClient
client = AnvilClient(
    store=os.environ["STORE"], project_id=os.environ["PROJECT_ID"],
    access_token=os.environ["ANVIL_ACCESS_TOKEN"], trusted_keys=[os.environ["TRUSTED_KEY"]],
    cache_dir=os.environ["CACHE_DIR"], poll_interval=1.0, forge_url=os.environ["FORGE_URL"],
)
print(json.dumps({"instance_id": client.instance_id}), flush=True)
for line in sys.stdin:
    if line.strip() != "status":
        break
    status = client.status()
    served = status["version"] is not None
    status["greeting"] = client.prompt("support.greeting", name="Ada") if served else None
    print(json.dumps(status), flush=True)
client.close()
"""


def sign_in(page: Any, forge: LiveForge, role: str) -> None:
    page.goto(f"{forge.url}/login")
    page.fill("#email", forge.emails[role])
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/projects/$"))


def sign_out(page: Any) -> None:
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r".*/login$"))


def seed(forge: LiveForge) -> tuple[uuid.UUID, uuid.UUID, str, str]:
    """A project whose production channel serves 0.1.0 of "Support bot" (now editable again),
    and an ACCESS_TOKEN. Returns (project id, set id, token text, public key)."""
    with forge.app.app_context():
        session = db.session
        org = session.query(Organisation).filter_by(slug="acme").one()
        users = {u.email.split("@")[0]: u for u in session.query(User).all()}
        owner, editor, reviewer = users["owner"], users["editor"], users["reviewer"]
        project = Project(org_id=org.id, name="Checkout assistant", description="")
        session.add(project)
        session.flush()
        prompt_set = PromptSet(project_id=project.id, name="Support bot", description="")
        session.add(prompt_set)
        session.flush()
        prompts = {"support.greeting": {"template": "Hello {{ name }}, how can I help?"}}
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
        _, token = create_token(project, "checkout-service prod", user=owner)
        session.commit()
        publishing.ensure_default_channels(project)
        channel = publishing.get_channel(project, "production")
        version = latest_release(session, prompt_set)
        assert channel is not None and version is not None and version.version == "0.1.0"
        publishing.publish_version(version, channel, user=owner)
        unlock(session, prompt_set, editor, role=Role.EDITOR, expected_revision=prompt_set.revision)
        session.commit()
        return project.id, prompt_set.id, token, publishing.forge_public_key_text()


class Instance:
    """A LIVE instance in its own process, asked for its status on stdin."""

    def __init__(self, env: dict[str, str], script: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
        )
        self.instance_id: str = self._read()["instance_id"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the instance exited with {self.process.wait()}"
        data: dict[str, Any] = json.loads(line)
        return data

    def status(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("status\n")
        self.process.stdin.flush()
        return self._read()

    def wait_for_version(self, version: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (status := self.status())["version"] != version:
            assert time.monotonic() < deadline, f"the instance still serves {status['version']}"
            time.sleep(0.1)
        return status

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()  # this PID only
                self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def instance_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Instance] = []
    script = tmp_path / "instance.py"
    script.write_text(CLIENT)

    def make(env: dict[str, str]) -> Instance:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
        instance = Instance({**base, "PYTHONPATH": str(ROOT), **env}, script)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.stop()


def test_edit_approve_publish_and_watch_an_instance_apply_it(
    live_forge: LiveForge, page: Any, screenshots: Path, instance_factory: Any, tmp_path: Path
) -> None:
    forge = live_forge
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    project_id, set_id, token, public_key = seed(forge)
    instance = instance_factory(
        {
            "STORE": f"{forge.url}/store",
            "PROJECT_ID": str(project_id),
            "ANVIL_ACCESS_TOKEN": token,
            "TRUSTED_KEY": public_key,
            "CACHE_DIR": str(tmp_path / "cache"),
            "FORGE_URL": forge.url,
        }
    )
    first = instance.wait_for_version("0.1.0")
    assert first["greeting"] == "Hello Ada, how can I help?"
    set_url = f"{forge.url}/projects/{project_id}/sets/{set_id}"

    # The editor changes the greeting and submits it.
    sign_in(page, forge, "editor")
    page.goto(set_url)
    page.click("a.mono:has-text('support.greeting')")
    page.fill("#template", "Hi {{ name }}! Great to see you again.")
    page.click("[data-save]")
    page.wait_for_selector("text=Prompt support.greeting is saved.")
    page.goto(set_url)
    page.click("text=Submit for review…")
    page.check("input[value=minor]")
    page.fill("#changelog", "A warmer greeting.")
    page.click("button:has-text('Submit for review')")
    page.wait_for_selector("text=Submitted for review as 0.2.0")
    page.screenshot(path=str(screenshots / "flow-01-submitted.png"), full_page=True)
    sign_out(page)

    # A second person approves it.
    sign_in(page, forge, "reviewer")
    page.goto(set_url)
    page.click("text=Open the review")
    page.wait_for_selector("text=A warmer greeting.")
    page.click("button:has-text('Approve and lock 0.2.0')")
    page.wait_for_selector("text=Version 0.2.0 is locked")
    sign_out(page)

    # The owner publishes it to production; the confirmation lists the running instance.
    sign_in(page, forge, "owner")
    page.goto(f"{set_url}/versions/0.2.0")
    page.click("text=Publish to LIVE")
    page.check("input[name=channel][value=production]")
    page.click("button:has-text('Review and publish')")
    page.wait_for_selector("text=LIVE instances on production")
    aside = page.locator("aside")
    expect(aside).to_contain_text(instance.instance_id[:8])
    expect(aside).to_contain_text("0.1.0")
    page.screenshot(path=str(screenshots / "flow-02-confirm.png"), full_page=True)
    page.click("button:has-text('Publish to production')")
    page.wait_for_url(re.compile(r".*/channels/production/publications/\d+$"))
    page.evaluate("window.__notReloaded = true")
    row = page.locator(f'tr[data-instance="{instance.instance_id}"]')
    expect(row).to_be_visible()
    page.screenshot(path=str(screenshots / "flow-03-status-pending.png"), full_page=True)

    # The page follows the heartbeats by itself: the instance turns "applied".
    expect(row).to_have_attribute("data-state", "applied", timeout=30_000)
    expect(row).to_contain_text("0.2.0")
    expect(page.locator('[data-count="applied"]')).to_have_text("1")
    assert page.evaluate("window.__notReloaded") is True  # updated in place
    page.screenshot(path=str(screenshots / "flow-04-status-applied.png"), full_page=True)
    served = instance.wait_for_version("0.2.0")
    assert served["greeting"] == "Hi Ada! Great to see you again."

    # The Instances page shows it serving the channel's release, nothing to worry about.
    page.click("text=All instances")
    instances_row = page.locator(f'tr[data-instance="{instance.instance_id}"]')
    expect(instances_row).to_contain_text("0.2.0")
    expect(instances_row.locator(".flag-ok")).to_be_visible()
    page.screenshot(path=str(screenshots / "flow-05-instances.png"), full_page=True)
    assert errors == [], errors  # no JavaScript errors, no CSP violations


def test_instances_page_makes_problems_stand_out(
    live_forge: LiveForge, page: Any, screenshots: Path
) -> None:
    """Drift, silence, a revoked token and an error, as the owner sees them (no JS needed)."""
    from datetime import timedelta

    from forge_app.models import utcnow
    from forge_app.models.distribution import AccessToken
    from forge_app.models.instances import LiveInstance

    forge = live_forge
    project_id, set_id, token, _ = seed(forge)
    now = utcnow()
    with forge.app.app_context():
        project = db.session.get(Project, project_id)
        owner = db.session.query(User).filter_by(email=forge.emails["owner"]).one()
        assert project is not None
        old, _ = create_token(project, "legacy batch job", user=owner)
        old.revoked_at = now
        db.session.flush()
        publication_content = latest_release(
            db.session, db.session.query(PromptSet).filter_by(project_id=project_id).one()
        )
        assert publication_content is not None
        content = publication_content.content_sha256
        rows = [
            ("web-1", token[6:18], "0.1.0", content, 1, None, timedelta(0)),
            ("web-2", token[6:18], "0.0.9", "d" * 64, 1, None, timedelta(0)),
            ("web-3", token[6:18], "0.1.0", content, 1, None, timedelta(hours=2)),
            (
                "batch-1",
                old.token_id,
                "0.1.0",
                content,
                1,
                "cannot decrypt the bundle",
                timedelta(0),
            ),
            (
                "web-4",
                token[6:18],
                "0.1.0",
                content,
                1,
                "the store cannot be reached",
                timedelta(0),
            ),
        ]
        for host, token_id, version, sha, sequence, error, ago in rows:
            db.session.add(
                LiveInstance(
                    project_id=project_id,
                    instance_id=str(uuid.uuid4()),
                    token_id=token_id,
                    hostname=host,
                    channel="production",
                    mode="accepting",
                    sequence=sequence,
                    releases=[
                        {"prompt_set_id": str(set_id), "version": version, "content_sha256": sha}
                    ],
                    last_error=error,
                    client_version="0.1.0",
                    first_seen_at=now - ago,
                    last_seen_at=now - ago,
                )
            )
        db.session.commit()
        assert db.session.query(AccessToken).count() == 2
    sign_in(page, forge, "owner")
    page.goto(f"{forge.url}/projects/{project_id}/instances")
    expect(page.locator("tr.needs-attention")).to_have_count(3)  # drift, revoked, error
    expect(page.locator("tr.is-stale")).to_have_count(1)
    expect(page.locator("tr", has_text="web-2")).to_contain_text(
        re.compile(r"Drift: should serve (Support bot )?0\.1\.0")
    )
    expect(page.locator("tr", has_text="batch-1")).to_contain_text("Revoked token")
    expect(page.locator("tr", has_text="web-3").locator("a.button")).to_contain_text("Forget…")
    page.screenshot(path=str(screenshots / "flow-06-instances-problems.png"), full_page=True)
    page.select_option("#filter-show", "attention")
    page.click("button:has-text('Apply')")
    expect(page.locator("tbody tr")).to_have_count(4)
