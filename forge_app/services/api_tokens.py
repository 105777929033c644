"""Personal API tokens: create, authenticate (constant time), revoke, rate-limit.

    >>> token, text = create_api_token(user, "ci", scope="read", days=30)   # doctest: +SKIP
    >>> authenticate_api_token(f"Bearer {text}").token is token            # doctest: +SKIP
    True

The text is ``forge_pat_<token_id>_<secret>`` (``token_id``: 12 of ``[a-z0-9]``; ``secret``: 32
random bytes, base64url without padding). Only the SHA-256 of the whole text is stored; lookups
find the row by ``token_id`` and compare hashes with :func:`hmac.compare_digest`, hashing even
for unknown ids so timing does not tell which ids exist. Nothing here logs a token.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.models import User, utcnow
from forge_app.models.api_tokens import API_SCOPES, ApiToken
from forge_app.services.tokens import TOUCH_EVERY, bearer_text, hash_token, record_token_event

__all__ = [
    "EXPIRY_DAYS",
    "ApiTokenError",
    "Authentication",
    "authenticate_api_token",
    "create_api_token",
    "revoke_api_token",
    "user_tokens",
]

#: The expiries a user may choose, in days.
EXPIRY_DAYS = (7, 30, 90, 365)
_TEXT_RE = re.compile(r"^forge_pat_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_ALPHABET = string.ascii_lowercase + string.digits


class ApiTokenError(ForgeError):
    """A token request that cannot be done; ``str()`` is one sentence for the user."""

    default_kind = Kind.INVALID


def create_api_token(
    session: Session,
    user: User,
    name: str,
    *,
    scope: str,
    days: int,
    create_key: str | None = None,
) -> tuple[ApiToken, str]:
    """A new token row (added and audited, not committed) and its text, shown once.

    Raises:
        ApiTokenError: for an empty name, an unknown scope or expiry, or a ``create_key``
            that already made a token (a reloaded form).
    """
    name = name.strip()
    if not name or len(name) > 120:
        raise ApiTokenError("Give the token a name of 1 to 120 characters.")
    if scope not in API_SCOPES:
        raise ApiTokenError("The scope is read or write.")
    if days not in EXPIRY_DAYS:
        raise ApiTokenError(f"Choose an expiry of {', '.join(map(str, EXPIRY_DAYS))} days.")
    if create_key and session.scalar(
        select(ApiToken.id).where(ApiToken.user_id == user.id, ApiToken.create_key == create_key)
    ):
        raise ApiTokenError(
            "This form already created its token; it was shown once. Create another one if "
            "you did not copy it."
        )
    while True:
        token_id = "".join(secrets.choice(_ALPHABET) for _ in range(12))
        if session.scalar(select(ApiToken.id).where(ApiToken.token_id == token_id)) is None:
            break
    text = f"forge_pat_{token_id}_{secrets.token_urlsafe(32)}"
    now = utcnow()
    token = ApiToken(
        user_id=user.id,
        token_id=token_id,
        name=name,
        scope=scope,
        secret_hash=hash_token(text),
        create_key=create_key or None,
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    session.add(token)
    session.flush()
    record_event(
        "api_token.create",
        token,
        actor=user,
        details={"token_id": token_id, "name": name, "scope": scope, "days": days},
        session=session,
    )
    return token, text


def user_tokens(session: Session, user: User) -> list[ApiToken]:
    """The user's tokens, newest first (revoked and expired ones too)."""
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


def revoke_api_token(session: Session, user: User, token_id: str) -> ApiToken:
    """Revoke one of ``user``'s tokens (audited, not committed); revoking twice is fine.

    Raises:
        ApiTokenError: if the user has no such token.
    """
    token = session.scalar(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.token_id == token_id)
    )
    if token is None:
        raise ApiTokenError("You have no such token.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        record_token_event("api_token.revoke", token, user=user, session=session)
    return token


@dataclass(frozen=True)
class Authentication:
    """The outcome of a bearer check: ``token`` is set only when ``problem`` is None."""

    token: ApiToken | None
    problem: str | None


def authenticate_api_token(
    session: Session, header: str | None, *, now: datetime | None = None
) -> Authentication:
    """Check an ``Authorization: Bearer forge_pat_…`` header; records the use when it is good."""
    text = bearer_text(header)
    if text is None:
        return Authentication(None, "Send a personal API token as 'Authorization: Bearer <token>'.")
    match = _TEXT_RE.match(text)
    token = None
    if match is not None:
        token = session.scalar(select(ApiToken).where(ApiToken.token_id == match.group(1)))
    presented = hash_token(text)
    expected = token.secret_hash if token is not None else "0" * 64
    if not hmac.compare_digest(presented, expected) or token is None or token.user is None:
        return Authentication(None, "The API token is unknown.")
    moment = now or utcnow()
    state = token.state(moment)
    if state == "revoked":
        return Authentication(None, "The API token was revoked.")
    if state == "expired":
        return Authentication(None, "The API token has expired.")
    if not token.user.is_active:
        return Authentication(None, "The API token's user is deactivated.")
    if token.last_used_at is None or moment - token.last_used_at >= TOUCH_EVERY:
        token.last_used_at = moment
        session.commit()
    return Authentication(token, None)
