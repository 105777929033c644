"""The LIVE half of ``anvil-forge demo``: an ACCESS_TOKEN, a first publication, the example app.

    $ anvil-forge demo                 # FORGE on :5000, examples/live_app.py on :5001
    $ anvil-forge demo --port 8000     # FORGE on :8000, the example on the next free port
    $ anvil-forge demo --json          # one JSON line (URLs, accounts) for scripts

:func:`prepare_live_demo` runs as a :data:`forge_app.demo.DEMO_HOOKS` hook after seeding (also
with ``--no-serve``): it makes sure the demo project has an ACCESS_TOKEN named
:data:`TOKEN_NAME` and that its production channel serves the latest LOCKED versions of
:data:`DEMO_SETS` (*Support bot* and *Checkout helper*: one channel, two prompt sets), so the
example has something to serve from each. :func:`serve_demo` then writes the example's
``anvil.toml`` into the instance folder, serves the FORGE and starts the example app as a child
process once the FORGE listens; Ctrl-C stops both (the child by its PID). Idempotent: a second
run reuses the token and publishes nothing new.

The log stays readable: no request lines for static files, the store and the LIVE API (the
example's polls and heartbeats) unless they fail, and no colour codes unless standard error is
a terminal (and ``NO_COLOR`` is unset). The example app logs no requests of its own.
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flask import Flask
from sqlalchemy import select

from forge_app.demo import DEMO_HOOKS, DemoInfo
from forge_app.demo_console import (
    CHANNEL,
    POLL_INTERVAL,
    DemoLogFilter,
    echo_json,
    print_instructions,
    stderr_fd,
)
from forge_app.demo_releases import start_demo_worker  # also seeds a guard (issue 11)
from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.models import PromptSet, User

__all__ = [
    "EXAMPLE_APP",
    "TOKEN_NAME",
    "LiveDemo",
    "example_port_for",
    "prepare_live_demo",
    "serve_demo",
]

TOKEN_NAME = "Demo example app"  # noqa: S105 - a display name, not a secret
EXAMPLE_APP = Path(__file__).resolve().parents[1] / "examples" / "live_app.py"
#: The sets the example application uses (support.* and checkout.* prompts), both published
#: to production.
DEMO_SETS = ("Support bot", "Checkout helper")
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
    from forge_app.models.distribution import AccessToken
    from forge_app.services import publishing
    from forge_app.services.tokens import generate_token, reveal_token
    from forge_app.services.versions import latest_release

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
        token, text, _ = generate_token(project, TOKEN_NAME, user=owner)
    else:
        text = reveal_token(token)
    publishing.ensure_default_channels(project)
    channel = publishing.get_channel(project, CHANNEL)
    published: list[str] = []
    problem: str | None = None
    pointer = None
    try:
        if channel is None:
            raise ForgeError(f"the demo project has no {CHANNEL} channel")
        pointer = publishing.current_release(channel)
        for name in DEMO_SETS:
            prompt_set = db.session.scalar(
                select(PromptSet).where(PromptSet.project_id == project.id, PromptSet.name == name)
            )
            if prompt_set is None:
                raise ForgeError(f"the demo set {name!r} is missing")
            if pointer is not None and pointer.entry(str(prompt_set.id)) is not None:
                continue
            version = latest_release(db.session, prompt_set)
            if version is None:
                raise ForgeError(f"the demo set {name!r} has no LOCKED version")
            publishing.publish_version(version, channel, user=owner)
            db.session.commit()
        pointer = publishing.current_release(channel)
    except ForgeError as e:
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
        f'forge_url = "{forge_url}"\n'
        "hints = true  # an outbound stream from the FORGE: new releases arrive at once\n",
        encoding="utf-8",
    )
    return path


#: How many ports after the FORGE's the example app tries before taking any free one.
PORT_SEARCH = 20


def _bindable(host: str, port: int) -> int | None:
    """The port bound (``port``, or the one chosen for 0) if ``host:port`` can be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the example's server will: a port in TIME_WAIT is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return None
        return int(probe.getsockname()[1])


def example_port_for(host: str, forge_port: int, requested: int | None = None) -> int:
    """The example app's port: ``requested`` (which must be free), else the first free port
    after the FORGE's (up to :data:`PORT_SEARCH` of them), else any free port.

    Raises:
        click.ClickException: if ``requested`` is the FORGE's port or cannot be bound.
    """
    if requested is not None:
        if requested == forge_port:
            raise click.ClickException(
                f"--example-port {requested} is the FORGE's port; choose another one"
            )
        if _bindable(host, requested) is None:
            raise click.ClickException(
                f"cannot listen on {host}:{requested} for the example application: "
                "the port is in use or not allowed"
            )
        return requested
    for candidate in range(forge_port + 1, min(forge_port + 1 + PORT_SEARCH, 65536)):
        if _bindable(host, candidate) is not None:
            return candidate
    port = _bindable(host, 0)
    if port is None:
        raise click.ClickException(f"no free port on {host} for the example application")
    return port


