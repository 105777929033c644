"""The LIVE half of ``anvil-forge demo``: an ACCESS_TOKEN, a first publication, the example app.

    $ anvil-forge demo            # FORGE on :5000, examples/live_app.py on :5001

:func:`prepare_live_demo` runs as a :data:`forge_app.demo.DEMO_HOOKS` hook after seeding (also
with ``--no-serve``): it makes sure the demo project has an ACCESS_TOKEN named
:data:`TOKEN_NAME` and that its production channel serves the latest LOCKED versions of
:data:`DEMO_SETS` (*Support bot* and *Checkout helper*: one channel, two prompt sets), so the
example has something to serve from each. :func:`serve_demo` then writes the example's
``anvil.toml`` into the instance folder, serves the FORGE and starts the example app as a child
process once the FORGE listens; Ctrl-C stops both (the child by its PID). Idempotent: a second
run reuses the token and publishes nothing new.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flask import Flask
from sqlalchemy import select

from forge_app.demo import DEMO_HOOKS, DemoInfo
from forge_app.extensions import db
from forge_app.models import PromptSet, User

__all__ = ["EXAMPLE_APP", "TOKEN_NAME", "LiveDemo", "prepare_live_demo", "serve_demo"]

TOKEN_NAME = "Demo example app"  # noqa: S105 - a display name, not a secret
EXAMPLE_APP = Path(__file__).resolve().parents[1] / "examples" / "live_app.py"
#: The sets the example application uses (support.* and checkout.* prompts), both published
#: to production.
DEMO_SETS = ("Support bot", "Checkout helper")
CHANNEL = "production"
POLL_INTERVAL = 2
HEARTBEAT_INTERVAL = 30


@dataclass
class LiveDemo:
    """What the example app needs; ``token`` is the ACCESS_TOKEN text (never printed).
    ``published`` lists what production serves (``Support bot 0.2.0``), by name."""

    project_id: str
    token: str
    public_key: str
    published: list[str]
    problem: str | None = None


def prepare_live_demo(app: Flask, info: DemoInfo) -> None:
    """Demo hook: an ACCESS_TOKEN for the example app, and production serving every set of
    :data:`DEMO_SETS` (each one missing from it is published, once).

    Stores a :class:`LiveDemo` in ``info.extra["live"]``. Publishing problems do not stop the
    demo: they are kept in ``LiveDemo.problem`` and printed.
    """
    from forge_app.audit import record_event
    from forge_app.models.distribution import AccessToken
    from forge_app.services import publishing
    from forge_app.services.tokens import create_token, reveal_token
    from forge_app.workflow import latest_release

    project = info.project
    owner = db.session.scalar(select(User).where(User.email == info.logins[0].email))
    if owner is None:
        raise click.ClickException("the demo owner is missing; delete the instance folder")
    token = db.session.scalar(
        select(AccessToken).where(
            AccessToken.project_id == project.id,
            AccessToken.name == TOKEN_NAME,
            AccessToken.revoked_at.is_(None),
        )
    )
    if token is None:
        token, text = create_token(project, TOKEN_NAME, user=owner)
        db.session.flush()
        record_event(
            "token.create",
            token,
            project=project,
            actor=owner,
            details={"token_id": token.token_id, "name": token.name},
        )
        db.session.commit()
    else:
        text = reveal_token(token)
    publishing.ensure_default_channels(project)
    channel = publishing.get_channel(project, CHANNEL)
    published: list[str] = []
    problem: str | None = None
    pointer = None
    try:
        if channel is None:
            raise publishing.PublishError(f"the demo project has no {CHANNEL} channel")
        pointer = publishing.current_release(channel)
        for name in DEMO_SETS:
            prompt_set = db.session.scalar(
                select(PromptSet).where(PromptSet.project_id == project.id, PromptSet.name == name)
            )
            if prompt_set is None:
                raise publishing.PublishError(f"the demo set {name!r} is missing")
            if pointer is not None and pointer.entry(str(prompt_set.id)) is not None:
                continue
            version = latest_release(db.session, prompt_set)
            if version is None:
                raise publishing.PublishError(f"the demo set {name!r} has no LOCKED version")
            publishing.publish_version(version, channel, user=owner)
            db.session.commit()
        pointer = publishing.current_release(channel)
    except publishing.PublishError as e:
        db.session.rollback()
        problem = str(e)
    if pointer is not None:
        published = sorted(release.describe() for release in pointer.releases)
    info.extra["live"] = LiveDemo(
        project_id=str(project.id),
        token=text,
        public_key=publishing.forge_public_key_text(),
        published=published,
        problem=problem,
    )


DEMO_HOOKS.append(prepare_live_demo)


def write_client_config(app: Flask, live: LiveDemo, forge_url: str) -> Path:
    """The example's ``anvil.toml`` in ``<instance>/live-demo/`` (no token in it)."""
    folder = Path(app.instance_path) / "live-demo"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "anvil.toml"
    path.write_text(
        "# Written by `anvil-forge demo` for examples/live_app.py (see examples/anvil.toml).\n"
        f'store = "{forge_url}/store"\n'
        f'project_id = "{live.project_id}"\n'
        f'channel = "{CHANNEL}"\n'
        f'trusted_keys = ["{live.public_key}"]\n'
        'access_token_env = "ANVIL_ACCESS_TOKEN"\n'
        'cache_dir = "cache"\n'
        f"poll_interval = {POLL_INTERVAL}\n"
        f"heartbeat_interval = {HEARTBEAT_INTERVAL}\n"
        f'forge_url = "{forge_url}"\n',
        encoding="utf-8",
    )
    return path


