"""``anvil-forge``: run the FORGE, migrate its database, create users and organisations, demo.

    $ anvil-forge db upgrade
    $ anvil-forge create-user ada@example.com --admin
    $ anvil-forge run --port 5000

Settings come from ``FORGE_*`` env vars and ``forge.toml`` (see ``forge_app.config``).
"""

from __future__ import annotations

import getpass
import json
import sys
import threading
from typing import Any

import click
from flask import Flask
from sqlalchemy import select

from anvil_client.errors import AnvilError
from forge_app.models import Organisation, Role, User
from forge_app.services.users import AccountError, add_member, create_org, create_user

__all__ = ["main"]


def _app() -> Flask:
    from forge_app import create_app

    try:
        return create_app()
    except AnvilError as e:
        raise click.ClickException(str(e)) from e


def _upgrade(app: Flask) -> None:
    from forge_app.extensions import db
    from forge_app.schema import upgrade_database

    with app.app_context():
        upgrade_database(db.engine)


@click.group()
@click.version_option(package_name="anvil-prompts")
def main() -> None:
    """The Anvil FORGE: where Context Engineers edit, review and lock prompts."""


@main.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations shipped with the FORGE)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the migrations (safe to run again)."""
    from forge_app.extensions import db
    from forge_app.schema import current_revision, upgrade_database

    app = _app()
    with app.app_context():
        upgrade_database(db.engine, revision)
        click.echo(f"Database is at revision {current_revision(db.engine)}.")


@main.command("create-user")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="Make the user a site administrator.")
@click.option("--org", "org_slug", help="Add the user to this organisation (short name).")
@click.option(
    "--role",
    type=click.Choice(["viewer", "editor", "reviewer", "owner"]),
    default="editor",
    show_default=True,
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_user_command(
    email: str, name: str, admin: bool, org_slug: str | None, role: str, password_stdin: bool
) -> None:
    """Create a user (the password is asked for, never taken as an argument)."""
    from forge_app.extensions import db

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            raise click.ClickException("the passwords differ")
    app = _app()
    with app.app_context():
        try:
            user = create_user(db.session, email, password, name=name, is_admin=admin)
            if org_slug:
                org = db.session.scalar(select(Organisation).where(Organisation.slug == org_slug))
                if org is None:
                    raise click.ClickException(f"no organisation {org_slug!r}")
                add_member(db.session, org, user, Role.parse(role))
            db.session.commit()
        except AccountError as e:
            raise click.ClickException(str(e)) from e
        click.echo(f"Created {'administrator' if admin else 'user'} {user.email}.")


@main.command("create-org")
@click.argument("name")
@click.option("--slug", help="Short name used in URLs (default: from the name).")
@click.option("--owner", "owner_email", help="E-mail of an existing user to make owner.")
def create_org_command(name: str, slug: str | None, owner_email: str | None) -> None:
    """Create an organisation."""
    from forge_app.extensions import db

    app = _app()
    with app.app_context():
        try:
            org = create_org(db.session, name, slug)
            if owner_email:
                owner = db.session.scalar(select(User).where(User.email == owner_email.lower()))
                if owner is None:
                    raise click.ClickException(f"no user {owner_email!r}")
                add_member(db.session, org, owner, Role.OWNER)
            db.session.commit()
        except AccountError as e:
            raise click.ClickException(str(e)) from e
        click.echo(f"Created organisation {org.name} ({org.slug}).")


@main.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def run_command(host: str, port: int) -> None:
    """Serve the FORGE with Werkzeug (use gunicorn 'forge_app:create_app()' in production).

    In development the database is migrated first; in production it must already be current.
    """
    from forge_app.extensions import db
    from forge_app.schema import current_revision, head_revision

    app = _app()
    if app.config["FORGE_SETTINGS"].production:
        with app.app_context():
            if current_revision(db.engine) != head_revision():
                raise click.ClickException(
                    "the database is not current; run anvil-forge db upgrade"
                )
    else:
        _upgrade(app)
    _serve(app, host, port)


def _serve(
    app: Flask, host: str, port: int, ready: threading.Event | None = None, *, err: bool = False
) -> None:
    """Serve until Ctrl-C; ``ready`` is set once it listens; ``err``: its own lines go to
    standard error (``demo --json`` keeps standard output for its JSON line)."""
    from werkzeug.serving import make_server

    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror}") from e
    click.echo(
        f"FORGE listening on http://{host}:{server.server_port}/  (Ctrl+C stops it)", err=err
    )
    if ready is not None:
        ready.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("Stopped.", err=err)
    finally:
        server.server_close()


@main.command("worker")
@click.option("--interval", default=5.0, show_default=True, type=float, help="Seconds per round.")
@click.option("--once", is_flag=True, help="Run one round and exit.")
def worker_command(interval: float, once: bool) -> None:
    """Run due scheduled jobs and evaluate the health guards (safe with several workers)."""
    import logging
    import signal

    from forge_app.worker import run_worker

    if interval <= 0:
        raise click.ClickException("--interval must be more than 0 seconds")
    app = _app()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    click.echo("FORGE worker running (Ctrl+C stops it).")
    try:
        run_worker(app, interval=interval, stop=stop, once=once)
    except KeyboardInterrupt:
        click.echo("Stopped.")
    finally:
        signal.signal(signal.SIGTERM, previous)


@main.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--example-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the example application  [default: the first free port after --port]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON line (URLs, accounts, password) on standard output, for scripts, "
    "once the FORGE and the example listen; every other line goes to standard error.",
)
@click.option("--no-serve", is_flag=True, help="Seed the demo data and exit.")
def demo_command(
    host: str, port: int, example_port: int | None, as_json: bool, no_serve: bool
) -> None:
    """Seed a demo organisation, users for each role and a project, then serve the FORGE
    and the example application (examples/live_app.py) beside it."""
    from forge_app.demo import DEMO_HOOKS, seed_demo
    from forge_app.demo_console import demo_summary
    from forge_app.demo_live import serve_demo  # registers the LIVE demo's hook
    from forge_app.extensions import db

    app = _app()
    _upgrade(app)
    with app.app_context():
        info = seed_demo(db.session)
        project_id = str(info.project.id)
        for hook in DEMO_HOOKS:
            hook(app, info)
    url = f"http://{host}:{port}"
    if no_serve:
        if as_json:
            click.echo(json.dumps(demo_summary(info, url, None), ensure_ascii=False))
        else:
            _print_demo(info, url, project_id)
        return
    if not as_json:
        _print_demo(info, url, project_id)
    serve_demo(app, info, host, port, _serve, example_port=example_port, as_json=as_json)


def _print_demo(info: Any, url: str, project_id: str) -> None:
    click.echo("")
    click.echo("Anvil FORGE demo " + ("(seeded)" if info.created else "(already seeded)"))
    click.echo(f"  Sign in at {url}/login with one of these (password: {info.password}):")
    for login in info.logins:
        click.echo(f"    {login.role:<9} {login.email}")
    click.echo(f"  Demo project: {url}/projects/{project_id}")
    click.echo("")
