"""Accounts: creating users and organisations, password checks and sign-in throttling.

    >>> user = create_user(session, "ada@example.com", "a long passphrase", name="Ada")
    >>> authenticate(session, "ada@example.com", "a long passphrase", ip="127.0.0.1") is user

Passwords are hashed with scrypt (Werkzeug).

Sign-in throttling (OWASP "Blocking Brute Force Attacks", device cookies; Keycloak's brute force
detection): failures are counted per *key* in the database, so every worker process shares
them, and each key earns progressive delays rather than a hard lock: after ``free_failures``
failures each further failure doubles the wait before the next attempt (``first_delay`` …
``max_delay``); a key's failures are forgotten ``reset_after`` its last failure, or at a
success. Which keys count an attempt depends on what the client proves:

- a valid device cookie of this account (it signed in from this browser before):
  ``device:<id>`` only;
- else an address this account signed in from within ``known_address_for``:
  ``account-at:<e-mail>|<address>`` only;
- else ``account:<e-mail>`` and ``address:<address>`` (with ``free_failures_per_address``).

So a stranger's failures slow down strangers: the owner's own browser, or their usual
address, still signs in. The attempt is counted *before* the password is checked, in one
transaction (``INSERT … ON CONFLICT DO NOTHING``, then ``SELECT … FOR UPDATE``, which SQLite
serialises with its write lock), so parallel requests cannot check more passwords than allowed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import delete_unlocked, insert_ignore
from forge_app.models import LoginAttempt, Membership, Organisation, Role, User, utcnow
from forge_app.models.accounts import LoginId, LoginThrottle, RevokedSession

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "AccountError",
    "RateLimited",
    "ThrottlePolicy",
    "add_member",
    "authenticate",
    "change_password",
    "create_org",
    "create_user",
    "hash_password",
    "normalise_email",
    "register_user",
    "revoke_login",
    "sign_out_everywhere",
    "slugify",
]

MIN_PASSWORD_LENGTH = 10
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
# A hash to compare against when the user does not exist, so timing does not reveal accounts.
_DUMMY_HASH = generate_password_hash("not a real password", method="scrypt")


class AccountError(ForgeError, ValueError):
    """An invalid account operation, with a message for the user."""

    default_kind = Kind.INVALID


@dataclass(frozen=True)
class RateLimited(Exception):
    """Too many failed sign-ins; ``retry_after`` seconds until the next attempt is allowed."""

    retry_after: int

    def __str__(self) -> str:
        if self.retry_after < 60:
            wait = f"{self.retry_after} second{'s' if self.retry_after != 1 else ''}"
        else:
            minutes = (self.retry_after + 59) // 60
            wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
        return f"Too many failed sign-in attempts. Try again in {wait}."


@dataclass(frozen=True)
class ThrottlePolicy:
    """How sign-in failures slow down further attempts (see the module docs)."""

    free_failures: int = 5
    free_failures_per_address: int = 30
    first_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(minutes=15)
    reset_after: timedelta = timedelta(hours=12)
    known_address_for: timedelta = timedelta(days=90)

    def delay(self, failures: int, free: int) -> timedelta:
        """The wait after the ``failures``-th failure of a key allowed ``free`` failures."""
        if failures < free:
            return timedelta(0)
        doubled: timedelta = self.first_delay * (2 ** min(failures - free, 32))
        return min(self.max_delay, doubled)


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


def register_user(
    session: Session,
    email: str,
    password: str,
    *,
    name: str = "",
    is_admin: bool = False,
    actor: User,
) -> User:
    """Create a user (as for :func:`create_user`), audit ``user.create`` by ``actor``, commit.

    Raises:
        AccountError: as for :func:`create_user` (nothing is saved).
    """
    user = create_user(session, email, password, name=name, is_admin=is_admin)
    record_event("user.create", user, actor=actor, session=session)
    session.commit()
    return user


def change_password(session: Session, user: User, current: str, new: str) -> None:
    """Give ``user`` the password ``new`` (the caller checked its length), which signs out
    their other sessions; audit ``user.password``, commit.

    Raises:
        AccountError: ``current`` is not the user's password (nothing changes).
    """
    if not check_password_hash(user.password_hash, current):
        raise AccountError("This is not your current password.")
    user.password_hash = hash_password(new)
    record_event("user.password", user, actor=user, session=session)
    session.commit()


def sign_out_everywhere(session: Session, user: User) -> None:
    """End every session of ``user`` (a new session stamp), audit it, commit."""
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(session_generation=User.session_generation + 1)
        .execution_options(synchronize_session=False)
    )
    record_event("user.sign_out_everywhere", user, actor=user, session=session)
    session.commit()


def revoke_login(session: Session, login: LoginId, max_age: timedelta) -> None:
    """Refuse the session id of ``login`` from now on (sign-out, on the server: a copied
    cookie too), until the session would have expired anyway (``max_age`` after it was
    issued); forget the refusals that have expired; commit."""
    now = utcnow()
    delete_unlocked(session, RevokedSession.session_id, RevokedSession.expires_at < now)
    insert_ignore(
        session,
        RevokedSession,
        session_id=login.session_id,
        user_id=login.user_id,
        expires_at=max(now, datetime.fromtimestamp(login.issued_at, UTC) + max_age),
    )
    session.commit()


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
    device: str | None = None,
    policy: ThrottlePolicy | None = None,
    now: datetime | None = None,
) -> User | None:
    """The active user with these credentials, or None; every checked attempt is recorded.

    ``device`` is the id from a valid device cookie of this e-mail (the caller checks it).
    The attempt is counted before the password is checked and committed at once; a success
    clears the account's failures and leaves the address's as they were.

    Raises:
        RateLimited: without checking the password, while a key of this attempt waits.
    """
    policy = policy or ThrottlePolicy()
    email = normalise_email(email)[:254]
    ip = ip[:64]
    now = now or utcnow()
    keys = _throttle_keys(session, email, ip, device, policy, now)
    _count_attempt(session, keys, policy, now)
    user = session.scalar(select(User).where(User.email == email))
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    ok = ok and user is not None and user.is_active
    session.add(LoginAttempt(email=email, ip=ip, succeeded=ok, created_at=now))
    if ok:
        assert user is not None
        user.last_login_at = now
        _settle_success(session, keys, policy, now)
    session.commit()
    if ok:
        _tidy(session, policy, now)
    return user if ok else None


def _throttle_keys(
    session: Session,
    email: str,
    ip: str,
    device: str | None,
    policy: ThrottlePolicy,
    now: datetime,
) -> dict[str, int]:
    """The keys that count this attempt, each with its number of free failures."""
    if device:
        return {f"device:{device[:64]}": policy.free_failures}
    known = session.scalar(
        select(LoginAttempt.id)
        .where(
            LoginAttempt.email == email,
            LoginAttempt.ip == ip,
            LoginAttempt.succeeded.is_(True),
            LoginAttempt.created_at >= now - policy.known_address_for,
        )
        .limit(1)
    )
    if known is not None:
        return {f"account-at:{email}|{ip}": policy.free_failures}
    return {
        f"account:{email}": policy.free_failures,
        f"address:{ip}": policy.free_failures_per_address,
    }


def _count_attempt(
    session: Session, keys: dict[str, int], policy: ThrottlePolicy, now: datetime
) -> None:
    """Count the attempt as a failure of every key, or raise RateLimited if one waits; in one
    transaction that holds the keys' rows (PostgreSQL) or the database (SQLite) locked."""
    session.commit()  # the count is a transaction of its own, committed before the check
    for key in sorted(keys):
        insert_ignore(session, LoginThrottle, key=key, failures=0)
    rows = session.execute(
        select(
            LoginThrottle.key,
            LoginThrottle.failures,
            LoginThrottle.last_failure_at,
            LoginThrottle.blocked_until,
        )
        .where(LoginThrottle.key.in_(sorted(keys)))
        .order_by(LoginThrottle.key)
        .with_for_update()
    ).all()
    waits = [
        row.blocked_until - now for row in rows if row.blocked_until and row.blocked_until > now
    ]
    if waits:
        session.rollback()
        raise RateLimited(retry_after=max(1, math.ceil(max(waits).total_seconds())))
    for row in rows:
        fresh = row.last_failure_at is None or row.last_failure_at < now - policy.reset_after
        failures = (0 if fresh else row.failures) + 1
        delay = policy.delay(failures, keys[row.key])
        session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == row.key)
            .values(
                failures=failures,
                last_failure_at=now,
                blocked_until=now + delay if delay else None,
            )
        )
    session.commit()


