"""The Alembic migrations build exactly the models' schema, on SQLite and PostgreSQL, and the
audit log is append-only in the database itself."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from forge_app.extensions import db, make_engine
from forge_app.models import AuditEvent, Base
from forge_app.schema import current_revision, head_revision, upgrade_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_migrated_schema_matches_the_models(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert current_revision(db.engine) == head_revision()


def test_upgrade_is_idempotent(app: Flask) -> None:
    with app.app_context():
        upgrade_database(db.engine)
        assert current_revision(db.engine) == head_revision()


def test_the_chain_starts_with_the_core_revision() -> None:
    from alembic.script import ScriptDirectory

    from forge_app.schema import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    base = script.get_base()
    assert base == "0001_core"


def test_audit_log_refuses_update_and_delete(app: Flask) -> None:
    with app.app_context():
        db.session.add(
            AuditEvent(
                actor_email="a@b.c",
                action="test.event",
                object_type="x",
                object_id="1",
                object_label="x",
                details={},
            )
        )
        db.session.commit()
        for statement in ("UPDATE audit_events SET action = 'forged'", "DELETE FROM audit_events"):
            with (
                pytest.raises(DBAPIError, match="append-only"),
                db.engine.begin() as connection,
            ):
                connection.execute(text(statement))
        assert db.session.query(AuditEvent).one().action == "test.event"


def test_downgrade_and_upgrade_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alembic import command

    from forge_app.schema import alembic_config

    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert current_revision(engine) is None
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