def child_environment(token: str) -> dict[str, str]:
    """The parent's environment without its ``ANVIL_*`` settings (they would override the
    example's anvil.toml), plus the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    env["ANVIL_ACCESS_TOKEN"] = token
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ExampleProcess:
    """The example app as a child process, started once the FORGE listens, stopped by PID."""

    def __init__(
        self, command: list[str], env: dict[str, str], *, stdout: int | None = None
    ) -> None:
        self.command = command
        self.env = env
        self.stdout = stdout
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def start_when(
        self,
        ready: threading.Event,
        then: Callable[[bool], None] | None = None,
        listen_at: tuple[str, int] | None = None,
    ) -> threading.Thread:
        """Start the child once ``ready`` is set; then call ``then(listening)``, after the
        child accepts connections on ``listen_at`` (or exited, or 30 s passed)."""

        def run() -> None:
            ready.wait()
            with self._lock:
                if not self._stopped:
                    self.process = subprocess.Popen(self.command, env=self.env, stdout=self.stdout)
                process = self.process
            if then is not None:
                then(process is not None and listen_at is not None and _listens(process, listen_at))

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


def _listens(process: subprocess.Popen[bytes], address: tuple[str, int], wait: float = 30) -> bool:
    """Whether the child accepts connections at ``address`` before it exits or ``wait`` ends."""
    deadline = time.monotonic() + wait
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=1):
                return True
        except OSError:
            time.sleep(0.1)  # the child is still importing: it prints its line once it listens
    return False


def serve_demo(
    app: Flask,
    info: DemoInfo,
    host: str,
    port: int,
    serve: Callable[..., None],
    *,
    example_port: int | None = None,
    as_json: bool = False,
) -> None:
    """Serve the FORGE (``serve(app, host, port, ready, err=as_json)``) with the example app
    beside it on ``example_port`` (default: the first free port after ``port``).

    With ``as_json`` the instructions are not printed: one JSON line (:func:`demo_summary`)
    goes to standard output once the FORGE and the example app listen, everything else
    (the FORGE's and the example's own lines, request logs) to standard error.
    """
    live: LiveDemo | None = info.extra.get("live")
    forge_url = _http_url(host, port)
    # The example app sends its ACCESS_TOKEN to the FORGE; over plain HTTP the client allows
    # only a loopback address, which also reaches a FORGE bound to every interface.
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared, not bound
    local_url = _http_url(local, port)
    ready = threading.Event()  # the FORGE listens
    closing = threading.Event()  # the demo stops (or the FORGE could not listen): no report
    log = DemoLogFilter()
    logging.getLogger("werkzeug").addFilter(log)
    previous = _stop_on_sigterm()
    stop_worker = start_demo_worker(app)  # scheduled jobs and health guards, beside the FORGE
    example: ExampleProcess | None = None
    starter: threading.Thread | None = None
    try:
        if live is None or not EXAMPLE_APP.is_file():
            starter = _without_example(info, forge_url, ready, closing, as_json=as_json)
        else:
            config = write_client_config(app, live, local_url)
            chosen = example_port_for(host, port, example_port)
            example_url = f"{_http_url(host, chosen)}/"
            command = [
                sys.executable,
                str(EXAMPLE_APP),
                "--config",
                str(config),
                "--host",
                host,
                "--port",
                str(chosen),
                "--exit-with-parent",
            ]
            if not as_json:
                print_instructions(info, live, forge_url, example_url, config)
            example = ExampleProcess(
                command, child_environment(live.token), stdout=stderr_fd() if as_json else None
            )

            def started(listening: bool) -> None:
                if not closing.is_set():
                    echo_json(info, forge_url, example_url if listening else None)

            starter = example.start_when(ready, started if as_json else None, (local, chosen))
        serve(app, host, port, ready, err=as_json)
    finally:
        closing.set()
        stop_worker()
        logging.getLogger("werkzeug").removeFilter(log)
        if example is not None:
            example.stop()
        ready.set()  # let the starter thread finish (it starts nothing once stopped)
        if starter is not None:
            starter.join(timeout=5)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _http_url(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 address in brackets)."""
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


def _without_example(
    info: DemoInfo,
    forge_url: str,
    ready: threading.Event,
    closing: threading.Event,
    *,
    as_json: bool,
) -> threading.Thread | None:
    """Without the example app: say so, or report the JSON line once the FORGE listens."""
    if not as_json:
        click.echo("  (The example application is not available in this installation.)")
        return None

    def report() -> None:
        if not closing.is_set():
            echo_json(info, forge_url, None)

    return _report_when(ready, report)


def _report_when(ready: threading.Event, report: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        ready.wait()
        report()

    thread = threading.Thread(target=run, name="demo-report", daemon=True)
    thread.start()
    return thread


def _stop_on_sigterm() -> Any:
    """SIGTERM ends the demo like Ctrl-C, so the child is stopped too."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):
        return signal.signal(signal.SIGTERM, interrupt)
    return None
