"""``unit_of_work``: one service call as one transaction, for the views and the REST API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.models import Organisation, utcnow
from forge_app.models.accounts import LoginId, RevokedSession
from forge_app.services import users
from forge_app.services.transaction import unit_of_work
from tests.forge_app.conftest import World


def _rename(org_id: int, name: str, *, fail: bool = False) -> str:
    org = db.session.get(Organisation, org_id)
    assert org is not None
    org.name = name
    db.session.flush()
    if fail:
        raise ForgeError("Refused")
    return org.name


def _name(org_id: int) -> str:
    db.session.expire_all()
    org = db.session.get(Organisation, org_id)
    assert org is not None
    return org.name


def test_the_work_is_committed_when_it_returns(app: Flask, world: World) -> None:
    with app.app_context():
        assert unit_of_work(_rename, world.org_id, "Renamed") == "Renamed"
        db.session.rollback()  # nothing left to roll back: it is committed
        assert _name(world.org_id) == "Renamed"


def test_the_work_is_rolled_back_and_the_error_raised(app: Flask, world: World) -> None:
    with app.app_context():
        before = _name(world.org_id)
        with pytest.raises(ForgeError, match="Refused"):
            unit_of_work(_rename, world.org_id, "Half done", fail=True)
        assert _name(world.org_id) == before
        assert not db.session.dirty and not db.session.new


def test_revoke_login_refuses_the_session_until_it_would_expire(app: Flask, world: World) -> None:
    with app.app_context():
        issued = int(utcnow().timestamp())
        old = RevokedSession(
            session_id="expired",
            user_id=world.users["owner"],
            expires_at=utcnow() - timedelta(minutes=1),
        )
        db.session.add(old)
        db.session.commit()
        login = LoginId(world.users["owner"], "stamp", "s1", issued)
        users.revoke_login(db.session, login, timedelta(hours=12))
        db.session.rollback()
        rows = {r.session_id: r for r in db.session.scalars(select(RevokedSession))}
        assert set(rows) == {"s1"}, "the expired refusal is forgotten, the new one committed"
        kept = rows["s1"].expires_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)
        assert timedelta(hours=11) < kept <= timedelta(hours=12)
