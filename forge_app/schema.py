"""Database schema management: Alembic migrations shipped inside the package.

    >>> from forge_app.schema import upgrade_database
    >>> upgrade_database("sqlite:///instance/anvil.db")   # doctest: +SKIP

The app and the tests build their databases with these migrations (never ``create_all``), so
the migrations are what is tested.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from forge_app.extensions import make_engine

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade_database"]

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(target: str | Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` on a database URL or engine."""
    engine = make_engine(target) if isinstance(target, str) else target
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if isinstance(target, str):
            engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
