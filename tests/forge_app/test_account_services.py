"""The account and organisation services the views call (users.py, orgs.py).

Each commits its change with its audit event, or refuses with a ForgeError and changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.models import AuditEvent, Membership, Organisation, Role, User
from forge_app.services import orgs, users
from forge_app.services.invitations import InvitationError, create_invitation
from forge_app.services.users import AccountError
from tests.forge_app.conftest import PASSWORD as WORLD_PASSWORD
from tests.forge_app.conftest import World

PASSWORD = "a long enough passphrase"


def _events(action: str) -> list[AuditEvent]:
    db.session.rollback()  # only what was committed
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _user(world: World, name: str) -> User:
    found = db.session.get(User, world.users[name])
    assert found is not None
    return found


def _org(world: World) -> Organisation:
    found = db.session.get(Organisation, world.org_id)
    assert found is not None
    return found


def _membership(world: World, name: str) -> Membership:
    found = db.session.scalar(
        select(Membership).where(
            Membership.org_id == world.org_id, Membership.user_id == world.users[name]
        )
    )
    assert found is not None
    return found


def test_register_user_audits_the_actor_and_refuses_a_taken_email(app: Any, world: World) -> None:
    with app.app_context():
        admin = _user(world, "admin")
        user = users.register_user(db.session, "Ada@Example.com", PASSWORD, actor=admin)
        (event,) = _events("user.create")
        assert (event.actor_id, event.object_id) == (admin.id, str(user.id))
        with pytest.raises(AccountError, match="already exists"):
            users.register_user(db.session, "ada@example.com", PASSWORD, actor=admin)
        assert len(_events("user.create")) == 1


def test_change_password_checks_the_current_one(app: Any, world: World, password_hash: str) -> None:
    with app.app_context():
        editor = _user(world, "editor")
        with pytest.raises(AccountError, match=r"This is not your current password\."):
            users.change_password(db.session, editor, "wrong", "another long passphrase")
        assert _events("user.password") == [] and editor.password_hash == password_hash
        users.change_password(db.session, editor, WORLD_PASSWORD, PASSWORD)
        assert check_password_hash(_user(world, "editor").password_hash, PASSWORD)
        (event,) = _events("user.password")
        assert event.actor_id == editor.id


def test_sign_out_everywhere_bumps_the_stamp(app: Any, world: World) -> None:
    with app.app_context():
        viewer = _user(world, "viewer")
        before = viewer.session_generation
        users.sign_out_everywhere(db.session, viewer)
        (event,) = _events("user.sign_out_everywhere")
        assert event.actor_id == viewer.id
        db.session.expire_all()  # the update bypassed the loaded user
        assert _user(world, "viewer").session_generation == before + 1


def test_create_org_with_owner(app: Any, world: World) -> None:
    with app.app_context():
        admin = _user(world, "admin")
        org = orgs.create_org_with_owner(db.session, "Initech", None, admin)
        assert org.slug == "initech"
        (event,) = _events("org.create")
        assert (event.org_id, event.actor_id) == (org.id, admin.id)
        with pytest.raises(AccountError, match="already exists"):
            orgs.create_org_with_owner(db.session, "Initech", "initech", admin)
        assert db.session.scalar(select(func.count(Organisation.id))) == 3


def test_the_last_owner_can_neither_leave_nor_step_down(app: Any, world: World) -> None:
    with app.app_context():
        org, owner = _org(world), _user(world, "owner")
        last = _membership(world, "owner")
        with pytest.raises(ForgeError, match=r"An organisation needs at least one owner\."):
            orgs.remove_member(db.session, org, last, actor=owner)
        with pytest.raises(ForgeError, match=r"An organisation needs at least one owner\."):
            orgs.change_role(db.session, org, last, Role.VIEWER, actor=owner)
        assert orgs.change_role(db.session, org, last, Role.OWNER, actor=owner) is False
        db.session.rollback()
        assert _membership(world, "owner").role == Role.OWNER
        assert _events("org.member_remove") == [] and _events("org.member_role") == []


def test_change_role_and_remove_member_are_audited(app: Any, world: World) -> None:
    with app.app_context():
        org, owner = _org(world), _user(world, "owner")
        assert orgs.change_role(
            db.session, org, _membership(world, "editor"), Role.OWNER, actor=owner
        )
        (role_event,) = _events("org.member_role")
        assert role_event.details == {"from": "editor", "to": "owner"}
        # Two owners now: the first may leave.
        removed = orgs.remove_member(db.session, org, _membership(world, "owner"), actor=owner)
        assert removed.id == world.users["owner"]
        assert orgs.membership_in(db.session, org, 10_000) is None
        (remove_event,) = _events("org.member_remove")
        assert (remove_event.org_id, remove_event.object_id) == (org.id, str(removed.id))


def _invite(world: World, role: Role = Role.REVIEWER) -> str:
    _, text = create_invitation(db.session, _org(world), role, _user(world, "owner"), days=7)
    db.session.commit()
    return text


def test_join_with_new_account_is_one_transaction(app: Any, world: World) -> None:
    with app.app_context():
        token = _invite(world)
        with pytest.raises(AccountError, match="already exists"):
            orgs.join_with_new_account(db.session, token, world.emails["viewer"], PASSWORD, "")
        db.session.rollback()
        membership = orgs.join_with_new_account(db.session, token, "ana@example.com", PASSWORD, "")
        assert membership.role == Role.REVIEWER and membership.user.email == "ana@example.com"
        (event,) = _events("user.create")
        assert (event.actor_id, event.org_id) == (membership.user_id, world.org_id)
        with pytest.raises(InvitationError, match="already used"):
            orgs.join_with_new_account(db.session, token, "bo@example.com", PASSWORD, "")
        db.session.rollback()
        assert db.session.scalar(select(User.id).where(User.email == "bo@example.com")) is None
        assert len(_events("user.create")) == 1 and len(_events("org.invite_accept")) == 1


def test_join_refuses_a_member(app: Any, world: World) -> None:
    with app.app_context():
        token = _invite(world, Role.VIEWER)
        with pytest.raises(InvitationError, match="already"):
            orgs.join(db.session, token, _user(world, "editor"))
        db.session.rollback()
        assert orgs.join(db.session, token, _user(world, "outsider")).role == Role.VIEWER
        assert len(_events("org.invite_accept")) == 1