def free_port(host: str, preferred: int) -> int:
    """``preferred`` if it can be bound on ``host``, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the example's server will: a port in TIME_WAIT is free to use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise click.ClickException(f"no free port on {host}")


def child_environment(token: str) -> dict[str, str]:
    """The parent's environment without its ``ANVIL_*`` settings (they would override the
    example's anvil.toml), plus the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    env["ANVIL_ACCESS_TOKEN"] = token
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ExampleProcess:
    """The example app as a child process, started once the FORGE listens, stopped by PID."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command = command
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def start_when(self, ready: threading.Event) -> threading.Thread:
        def run() -> None:
            ready.wait()
            with self._lock:
                if not self._stopped:
                    self.process = subprocess.Popen(self.command, env=self.env)

        thread = threading.Thread(target=run, name="example-app-starter", daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()  # this PID only
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def serve_demo(
    app: Flask,
    info: DemoInfo,
    host: str,
    port: int,
    serve: Callable[..., None],
) -> None:
    """Serve the FORGE (``serve(app, host, port, ready)``) with the example app beside it."""
    live: LiveDemo | None = info.extra.get("live")
    forge_url = f"http://{host}:{port}"
    # The example app sends its ACCESS_TOKEN to the FORGE; over plain HTTP the client allows
    # only a loopback address, which also reaches a FORGE bound to every interface.
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared, not bound
    local_url = f"http://{local}:{port}" if ":" not in local else f"http://[{local}]:{port}"
    if live is None or not EXAMPLE_APP.is_file():
        click.echo("  (The example application is not available in this installation.)")
        serve(app, host, port)
        return
    config = write_client_config(app, live, local_url)
    example_port = free_port(host, port + 1)
    command = [
        sys.executable,
        str(EXAMPLE_APP),
        "--config",
        str(config),
        "--host",
        host,
        "--port",
        str(example_port),
        "--exit-with-parent",
    ]
    print_instructions(info, live, forge_url, f"http://{host}:{example_port}/", config)
    example = ExampleProcess(command, child_environment(live.token))
    ready = threading.Event()
    starter = example.start_when(ready)
    previous = _stop_on_sigterm()
    quiet = _QuietPolling()
    logging.getLogger("werkzeug").addFilter(quiet)
    try:
        serve(app, host, port, ready)
    finally:
        logging.getLogger("werkzeug").removeFilter(quiet)
        ready.set()  # let the starter thread finish (it starts nothing once stopped)
        example.stop()
        starter.join(timeout=5)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _QuietPolling(logging.Filter):
    """Keep the demo's terminal readable: no request line for every poll and heartbeat."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "/store/" not in message and "/api/v1/live/heartbeat" not in message


def _stop_on_sigterm() -> Any:
    """SIGTERM ends the demo like Ctrl-C, so the child is stopped too."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):
        return signal.signal(signal.SIGTERM, interrupt)
    return None


def print_instructions(
    info: DemoInfo, live: LiveDemo, forge_url: str, example_url: str, config: Path
) -> None:
    project_url = f"{forge_url}/projects/{live.project_id}"
    lines = [
        "LIVE demo",
        f"  Example application: {example_url}  (started once the FORGE listens)",
        f"    embeds anvil_client with {config}",
        f"    polling {forge_url}/store every {POLL_INTERVAL} s, reporting to the FORGE",
    ]
    if live.published:
        lines.append(f"  Production serves {' and '.join(live.published)}.")
    if live.problem:
        lines.append(f"  Nothing is published yet: {live.problem}")
    lines += [
        "",
        "Try it:",
        f"  1. Open {example_url} : it shows the prompts it renders from both sets and the",
        "     versions it serves.",
        f"  2. Sign in at {forge_url}/login as {_login(info, 'Editor')}, open Support bot,",
        "     choose Unlock to edit, change support.greeting and save.",
        f"  3. Submit for review. Sign out, sign in as {_login(info, 'Reviewer')} and approve it.",
        f"  4. Sign in as {_login(info, 'Owner')}, open the new version, Publish to LIVE,",
        "     channel production: the confirmation shows Support bot 0.2.0 → 0.3.0 and",
        "     Checkout helper unchanged. The status page shows the example app as applied,",
        f"     and {example_url} shows the new greeting within {POLL_INTERVAL} seconds.",
        f"  5. Channel production ({project_url}/channels/production) lists both sets;",
        "     remove one or roll back from there.",
        f"  6. Instances: {project_url}/instances",
        "",
        "Ctrl+C stops the FORGE and the example application.",
        "",
    ]
    click.echo("\n".join(lines))


def _login(info: DemoInfo, role: str) -> str:
    for login in info.logins:
        if login.role.lower() == role.lower():
            return login.email
    return info.logins[0].email
