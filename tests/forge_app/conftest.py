"""FORGE fixtures: apps on migrated databases (SQLite, and PostgreSQL via pgserver), users of
every role, and signed-in test clients.

    def test_something(app, world, client_as):
        client = client_as("editor")
        assert client.get(f"/projects/{world.project_id}").status_code == 200

Databases are built by the Alembic migrations, never ``create_all``: SQLite once per session
into a template file that each test copies; PostgreSQL once per session into a template
database that each test clones (``CREATE DATABASE … TEMPLATE``).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from forge_app import create_app
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, Role, SetStatus, User
from forge_app.schema import upgrade_database
from forge_app.services.users import add_member, create_org, create_user, hash_password
from tests.servers import missing_tool

PASSWORD = "correct horse battery staple"
ROLES = ("viewer", "editor", "reviewer", "owner")


@pytest.fixture(scope="session")
def password_hash() -> str:
    """scrypt is slow on purpose: hash the shared test password once."""
    return hash_password(PASSWORD)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("forge-sqlite") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One real PostgreSQL server (pgserver) for the session, with a migrated template DB.

    Run as root, pgserver starts postgres as its own user, which cannot enter pytest's private
    temporary folders; so the data lives in a world-traversable folder of its own.
    """
    parent = Path(tempfile.mkdtemp(prefix="forge-pg-"))
    parent.chmod(0o755)
    root = parent / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        try:
            import pgserver
        except ImportError:
            missing_tool("pgserver is not installed (pip install pgserver)")
        try:
            server = pgserver.get_server(root, cleanup_mode="stop")
        except Exception as e:  # pragma: no cover - depends on the machine
            missing_tool(f"PostgreSQL (pgserver) did not start: {e}")
    server.psql("CREATE DATABASE forge_template;")
    upgrade_database(_psycopg_url(server.get_uri("forge_template")))
    try:
        yield server
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


def _psycopg_url(uri: str) -> str:
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


def _database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgresql":
        server = request.getfixturevalue("postgres_server")
        name = f"t_{uuid.uuid4().hex[:16]}"
        server.psql(f"CREATE DATABASE {name} TEMPLATE forge_template;")
        return _psycopg_url(server.get_uri(name))
    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path / "forge.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def backend() -> str:
    """Which database the ``app`` runs on; modules parametrize it to run on PostgreSQL too."""
    return "sqlite"


