"""Users, organisations and memberships with roles (viewer < editor < reviewer < owner)."""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from forge_app.models._base import Base, UTCDateTime, parent_ref, utcnow

__all__ = [
    "LoginAttempt",
    "LoginId",
    "LoginThrottle",
    "Membership",
    "Organisation",
    "RevokedSession",
    "Role",
    "User",
]


class Role(enum.IntEnum):
    """A member's role in an organisation; a higher role can do everything a lower one can."""

    VIEWER = 10
    EDITOR = 20
    REVIEWER = 30
    OWNER = 40

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named ``text`` (``"viewer"``…``"owner"``).

        Raises:
            ValueError: for an unknown name.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}") from None


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Raised by "Sign out everywhere": part of the session stamp, so every session ends.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    # Flask-Login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        """The login id Flask-Login keeps in the session (and "keep me signed in" cookie):
        ``<id>:<stamp>:<session id>:<issued at>`` (see :class:`LoginId`).

        The stamp changes with the password and with "Sign out everywhere", so either ends
        every session of this user. A user loaded for a request answers that request's id;
        otherwise (signing in) a new session id is issued, once per object.
        """
        login_id: str | None = getattr(self, "_login_id", None)
        if login_id is None:
            login_id = str(
                LoginId(self.id, self.session_stamp, secrets.token_urlsafe(18), int(time.time()))
            )
            self.use_login_id(login_id)
        return login_id

    def use_login_id(self, login_id: str | None) -> None:
        """Answer ``login_id`` from :meth:`get_id` (None: issue a new one on the next call)."""
        self._login_id: str | None = login_id  # not a column

    @property
    def session_stamp(self) -> str:
        text = f"forge-session:{self.password_hash}:{self.session_generation or 0}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def display_name(self) -> str:
        return self.name or self.email

    def __repr__(self) -> str:
        return f"<User {self.email}>"


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="org", cascade="all, delete-orphan"
    )


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = parent_ref("users")
    role_name: Mapped[str] = mapped_column("role", String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    org: Mapped[Organisation] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(back_populates="memberships")

    @property
    def role(self) -> Role:
        return Role.parse(self.role_name)

    @role.setter
    def role(self, value: Role) -> None:
        self.role_name = value.label


class LoginAttempt(Base):
    """One checked sign-in attempt. Successes also tell which addresses an account signs in
    from (a known address is not slowed down by a stranger's failures)."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


@dataclass(frozen=True)
class LoginId:
    """The parts of a login id: whose session, the user's stamp when it was issued, a random
    session id (what sign-out revokes) and when it was issued (the absolute lifetime)."""

    user_id: int
    stamp: str
    session_id: str
    issued_at: int

    def __str__(self) -> str:
        return f"{self.user_id}:{self.stamp}:{self.session_id}:{self.issued_at}"

    @classmethod
    def parse(cls, text: str) -> LoginId | None:
        """The parts of ``text``, or None for anything that is not a login id."""
        parts = text.split(":")
        if len(parts) != 4 or not all(parts):
            return None
        user_id, stamp, session_id, issued_at = parts
        if not (user_id.isascii() and user_id.isdigit() and issued_at.isascii()):
            return None
        if not issued_at.isdigit() or len(session_id) > 64 or len(user_id) > 18:
            return None
        return cls(int(user_id), stamp, session_id, int(issued_at))


class RevokedSession(Base):
    """A signed-out session: its login id stays refused until it would have expired anyway."""

    __tablename__ = "revoked_sessions"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = parent_ref("users")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LoginThrottle(Base):
    """Failed sign-ins of one key (an account, an address, a device, an account at a known
    address), counted before the password is checked; see :mod:`forge_app.services.users`."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
