"""Flask extensions: the database session, Flask-Login and CSRF protection.

    >>> from forge_app.extensions import db
    >>> # inside a request or app context:  db.session.scalars(select(User)).all()

``db`` is plain SQLAlchemy 2: one engine per app, one ``Session`` per app context (created on
first use of ``db.session``, closed at teardown, rolled back if not committed). Views commit
explicitly, once, after their audit event is added, so a change and its audit record land in
one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, current_app, g
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from werkzeug.local import LocalProxy

__all__ = ["Database", "csrf", "db", "delete_unlocked", "insert_ignore", "login_manager"]


#: A pooled PostgreSQL connection unused for longer than this is pinged before it is handed
#: out (a restarted server then costs no failed request); one in use a moment ago is not, so a
#: busy worker does not pay a round trip per request.
PING_AFTER_IDLE_SECONDS = 2.0


@dataclass
class _DatabaseState:
    engine: Engine
    sessions: sessionmaker[Session]


class Database:
    """The FORGE's SQLAlchemy engine and per-app-context session."""

    def init_app(self, app: Flask) -> None:
        engine = make_engine(app.config["FORGE_DATABASE_URL"])
        app.extensions["forge_db"] = _DatabaseState(
            engine=engine, sessions=sessionmaker(engine, expire_on_commit=False)
        )
        app.teardown_appcontext(self._close_session)

    @property
    def engine(self) -> Engine:
        state: _DatabaseState = current_app.extensions["forge_db"]
        return state.engine

    @property
    def session(self) -> Session:
        session: Session | None = g.get("_forge_db_session")
        if session is None:
            state: _DatabaseState = current_app.extensions["forge_db"]
            session = state.sessions()
            g._forge_db_session = session
        return session

    @staticmethod
    def _close_session(_exc: BaseException | None) -> None:
        session: Session | None = g.pop("_forge_db_session", None)
        if session is not None:
            session.close()


def current_app_object() -> Flask:
    """The application behind ``current_app``, for work that outlives the request context (a
    hint stream, a peer client, a thread)."""
    return cast("LocalProxy[Flask]", current_app)._get_current_object()


def rows_changed(result: Result[Any]) -> int:
    """How many rows an UPDATE, DELETE or INSERT that ``session.execute`` ran changed (its
    ``CursorResult.rowcount``)."""
    return int(cast("CursorResult[Any]", result).rowcount or 0)


def make_engine(url: str) -> Engine:
    """An engine with the connection settings the FORGE relies on.

    SQLite gets foreign keys, WAL and a busy timeout (the dev server is threaded);
    PostgreSQL gets a ping of a connection idle for :data:`PING_AFTER_IDLE_SECONDS`, so a
    restarted server does not surface as a 500.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """SQLAlchemy's pessimistic disconnect handling (``pool_pre_ping``) for idle connections
    only: a dead one raises DisconnectionError, and the pool retries with a new connection."""
    dialect = engine.dialect

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["forge_checked_in"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("forge_checked_in")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as e:  # the driver's error, whatever its class
            raise DisconnectionError(str(e)) from e
        if not alive:
            raise DisconnectionError("the database connection did not answer a ping")

    event.listen(engine, "checkin", checked_in)
    event.listen(engine, "checkout", checkout)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


db = Database()
login_manager = LoginManager()
csrf = CSRFProtect()


def insert_ignore(session: Session, model: Any, **values: Any) -> None:
    """``INSERT … ON CONFLICT DO NOTHING`` of one row, on SQLite and PostgreSQL: the row
    exists afterwards, whoever created it (a concurrent transaction included)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(model).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(model).values(**values).on_conflict_do_nothing())


def delete_unlocked(session: Session, key: Any, *conditions: Any) -> None:
    """Delete the rows matching ``conditions`` that no other transaction holds (PostgreSQL's
    ``FOR UPDATE SKIP LOCKED``), so a clean-up never waits for, or deadlocks with, the work it
    tidies after; ``key`` is the table's primary key column."""
    from sqlalchemy import delete, select

    locked = select(key).where(*conditions).with_for_update(skip_locked=True)
    session.execute(delete(key.class_).where(key.in_(locked)))
