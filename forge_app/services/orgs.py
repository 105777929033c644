"""Organisations: making one, its members' roles, joining by invitation.

Each change is audited and committed here; the views only parse the request and answer.
An organisation always keeps at least one owner:

    >>> change_role(session, org, last_owner, Role.VIEWER, actor=owner)  # doctest: +SKIP
    Traceback (most recent call last):
    ForgeError: An organisation needs at least one owner.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from forge_app.audit import record_event
from forge_app.errors import ForgeError
from forge_app.models import Membership, Organisation, Role, User
from forge_app.services.invitations import accept_invitation, find_invitation
from forge_app.services.users import add_member, create_org, create_user

__all__ = [
    "LAST_OWNER",
    "change_role",
    "create_org_with_owner",
    "join",
    "join_with_new_account",
    "membership_in",
    "remove_member",
]

LAST_OWNER = "An organisation needs at least one owner."


def create_org_with_owner(
    session: Session, name: str, slug: str | None, owner: User
) -> Organisation:
    """A new organisation with ``owner`` as its owner; audits ``org.create``, commits.

    Raises:
        AccountError: as for :func:`~forge_app.services.users.create_org` (nothing is saved).
    """
    org = create_org(session, name, slug)
    add_member(session, org, owner, Role.OWNER)
    record_event("org.create", org, org_id=org.id, actor=owner, session=session)
    session.commit()
    return org


def membership_in(session: Session, org: Organisation, membership_id: int) -> Membership | None:
    """The membership ``membership_id`` of ``org``, or None."""
    return session.scalar(
        select(Membership).where(Membership.id == membership_id, Membership.org_id == org.id)
    )


def _check_owner_stays(session: Session, org: Organisation, membership: Membership) -> None:
    if membership.role != Role.OWNER:
        return
    owners = session.scalar(
        select(func.count(Membership.id)).where(
            Membership.org_id == org.id, Membership.role_name == Role.OWNER.label
        )
    )
    if owners == 1:
        raise ForgeError(LAST_OWNER)


def remove_member(
    session: Session, org: Organisation, membership: Membership, *, actor: User
) -> User:
    """Remove ``membership`` from ``org``; audits ``org.member_remove``, commits; the user.

    Raises:
        ForgeError: it is the organisation's last owner.
    """
    _check_owner_stays(session, org, membership)
    user = membership.user
    session.delete(membership)
    record_event("org.member_remove", user, org_id=org.id, actor=actor, session=session)
    session.commit()
    return user


def change_role(
    session: Session, org: Organisation, membership: Membership, role: Role, *, actor: User
) -> bool:
    """Give ``membership`` the ``role``; audits ``org.member_role`` and commits when it
    changes (False when the member had that role already).

    Raises:
        ForgeError: the last owner would stop being one.
    """
    if role != Role.OWNER:
        _check_owner_stays(session, org, membership)
    if role == membership.role:
        return False
    old = membership.role
    membership.role = role
    details = {"from": old.label, "to": role.label}
    record_event(
        "org.member_role",
        membership.user,
        org_id=org.id,
        actor=actor,
        session=session,
        details=details,
    )
    session.commit()
    return True


def join(session: Session, token: str, user: User) -> Membership:
    """``user`` accepts the invitation ``token`` (audited there), commits.

    Raises:
        InvitationError: the link is not usable or ``user`` is a member already.
    """
    membership = accept_invitation(session, token, user)
    session.commit()
    return membership


def join_with_new_account(
    session: Session, token: str, email: str, password: str, name: str
) -> Membership:
    """Make an account (audited as ``user.create`` by itself) and accept the invitation
    ``token`` with it, in one transaction; commits.

    Raises:
        AccountError: the e-mail or password is not acceptable (nothing is saved).
        InvitationError: the link is not usable (nothing is saved).
    """
    invitation = find_invitation(session, token)
    user = create_user(session, email, password, name=name)
    record_event("user.create", user, org_id=invitation.org_id, actor=user, session=session)
    return join(session, token, user)
