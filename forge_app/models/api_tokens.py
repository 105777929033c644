"""Personal API tokens: a user's bearer tokens for the REST API (issue 10).

    >>> from forge_app.models.api_tokens import ApiToken
    >>> ApiToken.__tablename__
    'api_tokens'

The token text is never stored: ``secret_hash`` is the SHA-256 of the full text (the text has
256 random bits, so a plain hash is enough), compared in constant time. ``token_id`` is the
public part of the text, used to find the row. ``create_key`` is the one-time id of the form
that created the token, so a reloaded form creates no second token.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from forge_app.models._base import Base, UTCDateTime, parent_ref, utcnow
from forge_app.models.accounts import User

__all__ = ["API_SCOPES", "ApiToken"]

#: ``read`` can change nothing; ``write`` can do what the user's roles allow.
API_SCOPES = ("read", "write")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("user_id", "create_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = parent_ref("users")
    token_id: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    scope: Mapped[str] = mapped_column(String(8))
    secret_hash: Mapped[str] = mapped_column(String(64))
    create_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship()

    @property
    def can_write(self) -> bool:
        return self.scope == "write"

    def state(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def __repr__(self) -> str:  # never the secret
        return f"ApiToken(token_id={self.token_id!r}, name={self.name!r}, scope={self.scope!r})"