def _settle_success(
    session: Session, keys: dict[str, int], policy: ThrottlePolicy, now: datetime
) -> None:
    """A success clears its account's (or device's) failures; an address only gets back the
    failure counted for this attempt (and any wait that count caused), so signing in to one's
    own account does not wipe the failures against others."""
    session.flush()  # SQLite: take the write lock before reading the counts
    own = sorted(key for key in keys if not key.startswith("address:"))
    if own:
        session.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(own)))
    shared = sorted(key for key in keys if key.startswith("address:"))
    rows = session.execute(
        select(LoginThrottle.key, LoginThrottle.failures, LoginThrottle.blocked_until)
        .where(LoginThrottle.key.in_(shared))
        .order_by(LoginThrottle.key)
        .with_for_update()
    ).all()
    for row in rows:
        failures = max(row.failures - 1, 0)
        delay = policy.delay(failures, keys[row.key])
        blocked_until = now + delay if delay else None
        if row.blocked_until is not None and blocked_until is not None:
            blocked_until = min(blocked_until, row.blocked_until)
        session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == row.key)
            .values(failures=failures, blocked_until=blocked_until)
        )


def _tidy(session: Session, policy: ThrottlePolicy, now: datetime) -> None:
    """Forget throttles and attempts that no longer matter (after a success, on its own)."""
    quiet = now - policy.reset_after
    delete_unlocked(
        session,
        LoginThrottle.key,
        or_(LoginThrottle.last_failure_at.is_(None), LoginThrottle.last_failure_at < quiet),
        or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < now),
    )
    delete_unlocked(
        session,
        LoginAttempt.id,
        or_(
            LoginAttempt.created_at < now - policy.known_address_for,
            LoginAttempt.succeeded.is_(False) & (LoginAttempt.created_at < quiet),
        ),
    )
    session.commit()
