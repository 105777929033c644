"""Organisations, members, projects, prompt set settings, admin pages and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Flask

from forge_app.extensions import db
from forge_app.models import AuditEvent, Membership, Organisation, Project, Prompt, PromptSet, User
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version


def test_owner_manages_members_but_keeps_one_owner(
    app: Flask, world: World, client_as: Any
) -> None:
    owner = client_as("owner")
    base = f"/orgs/{world.org_slug}"
    response = owner.post(f"{base}/invitations", data={"role": "viewer", "days": "7"})
    token = response.get_data(True).split("/orgs/join/")[1].split('"')[0]
    assert client_as("outsider").post(f"/orgs/join/{token}").status_code == 302
    with app.app_context():
        own = db.session.query(Membership).filter_by(user_id=world.users["owner"]).one().id
        outsider = (
            db.session.query(Membership)
            .filter_by(user_id=world.users["outsider"], org_id=world.org_id)
            .one()
            .id
        )
    owner.post(f"{base}/members/{outsider}", data={"role": "editor"})
    owner.post(f"{base}/members/{own}", data={"role": "viewer"})  # the last owner stays owner
    assert "at least one owner" in owner.get(base).get_data(True)
    owner.post(f"{base}/members/{outsider}", data={"action": "remove"})
    with app.app_context():
        roles = {
            m.user.email: m.role_name
            for m in db.session.query(Membership).filter_by(org_id=world.org_id)
        }
        assert roles["owner@example.com"] == "owner"
        assert "outsider@example.com" not in roles
        actions = [e.action for e in db.session.query(AuditEvent).order_by(AuditEvent.id)]
    assert actions == [
        "org.invite_create",
        "org.invite_accept",
        "org.member_role",
        "org.member_remove",
    ]


def test_owner_creates_a_project_and_editor_a_prompt_set(
    app: Flask, world: World, client_as: Any
) -> None:
    owner = client_as("owner")
    response = owner.post(
        f"/projects/new/{world.org_slug}", data={"name": "Checkout", "description": ""}
    )
    assert response.status_code == 200 and "already has a project" in response.get_data(True)
    response = owner.post(
        f"/projects/new/{world.org_slug}", data={"name": "Search", "description": "d"}
    )
    assert response.status_code == 302
    project_url = response.headers["Location"]
    editor = client_as("editor")
    response = editor.post(f"{project_url}/sets/new", data={"name": "Ranking"})
    assert response.status_code == 302
    response = editor.post(f"{project_url}/sets/new", data={"name": "Ranking"})
    assert "already has a prompt set" in response.get_data(True)
    page = editor.get(project_url).get_data(True)
    assert "Ranking" in page and "Draft (LIVE)" in page
    assert "Search" in editor.get("/projects/").get_data(True)


def test_prompt_sets_with_versions_cannot_be_deleted(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    owner = client_as("owner")
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    owner.post(f"{set_url}/delete")
    with app.app_context():
        assert db.session.get(PromptSet, world.set_id) is not None
        other = PromptSet(
            project_id=world.project_id, name="Scratch", description="", status="LIVE"
        )
        db.session.add(other)
        db.session.flush()
        db.session.add(
            Prompt(
                prompt_set_id=other.id,
                key="a",
                kind="text",
                template="x",
                meta={},
                variables=[],
                samples={},
                search_text="a",
            )
        )
        db.session.commit()
        other_id = other.id
    response = owner.post(f"/projects/{world.project_id}/sets/{other_id}/delete")
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(PromptSet, other_id) is None
        assert db.session.query(Prompt).filter_by(prompt_set_id=other_id).count() == 0
        assert db.session.query(AuditEvent).filter_by(action="prompt_set.delete").count() == 1


def test_prompt_set_and_project_settings(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    editor = client_as("editor")
    assert (
        editor.post(f"{set_url}/settings", data={"name": "Renamed", "description": "x"}).status_code
        == 302
    )
    assert client_as("viewer").post(f"{set_url}/settings", data={"name": "No"}).status_code == 403
    project_url = f"/projects/{world.project_id}/settings"
    assert editor.post(project_url, data={"name": "No"}).status_code == 403
    assert client_as("owner").post(project_url, data={"name": "Checkout v2"}).status_code == 302
    with app.app_context():
        assert db.session.get(PromptSet, world.set_id).name == "Renamed"  # type: ignore[union-attr]
        assert db.session.get(Project, world.project_id).name == "Checkout v2"  # type: ignore[union-attr]


def test_admin_creates_users_and_organisations(app: Flask, client_as: Any) -> None:
    admin = client_as("admin")
    response = admin.post(
        "/admin/users",
        data={
            "user-email": "new@example.com",
            "user-name": "New",
            "user-password": "long enough pw",
        },
    )
    assert response.status_code == 302
    response = admin.post(
        "/admin/users", data={"user-email": "new@example.com", "user-password": "long enough pw"}
    )
    assert "already exists" in admin.get("/admin/").get_data(True)
    response = admin.post("/admin/orgs", data={"org-name": "Initech"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/orgs/initech")
    with app.app_context():
        assert db.session.query(User).filter_by(email="new@example.com").one().name == "New"
        org = db.session.query(Organisation).filter_by(slug="initech").one()
        assert [m.role_name for m in org.memberships] == ["owner"]


def test_audit_log_pages(app: Flask, world: World, client_as: Any) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    version = lock_version(app, world)
    app.config["FORGE_PAGE_SIZE"] = 1
    client = client_as("viewer")
    url = f"/projects/{world.project_id}/audit"
    first = client.get(url).get_data(True)
    assert "approved and locked" in first and version in first
    assert "Older entries" in first
    import re

    older = re.search(r'href="([^"]*before=\d+)"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).get_data(True)
    assert "submitted for review" in second


def test_forges_page_says_none_are_configured(client_as: Any) -> None:
    assert "No FORGEs configured." in client_as("viewer").get("/forges/").get_data(True)
