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
import json
import logging
import os
import re
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
from forge_app.demo_releases import start_demo_worker  # also seeds a guard (issue 11)
from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.models import PromptSet, User

__all__ = [
    "EXAMPLE_APP",
    "TOKEN_NAME",
    "LiveDemo",
    "demo_summary",
    "example_port_for",
    "prepare_live_demo",
    "serve_demo",
]

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
    from forge_app.services.workflow import latest_release

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


def demo_summary(info: DemoInfo, forge_url: str, example_url: str | None) -> dict[str, Any]:
    """What ``anvil-forge demo --json`` prints (one line): URLs, accounts, what is served.
    Never the ACCESS_TOKEN (it is in the example's environment only)."""
    live: LiveDemo | None = info.extra.get("live")
    project_url = f"{forge_url}/projects/{info.project.id}"
    return {
        "forge_url": forge_url,
        "login_url": f"{forge_url}/login",
        "project_url": project_url,
        "channel_url": f"{project_url}/channels/{CHANNEL}",
        "project_id": str(info.project.id),
        "example_url": example_url,
        "channel": CHANNEL,
        "published": live.published if live is not None else [],
        "problem": live.problem if live is not None else None,
        "password": info.password,
        "accounts": [{"email": login.email, "role": login.role} for login in info.logins],
        "seeded": info.created,
    }


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
    forge_url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    # The example app sends its ACCESS_TOKEN to the FORGE; over plain HTTP the client allows
    # only a loopback address, which also reaches a FORGE bound to every interface.
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared, not bound
    local_url = f"http://{local}:{port}" if ":" not in local else f"http://[{local}]:{port}"
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
            if not as_json:
                click.echo("  (The example application is not available in this installation.)")
            else:

                def report() -> None:
                    if not closing.is_set():
                        _echo_json(info, forge_url, None)

                starter = _report_when(ready, report)
        else:
            config = write_client_config(app, live, local_url)
            chosen = example_port_for(host, port, example_port)
            example_url = (
                f"http://{host}:{chosen}/" if ":" not in host else f"http://[{host}]:{chosen}/"
            )
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
                command, child_environment(live.token), stdout=_stderr_fd() if as_json else None
            )

            def started(listening: bool) -> None:
                if not closing.is_set():
                    _echo_json(info, forge_url, example_url if listening else None)

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


def _report_when(ready: threading.Event, report: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        ready.wait()
        report()

    thread = threading.Thread(target=run, name="demo-report", daemon=True)
    thread.start()
    return thread


def _echo_json(info: DemoInfo, forge_url: str, example_url: str | None) -> None:
    click.echo(json.dumps(demo_summary(info, forge_url, example_url), ensure_ascii=False))
    sys.stdout.flush()


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
        return None


#: Request lines the demo's log leaves out when they succeed: static files, the store (the
#: example's polls) and the LIVE API (its heartbeats and hint stream). Failures stay.
QUIET_PATHS = ("/static/", "/store/", "/api/v1/live/")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REQUEST_LINE = re.compile(r'"[A-Z]+ (/[^ ?"]*)[^ "]* HTTP/[0-9.]+" (\d{3}) ')


class DemoLogFilter(logging.Filter):
    """Keep the demo's terminal readable (for the ``werkzeug`` logger): no line for a
    successful request of :data:`QUIET_PATHS`, and no colour codes unless ``colour`` (by
    default: standard error is a terminal and ``NO_COLOR`` is unset)."""

    def __init__(self, colour: bool | None = None) -> None:
        super().__init__()
        if colour is None:
            colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        self.colour = colour

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        plain = _ANSI.sub("", message)
        request = _REQUEST_LINE.search(plain)
        if request and request[1].startswith(QUIET_PATHS) and int(request[2]) < 400:
            return False
        if not self.colour and plain != message:
            record.msg, record.args = plain, ()
        return True


def _stop_on_sigterm() -> Any:
    """SIGTERM ends the demo like Ctrl-C, so the child is stopped too."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):
        return signal.signal(signal.SIGTERM, interrupt)
    return None


#: The FORGE's labels the instructions name, exactly as its pages show them (a test checks
#: each one against the templates).
LABELS = {
    "unlock": "Unlock for editing",
    "save": "Save",
    "submit": "Submit for review…",
    "review": "Open the review",
    "approve": "Approve and lock",
    "publish": "Publish to LIVE instances…",
    "remove": "Remove…",
    "rollback": "Roll back to this…",
}


def print_instructions(
    info: DemoInfo, live: LiveDemo, forge_url: str, example_url: str, config: Path
) -> None:
    project_url = f"{forge_url}/projects/{live.project_id}"
    label = LABELS
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
        "     versions it serves, and updates itself.",
        f"  2. Sign in at {forge_url}/login as {_login(info, 'Editor')}, open Support bot,",
        f"     choose “{label['unlock']}”, change support.greeting and “{label['save']}”.",
        f"  3. “{label['submit']}”, then sign out, sign in as {_login(info, 'Reviewer')},",
        f"     “{label['review']}” and “{label['approve']}” it.",
        f"  4. Sign in as {_login(info, 'Owner')}, open the new version, “{label['publish']}”,",
        "     channel production: the confirmation shows Support bot 0.2.0 → 0.3.0 and",
        "     Checkout helper unchanged. The status page shows the example app as applied,",
        f"     and {example_url} shows the new greeting within {POLL_INTERVAL} seconds.",
        f"  5. Channel production ({project_url}/channels/production) lists both sets:",
        f"     “{label['remove']}” one, or “{label['rollback']}” an earlier entry.",
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
