"""Invitations to an organisation: a single-use link with an expiry, for one role (issue 13).

    >>> from forge_app.models.invitations import Invitation
    >>> Invitation.__tablename__
    'invitations'

The link's secret is never stored: ``secret_hash`` is the SHA-256 of the full token text (256
random bits, so a plain hash is enough), compared in constant time. ``token_id`` is the public
part of the text, used to find the row. ``accepted_at`` is set once, by a conditional update,
so two clicks on one link cannot both join.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from forge_app.models._base import Base, UTCDateTime, parent_ref, user_ref, utcnow
from forge_app.models.accounts import Organisation, Role, User

__all__ = ["Invitation"]


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = parent_ref("organisations")
    token_id: Mapped[str] = mapped_column(String(12), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role_name: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(120), default="")
    created_by_id: Mapped[int | None] = user_ref()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    accepted_by_id: Mapped[int | None] = user_ref()
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    org: Mapped[Organisation] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])

    @property
    def role(self) -> Role:
        return Role.parse(self.role_name)
