"""Accounts: creating users and organisations, password checks and the sign-in rate limit.

    >>> user = create_user(session, "ada@example.com", "a long passphrase", name="Ada")
    >>> authenticate(session, "ada@example.com", "a long passphrase", ip="127.0.0.1") is user

Passwords are hashed with scrypt (Werkzeug). Failed sign-ins are counted in the database, per
e-mail and per IP address, so every worker process enforces the same limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from forge_app.models import LoginAttempt, Membership, Organisation, Role, User, utcnow

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "AccountError",
    "RateLimited",
    "add_member",
    "authenticate",
    "create_org",
    "create_user",
    "hash_password",
    "normalise_email",
    "slugify",
]

MIN_PASSWORD_LENGTH = 10
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
# A hash to compare against when the user does not exist, so timing does not reveal accounts.
_DUMMY_HASH = generate_password_hash("not a real password", method="scrypt")


class AccountError(ValueError):
    """An invalid account operation, with a message for the user."""


@dataclass(frozen=True)
class RateLimited(Exception):
    """Too many failed sign-ins; ``retry_after`` seconds until the window frees up."""

    retry_after: int

    def __str__(self) -> str:
        minutes = max(1, (self.retry_after + 59) // 60)
        return (
            "Too many failed sign-in attempts. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )


def normalise_email(email: str) -> str:
    return email.strip().lower()


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def check_password(password: str, min_length: int = MIN_PASSWORD_LENGTH) -> None:
    if len(password) < min_length:
        raise AccountError(f"Passwords need at least {min_length} characters.")


def create_user(
    session: Session,
    email: str,
    password: str | None = None,
    *,
    name: str = "",
    is_admin: bool = False,
    password_hash: str | None = None,
) -> User:
    """Add a user (not committed).

    Raises:
        AccountError: for an invalid e-mail, a short password or an e-mail already in use.
    """
    email = normalise_email(email)
    if not _EMAIL_RE.match(email) or len(email) > 254:
        raise AccountError(f"{email!r} is not a valid e-mail address.")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"A user with e-mail {email} already exists.")
    if password_hash is None:
        if password is None:
            raise AccountError("A password is required.")
        check_password(password)
        password_hash = hash_password(password)
    user = User(
        email=email,
        name=(name.strip() or email.split("@")[0])[:120],
        password_hash=password_hash,
        is_admin=is_admin,
        is_active=True,
    )
    session.add(user)
    session.flush()
    return user


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:64] or "org"


def create_org(session: Session, name: str, slug: str | None = None) -> Organisation:
    """Add an organisation (not committed).

    Raises:
        AccountError: for an empty name or a slug already in use.
    """
    name = name.strip()
    if not name:
        raise AccountError("An organisation needs a name.")
    slug = slugify(slug or name)
    if session.scalar(select(Organisation.id).where(Organisation.slug == slug)) is not None:
        raise AccountError(f"An organisation with the short name {slug!r} already exists.")
    org = Organisation(name=name[:120], slug=slug)
    session.add(org)
    session.flush()
    return org


def add_member(session: Session, org: Organisation, user: User, role: Role) -> Membership:
    """Add ``user`` to ``org`` with ``role``, or change the role of an existing member."""
    membership = session.scalar(
        select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id)
    )
    if membership is None:
        membership = Membership(org_id=org.id, user_id=user.id, role_name=role.label)
        session.add(membership)
    else:
        membership.role = role
    session.flush()
    return membership


def authenticate(
    session: Session,
    email: str,
    password: str,
    *,
    ip: str,
    max_failures: int = 5,
    max_failures_per_ip: int = 30,
    window: timedelta = timedelta(minutes=15),
) -> User | None:
    """The active user with these credentials, or None; every attempt is recorded.

    Raises:
        RateLimited: before checking the password when the e-mail or the IP address has too
            many recent failures.
    """
    email = normalise_email(email)[:254]
    now = utcnow()
    since = now - window
    _check_limit(session, LoginAttempt.email == email, since, max_failures, window, now)
    _check_limit(session, LoginAttempt.ip == ip, since, max_failures_per_ip, window, now)
    user = session.scalar(select(User).where(User.email == email))
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    ok = ok and user is not None and user.is_active
    session.add(LoginAttempt(email=email, ip=ip[:64], succeeded=ok, created_at=now))
    if ok:
        assert user is not None
        user.last_login_at = now
        # Old attempts are of no use to the limit; keep the table small.
        session.execute(delete(LoginAttempt).where(LoginAttempt.created_at < since))
    session.commit()
    return user if ok else None


def _check_limit(
    session: Session,
    condition: ColumnElement[bool],
    since: datetime,
    limit: int,
    window: timedelta,
    now: datetime,
) -> None:
    count, oldest = session.execute(
        select(func.count(LoginAttempt.id), func.min(LoginAttempt.created_at)).where(
            condition,
            LoginAttempt.created_at >= since,
            LoginAttempt.succeeded.is_(False),
        )
    ).one()
    if count >= limit and oldest is not None:
        retry = int((oldest + window - now).total_seconds())
        raise RateLimited(retry_after=max(retry, 1))
