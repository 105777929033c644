"""Connected remote projects: local references to projects of other FORGEs (issue 10).

    >>> from forge_app.models.peering import RemoteProject
    >>> RemoteProject.__tablename__
    'remote_projects'

A reference holds only what is needed to find the project again and to list it (the FORGE's
name, the remote ids and the names seen when connecting); prompt sets and prompts are fetched
from the remote FORGE each time they are viewed, never copied here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from forge_app.models._base import Base, UTCDateTime, parent_ref, user_ref, utcnow
from forge_app.models.accounts import Organisation

__all__ = ["RemoteProject"]


class RemoteProject(Base):
    __tablename__ = "remote_projects"
    __table_args__ = (UniqueConstraint("org_id", "forge_name", "remote_project_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = parent_ref("organisations")
    forge_name: Mapped[str] = mapped_column(String(80))
    remote_project_id: Mapped[str] = mapped_column(String(64))
    remote_org_name: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = user_ref()

    org: Mapped[Organisation] = relationship()

    def __repr__(self) -> str:
        return f"RemoteProject({self.forge_name!r}, {self.remote_project_id!r})"
