"""A FORGE app for the integration tests, seeded with one project, and releasing a new LOCKED
version of a prompt set as the FORGE's services do it.

Shared by the integration tests and the fleet benchmark (``benchmarks/fleet_setup.py``), which
already import test helpers (``tests.servers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from forge_app import create_app
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, Role, SetStatus, User
from forge_app.schema import upgrade_database
from forge_app.services.drafts import replace_prompts
from forge_app.services.users import add_member, create_org, create_user, hash_password
from forge_app.services.workflow import approve, submit, unlock


def live_forge_app(tmp_path: Path, store: str, **settings: Any) -> Flask:
    """A FORGE app on a fresh SQLite database in ``tmp_path``, publishing to ``store``."""
    url = f"sqlite:///{tmp_path / 'forge.db'}"
    upgrade_database(url)
    return create_app(
        {
            "FORGE_DATABASE_URL": url,
            "FORGE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FORGE_SECRET_KEY": "live-" + "k" * 40,
            "FORGE_DATA_KEY": "live-data-key",
            "FORGE_STORE_URL": store,
            "TESTING": True,
            **settings,
        }
    )


@dataclass(frozen=True)
class Checkout:
    """The seeded organisation "Acme": its project, owner, reviewer (if any) and prompt set."""

    project_id: str
    owner_id: int
    reviewer_id: int | None
    set_id: int


def seed_checkout(app: Flask, *, reviewer: bool = False) -> Checkout:
    """Acme with an owner (and a reviewer), project "Checkout" and its empty set "Main"."""
    with app.app_context():
        org = create_org(db.session, "Acme", "acme")
        owner = create_user(
            db.session, "owner@acme.test", name="Owner", password_hash=hash_password("x" * 12)
        )
        add_member(db.session, org, owner, Role.OWNER)
        reviewer_id = None
        if reviewer:
            member = create_user(
                db.session, "reviewer@acme.test", name="Reviewer", password_hash=owner.password_hash
            )
            add_member(db.session, org, member, Role.REVIEWER)
            reviewer_id = member.id
        project = Project(org_id=org.id, name="Checkout", description="")
        db.session.add(project)
        db.session.flush()
        prompt_set = PromptSet(project_id=project.id, name="Main", description="", revision=1)
        db.session.add(prompt_set)
        db.session.commit()
        return Checkout(str(project.id), owner.id, reviewer_id, prompt_set.id)


def release_locked_version(
    session: Session,
    prompt_set: PromptSet,
    owner: User,
    reviewer: User,
    template: str,
    *,
    changelog: str = "change",
) -> None:
    """Unlock the set if it is LOCKED, make ``welcome.message`` say ``template`` (as the
    owner), submit a minor version and approve it (as the reviewer), then commit."""
    if prompt_set.status == SetStatus.LOCKED.value:
        unlock(session, prompt_set, owner, role=Role.OWNER, expected_revision=prompt_set.revision)
    replace_prompts(
        session, prompt_set, {"welcome.message": {"template": template}}, owner, remove_missing=True
    )
    submit(
        session,
        prompt_set,
        owner,
        role=Role.OWNER,
        bump="minor",
        changelog=changelog,
        expected_revision=prompt_set.revision,
    )
    approve(
        session, prompt_set, reviewer, role=Role.REVIEWER, expected_revision=prompt_set.revision
    )
    session.commit()