@pytest.fixture
def app_config(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return {
        "FORGE_DATABASE_URL": _database_url(backend, request, tmp_path),
        "FORGE_INSTANCE_PATH": str(tmp_path / "instance"),
        "FORGE_SECRET_KEY": "test-secret-key-" + "x" * 32,
        "FORGE_DATA_KEY": "test-data-key",
        "TESTING": True,
        "WTF_CSRF_ENABLED": False,
    }


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(app_config)
    yield app
    with app.app_context():
        db.engine.dispose()


@dataclass
class World:
    """Ids of the seeded data: org ``acme`` (one user per role, plus ``reviewer2``), its
    project and prompt set, and org ``globex`` with an ``outsider`` and its own project."""

    org_id: int
    org_slug: str
    project_id: uuid.UUID
    set_id: uuid.UUID
    other_org_slug: str
    other_project_id: uuid.UUID
    users: dict[str, int]
    emails: dict[str, str]


@pytest.fixture
def world(app: Flask, password_hash: str) -> World:
    with app.app_context():
        session = db.session
        acme = create_org(session, "Acme", "acme")
        globex = create_org(session, "Globex", "globex")
        users: dict[str, int] = {}
        emails: dict[str, str] = {}
        for name in (*ROLES, "reviewer2", "outsider", "admin"):
            email = f"{name}@example.com"
            user = create_user(
                session,
                email,
                name=name.title(),
                password_hash=password_hash,
                is_admin=name == "admin",
            )
            users[name], emails[name] = user.id, email
            if name in ROLES:
                add_member(session, acme, user, Role.parse(name))
            elif name == "reviewer2":
                add_member(session, acme, user, Role.REVIEWER)
            elif name == "outsider":
                add_member(session, globex, user, Role.OWNER)
        project = Project(org_id=acme.id, name="Checkout", description="The checkout app")
        other = Project(org_id=globex.id, name="Globex app", description="")
        session.add_all([project, other])
        session.flush()
        prompt_set = PromptSet(
            project_id=project.id, name="Main", description="", status=SetStatus.LIVE.value
        )
        session.add(prompt_set)
        session.commit()
        return World(
            org_id=acme.id,
            org_slug=acme.slug,
            project_id=project.id,
            set_id=prompt_set.id,
            other_org_slug=globex.slug,
            other_project_id=other.id,
            users=users,
            emails=emails,
        )


@pytest.fixture
def csrf_app(app_config: dict[str, Any]) -> Flask:
    """An app with CSRF protection on, as in production."""
    return create_app({**app_config, "WTF_CSRF_ENABLED": True})


@pytest.fixture
def csrf_world(csrf_app: Flask, password_hash: str) -> World:
    return world.__wrapped__(csrf_app, password_hash)  # type: ignore[attr-defined, no-any-return]


def login(client: FlaskClient, user_id: int) -> FlaskClient:
    """Sign a test client in without the (deliberately slow) password check."""
    with client.application.app_context():
        user = db.session.get(User, user_id)
        assert user is not None, f"no user {user_id}"
        session_id = user.get_id()
    with client.session_transaction() as session:
        session["_user_id"] = session_id
        session["_fresh"] = True
    return client


@pytest.fixture
def client_as(app: Flask, world: World) -> Callable[[str], FlaskClient]:
    """``client_as("editor")``: a new test client signed in as that user of ``world``."""

    def make(name: str) -> FlaskClient:
        return login(app.test_client(), world.users[name])

    return make


@pytest.fixture
def set_url(world: World) -> str:
    return f"/projects/{world.project_id}/sets/{world.set_id}"


def add_prompts(app: Flask, world: World, prompts: dict[str, dict[str, Any]]) -> None:
    """Write prompts (prompt-file shape) into the world's LIVE set, as the editor."""
    from forge_app.models import User
    from forge_app.services.drafts import replace_prompts

    with app.app_context():
        prompt_set = db.session.get(PromptSet, world.set_id)
        editor = db.session.get(User, world.users["editor"])
        assert prompt_set is not None and editor is not None
        replace_prompts(db.session, prompt_set, prompts, editor, remove_missing=False)
        db.session.commit()


def lock_version(app: Flask, world: World, bump: str = "minor", changelog: str = "Change") -> str:
    """Submit (editor) and approve (reviewer) the world's set; returns the version."""
    from forge_app.models import User
    from forge_app.services.workflow import approve, submit

    with app.app_context():
        prompt_set = db.session.get(PromptSet, world.set_id)
        editor = db.session.get(User, world.users["editor"])
        reviewer = db.session.get(User, world.users["reviewer"])
        assert prompt_set is not None and editor is not None and reviewer is not None
        version = submit(
            db.session,
            prompt_set,
            editor,
            role=Role.EDITOR,
            bump=bump,
            changelog=changelog,
            expected_revision=prompt_set.revision,
        )
        approve(
            db.session,
            prompt_set,
            reviewer,
            role=Role.REVIEWER,
            expected_revision=prompt_set.revision,
        )
        db.session.commit()
        return version


SAMPLE_PROMPTS: dict[str, dict[str, Any]] = {
    "welcome.message": {
        "template": "Welcome {{ name }}!\nYour plan: {{ plan }}\n",
        "metadata": {"description": "Greets a new user", "temperature": 0.2},
    },
    "support.chat": {
        "messages": [
            {"role": "system", "template": "You help {{ product }} users."},
            {"role": "user", "template": "{{ question }}"},
        ],
        "metadata": {},
    },
}
