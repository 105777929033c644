"""A seeded project for the issue-13 browser tests: a set with a locked version (two, the
second published over the first, so the channel has a rollback entry), a token, a viewer, and a
LIVE instance that reported."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from forge_app.extensions import db
from forge_app.models import Organisation, Project, PromptSet, Role, User
from forge_app.services import publishing
from forge_app.services.drafts import replace_prompts
from forge_app.services.heartbeats import parse_heartbeat, record_heartbeat
from forge_app.services.tokens import create_token
from forge_app.services.users import add_member, create_user, hash_password
from forge_app.services.versions import latest_release
from forge_app.services.workflow import approve, submit, unlock
from tests.e2e.conftest import PASSWORD, LiveForge

PROMPTS = {
    "welcome.message": {
        "template": "We are reaching out to {{ name }} today.\nItems: {{ items|length }}",
        "metadata": {"description": "Greets a user", "temperature": 0.2},
    },
    "support.chat": {
        "messages": [
            {"role": "system", "template": "You help {{ product }} users."},
            {"role": "user", "template": "{{ question }}"},
        ],
        "metadata": {},
    },
}


@dataclass
class Seeded:
    project_id: uuid.UUID
    set_id: uuid.UUID
    token_text: str

    def project(self, forge: LiveForge) -> str:
        return f"{forge.url}/projects/{self.project_id}"

    def set(self, forge: LiveForge) -> str:
        return f"{self.project(forge)}/sets/{self.set_id}"


def _lock(session: object, prompt_set: PromptSet, editor: User, reviewer: User, log: str) -> None:
    submit(
        db.session,
        prompt_set,
        editor,
        role=Role.EDITOR,
        bump="minor",
        changelog=log,
        expected_revision=prompt_set.revision,
    )
    approve(
        db.session, prompt_set, reviewer, role=Role.REVIEWER, expected_revision=prompt_set.revision
    )


def seed(
    forge: LiveForge, *, publish: bool = True, token: bool = True, unlocked: bool = False
) -> Seeded:
    with forge.app.app_context():
        session = db.session
        org = session.query(Organisation).filter_by(slug="acme").one()
        users = {u.email: u for u in session.query(User)}
        editor, reviewer = users[forge.emails["editor"]], users[forge.emails["reviewer"]]
        owner = users[forge.emails["owner"]]
        if "viewer@acme.test" not in users:
            viewer = create_user(
                session,
                "viewer@acme.test",
                name="Viewer Person",
                password_hash=hash_password(PASSWORD),
            )
            add_member(session, org, viewer, Role.VIEWER)
            forge.emails["viewer"] = "viewer@acme.test"
        project = Project(org_id=org.id, name="Demo example app", description="Polish")
        session.add(project)
        session.flush()
        prompt_set = PromptSet(project_id=project.id, name="Support bot", description="")
        session.add(prompt_set)
        session.flush()
        replace_prompts(session, prompt_set, PROMPTS, editor, remove_missing=True)
        _lock(session, prompt_set, editor, reviewer, "First version")
        session.commit()
        text = ""
        if token:
            _, text = create_token(project, "web app", user=owner)
            session.commit()
        if publish:
            publishing.ensure_default_channels(project)
            channel = publishing.get_channel(project, "production")
            assert channel is not None
            first = latest_release(session, prompt_set)
            assert first is not None
            publishing.publish_version(first, channel, user=owner)
            session.commit()
            unlock(
                session, prompt_set, owner, role=Role.OWNER, expected_revision=prompt_set.revision
            )
            changed = dict(PROMPTS)
            changed["welcome.message"] = {
                "template": "We are contacting {{ name }} today.\nItems: {{ items|length }}",
                "metadata": {"description": "Greets a user", "temperature": 0.2},
            }
            replace_prompts(session, prompt_set, changed, editor, remove_missing=True)
            _lock(session, prompt_set, editor, reviewer, "Plainer wording")
            session.commit()
            second = latest_release(session, prompt_set)
            assert second is not None
            publication = publishing.publish_version(second, channel, user=owner)
            session.commit()
            if text:
                heartbeat = {
                    "instance_id": str(uuid.uuid4()),
                    "hostname": "Demo example app",
                    "project_id": str(project.id),
                    "channel": "production",
                    "mode": "accepting",
                    "sequence": publication.sequence,
                    "releases": [
                        {
                            "prompt_set_id": str(prompt_set.id),
                            "version": second.version,
                            "content_sha256": second.content_sha256,
                        }
                    ],
                    "last_error": None,
                    "client_version": "0.1.0",
                }
                record_heartbeat(
                    session,
                    project_id=project.id,
                    token_id=text.split("_")[1],
                    body=parse_heartbeat(json.dumps(heartbeat).encode()),
                )
                session.commit()
        if unlocked:
            unlock(
                session, prompt_set, owner, role=Role.OWNER, expected_revision=prompt_set.revision
            )
            session.commit()
        return Seeded(project.id, prompt_set.id, text)


def sign_in(page: object, forge: LiveForge, who: str) -> None:
    import re

    page.goto(f"{forge.url}/login")  # type: ignore[attr-defined]
    page.fill("#email", forge.emails[who])  # type: ignore[attr-defined]
    page.fill("#password", PASSWORD)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*/projects/$"))  # type: ignore[attr-defined]
