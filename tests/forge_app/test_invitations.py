"""Invitations: a single-use link with an expiry for one role; the invited person chooses their
own password; every step audited; the owner never learns whether an e-mail has an account."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select, update

from forge_app.extensions import db
from forge_app.models import AuditEvent, Membership, User, utcnow
from forge_app.models.invitations import Invitation
from tests.forge_app.conftest import World, login

NEW_PASSWORD = "a long new pass phrase"


def _invite(owner: Any, world: World, role: str = "editor", days: str = "7") -> str:
    response = owner.post(
        f"/orgs/{world.org_slug}/invitations", data={"role": role, "days": days, "note": "Ana"}
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    match = re.search(r'value="(http://[^"]+/orgs/join/(inv_[^"]+))"', response.get_data(True))
    assert match, "the page shows the link once"
    return match.group(2)


def _membership(app: Flask, world: World, email: str) -> str | None:
    with app.app_context():
        return db.session.scalar(
            select(Membership.role_name)
            .join(User, User.id == Membership.user_id)
            .where(User.email == email, Membership.org_id == world.org_id)
        )


def test_new_person_sets_own_password_and_joins_once(
    app: Flask, world: World, client_as: Any
) -> None:
    token = _invite(client_as("owner"), world, role="reviewer")
    with app.app_context():
        stored = db.session.scalar(select(Invitation))
        assert stored is not None and stored.role_name == "reviewer"
        assert token not in stored.secret_hash and len(stored.secret_hash) == 64
    guest = app.test_client()
    page = guest.get(f"/orgs/join/{token}")
    assert page.status_code == 200 and page.headers["Referrer-Policy"] == "no-referrer"
    assert "Join Acme" in page.get_data(True) and "reviewer" in page.get_data(True)
    form = {"email": "ana@example.com", "name": "Ana", "password": NEW_PASSWORD}
    response = guest.post(f"/orgs/join/{token}", data={**form, "confirm": NEW_PASSWORD})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert _membership(app, world, "ana@example.com") == "reviewer"
    again = app.test_client().post(
        f"/orgs/join/{token}", data={**form, "email": "bo@example.com", "confirm": NEW_PASSWORD}
    )
    assert again.status_code == 410 and "already used" in again.get_data(True)
    assert _membership(app, world, "bo@example.com") is None
    with app.app_context():
        actions = [e.action for e in db.session.scalars(select(AuditEvent))]
        ana = db.session.scalar(select(User).where(User.email == "ana@example.com"))
        assert ana is not None and ana.password_hash.startswith("scrypt")
    assert actions == ["org.invite_create", "user.create", "org.invite_accept"]


def test_expired_and_withdrawn_links_do_nothing(app: Flask, world: World, client_as: Any) -> None:
    owner = client_as("owner")
    expired, withdrawn = _invite(owner, world), _invite(owner, world, days="1")
    with app.app_context():
        db.session.execute(
            update(Invitation)
            .where(Invitation.token_id == expired.split("_")[1])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        pending = db.session.scalar(
            select(Invitation.id).where(Invitation.token_id == withdrawn.split("_")[1])
        )
        db.session.commit()
    owner.post(f"/orgs/{world.org_slug}/invitations/{pending}/revoke")
    signed_in = client_as("outsider")
    for token, word in ((expired, "expired"), (withdrawn, "withdrawn")):
        response = signed_in.post(f"/orgs/join/{token}")
        assert response.status_code == 410 and word in response.get_data(True)
    assert _membership(app, world, world.emails["outsider"]) is None
    with app.app_context():
        assert "org.invite_revoke" in set(db.session.scalars(select(AuditEvent.action)))


def test_wrong_secret_and_garbage_are_refused_alike(
    app: Flask, world: World, client_as: Any
) -> None:
    token = _invite(client_as("owner"), world)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    texts = set()
    for bad in (forged, "inv_nope", "x" * 80):
        response = app.test_client().get(f"/orgs/join/{bad}")
        assert response.status_code == 410
        texts.add("not valid" in response.get_data(True))
    assert texts == {True}
    assert app.test_client().get(f"/orgs/join/{token}").status_code == 200  # still usable


def test_signed_in_user_joins_and_member_keeps_invitation_unused(
    app: Flask, world: World, client_as: Any
) -> None:
    token = _invite(client_as("owner"), world, role="viewer")
    member = client_as("editor")
    response = member.post(f"/orgs/join/{token}")
    assert response.status_code == 409 and "already editor" in response.get_data(True)
    outsider = client_as("outsider")
    assert outsider.get(f"/orgs/join/{token}").status_code == 200
    assert outsider.post(f"/orgs/join/{token}").status_code == 302
    assert _membership(app, world, world.emails["outsider"]) == "viewer"


def test_account_form_is_validated_on_the_server(app: Flask, world: World, client_as: Any) -> None:
    token = _invite(client_as("owner"), world)
    guest = app.test_client()
    short = guest.post(
        f"/orgs/join/{token}",
        data={"email": "cy@example.com", "password": "short", "confirm": "short"},
    )
    page = short.get_data(True)
    assert short.status_code == 400
    assert 'id="password-error"' in page and "at least 10 characters" in page
    taken = guest.post(
        f"/orgs/join/{token}",
        data={"email": world.emails["viewer"], "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert taken.status_code == 400 and 'id="email-error"' in taken.get_data(True)
    assert "already has an account" in taken.get_data(True)
    with app.app_context():  # nothing was used up by the failed attempts
        assert db.session.scalar(select(Invitation.accepted_at)) is None


def test_only_owners_invite_and_the_email_form_is_gone(world: World, client_as: Any) -> None:
    editor = client_as("editor")
    url = f"/orgs/{world.org_slug}/invitations"
    assert editor.post(url, data={"role": "owner", "days": "7"}).status_code == 403
    owner = client_as("owner")
    assert owner.post(url, data={"role": "owner", "days": "365"}).status_code == 302
    page = owner.get(f"/orgs/{world.org_slug}").get_data(True)
    assert "Invite a member" in page and "existing user" not in page
    assert owner.post(f"/orgs/{world.org_slug}/members", data={"email": "x@y.z"}).status_code in (
        404,
        405,
    )


def test_csrf_protects_joining(csrf_app: Flask, csrf_world: World) -> None:
    owner = login(csrf_app.test_client(), csrf_world.users["owner"])
    assert (
        owner.post(f"/orgs/{csrf_world.org_slug}/invitations", data={"role": "viewer"}).status_code
        == 400
    )
