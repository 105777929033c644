"""Declarative base and column types shared by every FORGE model.

    >>> from forge_app.models import Base, JSONType, UTCDateTime
    >>> "users" in Base.metadata.tables
    True

``JSONType`` is JSON on SQLite and JSONB on PostgreSQL. ``UTCDateTime`` stores naive UTC and
always returns timezone-aware UTC datetimes, on every backend.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, MetaData, TypeDecorator
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, MappedColumn, mapped_column

__all__ = [
    "Base",
    "BigIntId",
    "JSONType",
    "UTCDateTime",
    "json_object",
    "parent_ref",
    "user_ref",
    "utcnow",
]

# Constraint names are fixed so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
#: Auto-increment 64-bit ids on PostgreSQL; SQLite only auto-increments INTEGER.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Now, in UTC, to the second (the precision of bundle timestamps)."""
    return datetime.now(UTC).replace(microsecond=0)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; use timezone-aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


def json_object(text: str | None) -> dict[str, Any]:
    """The JSON object a text column holds (``{}`` if it is empty or anything else)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def user_ref() -> MappedColumn[Any]:
    """A column naming a user (who created or changed a row); null once the user is deleted.
    Annotate it ``Mapped[int | None]``."""
    return mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)


def parent_ref(table: str) -> MappedColumn[Any]:
    """An indexed column naming the row of ``table`` this row belongs to (deleted with it);
    nullable if annotated ``Mapped[… | None]``."""
    return mapped_column(ForeignKey(f"{table}.id", ondelete="CASCADE"), index=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
