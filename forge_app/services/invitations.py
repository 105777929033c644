"""Invitations: an owner makes a single-use link for a role; whoever opens it joins.

    >>> invitation, link_token = create_invitation(session, org, Role.EDITOR, owner, days=7)
    >>> accept_invitation(session, link_token, user)  # doctest: +SKIP

The owner never types an e-mail, so the FORGE never says whether an account exists. The token
text is ``inv_<token_id>_<secret>`` (``secret``: 32 random bytes, base64url); only the SHA-256
of the whole text is stored, compared in constant time. Accepting marks the invitation used by
one conditional ``UPDATE`` (used, withdrawn and expired invitations match no row), so a link
works once even when it is opened twice at the same moment. Every step is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import rows_changed
from forge_app.models import Membership, Organisation, Role, User, utcnow
from forge_app.models.invitations import Invitation
from forge_app.services.users import add_member

__all__ = [
    "EXPIRY_DAYS",
    "InvitationError",
    "accept_invitation",
    "create_invitation",
    "find_invitation",
    "pending_invitations",
    "revoke_invitation",
]

#: The expiries an owner can choose, in days.
EXPIRY_DAYS = (1, 7, 14)
_TOKEN_RE = re.compile(r"^inv_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class InvitationError(ForgeError, ValueError):
    """An invitation that cannot be used, with one sentence for the person holding the link."""

    default_kind = Kind.INVALID


@dataclass(frozen=True)
class _Parsed:
    token_id: str
    digest: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def create_invitation(
    session: Session, org: Organisation, role: Role, by: User, *, days: int, note: str = ""
) -> tuple[Invitation, str]:
    """A new invitation (added, not committed) and its token text, shown once to the owner.

    Raises:
        InvitationError: for an expiry not in ``EXPIRY_DAYS``.
    """
    if days not in EXPIRY_DAYS:
        raise InvitationError(f"Choose an expiry of {', '.join(map(str, EXPIRY_DAYS))} days.")
    token_id = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    text = f"inv_{token_id}_{secrets.token_urlsafe(32)}"
    invitation = Invitation(
        org_id=org.id,
        token_id=token_id,
        secret_hash=_digest(text),
        role_name=role.label,
        note=note.strip()[:120],
        created_by_id=by.id,
        created_at=utcnow(),
        expires_at=utcnow() + timedelta(days=days),
    )
    session.add(invitation)
    session.flush()
    record_event(
        "org.invite_create",
        org,
        org_id=org.id,
        actor=by,
        session=session,
        details={"role": role.label, "expires_in_days": days, "for": invitation.note or None},
    )
    return invitation, text


def _parse(text: str) -> _Parsed | None:
    match = _TOKEN_RE.match(text or "")
    return _Parsed(match.group(1), _digest(text)) if match else None


def find_invitation(session: Session, text: str) -> Invitation:
    """The usable invitation a link's token names.

    Raises:
        InvitationError: unknown or wrong token, used, withdrawn or expired.
    """
    parsed = _parse(text)
    invitation = (
        session.scalar(select(Invitation).where(Invitation.token_id == parsed.token_id))
        if parsed
        else None
    )
    # Constant-time compare of the stored hash, and one message for "unknown" and "wrong".
    if invitation is None or parsed is None:
        hmac.compare_digest("0" * 64, _digest(text or ""))
        raise InvitationError("This invitation link is not valid: check that it was copied whole.")
    if not hmac.compare_digest(invitation.secret_hash, parsed.digest):
        raise InvitationError("This invitation link is not valid: check that it was copied whole.")
    if invitation.accepted_at is not None:
        raise InvitationError("This invitation was already used: ask an owner for a new one.")
    if invitation.revoked_at is not None:
        raise InvitationError("This invitation was withdrawn: ask an owner for a new one.")
    if invitation.expires_at <= utcnow():
        raise InvitationError("This invitation has expired: ask an owner for a new one.")
    return invitation


def accept_invitation(session: Session, text: str, user: User) -> Membership:
    """Join the invitation's organisation with its role, and use the invitation up.

    Raises:
        InvitationError: the link is not usable, or ``user`` is already a member (the
            invitation then stays unused, for someone else).
    """
    invitation = find_invitation(session, text)
    existing = session.scalar(
        select(Membership).where(
            Membership.org_id == invitation.org_id, Membership.user_id == user.id
        )
    )
    if existing is not None:
        raise InvitationError(
            f"You are already {existing.role.label} of {invitation.org.name}; the invitation "
            "stays unused."
        )
    now = utcnow()
    result = session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation.id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
        .values(accepted_at=now, accepted_by_id=user.id)
        .execution_options(synchronize_session=False)
    )
    if rows_changed(result) != 1:
        raise InvitationError("This invitation was already used: ask an owner for a new one.")
    membership = add_member(session, invitation.org, user, invitation.role)
    record_event(
        "org.invite_accept",
        user,
        org_id=invitation.org_id,
        actor=user,
        session=session,
        details={"role": invitation.role.label, "invitation": invitation.token_id},
    )
    return membership


def pending_invitations(session: Session, org: Organisation) -> list[Invitation]:
    """Invitations of ``org`` not yet used, withdrawn or expired, newest first."""
    return list(
        session.scalars(
            select(Invitation)
            .where(
                Invitation.org_id == org.id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > utcnow(),
            )
            .order_by(Invitation.id.desc())
        )
    )


def revoke_invitation(session: Session, org: Organisation, invitation_id: int, by: User) -> bool:
    """Withdraw a pending invitation; False when there is none (already used, say)."""
    invitation = session.scalar(
        select(Invitation).where(Invitation.id == invitation_id, Invitation.org_id == org.id)
    )
    if invitation is None or invitation.accepted_at or invitation.revoked_at:
        return False
    invitation.revoked_at = utcnow()
    record_event(
        "org.invite_revoke",
        org,
        org_id=org.id,
        actor=by,
        session=session,
        details={"role": invitation.role_name, "for": invitation.note or None},
    )
    return True
