"""``anvil-forge demo`` options and output: ports, ``--json``, a readable log, the exact button
labels in its instructions, and the example application's page (headings, labels, no reload)."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
from click.testing import CliRunner

from anvil_client import AnvilClient
from anvil_client.stores import FileStore
from forge_app.cli import main
from forge_app.demo_console import LABELS, DemoLogFilter
from forge_app.demo_live import EXAMPLE_APP, example_port_for
from tests.anvil_client.wire_publisher import OTHER_SET_ID, WirePublisher

TEMPLATES = Path(__file__).resolve().parents[2] / "forge_app" / "templates"
TOKEN = re.compile(r"anvil_[a-z0-9]{12}_")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("FORGE_DATABASE_URL", "FORGE_ENV", "FORGE_CONFIG", "FORGE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return {"FORGE_INSTANCE_PATH": str(tmp_path / "instance")}


@pytest.fixture
def listening() -> Iterator[list[socket.socket]]:
    """Sockets the test holds open (closed afterwards)."""
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def hold_free_block(held: list[socket.socket], count: int) -> int:
    """Find ``count`` consecutive free ports, hold them all, return the first."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        block = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                block.append(sock)
                sock.bind(("127.0.0.1", port))
                sock.listen()
        except OSError:
            for sock in block:
                sock.close()
            continue
        held.extend(block)
        return first
    raise AssertionError("no block of free ports")


# --- ports --------------------------------------------------------------------------------


def test_the_example_takes_the_next_free_port(listening: list[socket.socket]) -> None:
    forge_port = hold_free_block(listening, 2)  # the FORGE's port and the next one are taken
    chosen = example_port_for("127.0.0.1", forge_port)
    assert chosen > forge_port + 1
    listening[1].close()  # forge_port + 1 is free again
    assert example_port_for("127.0.0.1", forge_port) == forge_port + 1


def test_a_chosen_example_port_is_used_or_refused_in_one_sentence(
    listening: list[socket.socket],
) -> None:
    busy = hold_free_block(listening, 1)
    with pytest.raises(click.ClickException) as refused:
        example_port_for("127.0.0.1", 5000, busy)
    assert refused.value.message == (
        f"cannot listen on 127.0.0.1:{busy} for the example application: "
        "the port is in use or not allowed"
    )
    with pytest.raises(click.ClickException, match="is the FORGE's port"):
        example_port_for("127.0.0.1", 8000, 8000)
    listening[0].close()
    assert example_port_for("127.0.0.1", 5000, busy) == busy


def test_demo_refuses_an_invalid_example_port(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["demo", "--example-port", "70000", "--no-serve"], env=env)
    assert result.exit_code == 2 and "--example-port" in result.output


# --- --json ---------------------------------------------------------------------------------


def test_demo_json_is_one_line_with_urls_and_accounts(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--no-serve", "--json", "--port", "8000"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    summary = json.loads(lines[0])
    assert summary["forge_url"] == "http://127.0.0.1:8000"
    assert summary["login_url"] == "http://127.0.0.1:8000/login"
    assert summary["project_url"] == f"http://127.0.0.1:8000/projects/{summary['project_id']}"
    assert summary["example_url"] is None  # --no-serve starts nothing
    assert summary["password"] == "anvil-demo-password"
    assert [a["email"] for a in summary["accounts"]] == [
        "owner@demo.anvil",
        "reviewer@demo.anvil",
        "editor@demo.anvil",
        "viewer@demo.anvil",
    ]
    assert summary["accounts"][0]["role"] == "owner"
    assert summary["published"] == ["Checkout helper 0.1.0", "Support bot 0.2.0"]
    assert summary["seeded"] is True
    assert not TOKEN.search(result.output)  # the ACCESS_TOKEN is never printed
    again = CliRunner().invoke(main, ["demo", "--no-serve", "--json"], env=env)
    assert json.loads(again.stdout)["seeded"] is False


# --- the log --------------------------------------------------------------------------------


def request_record(path: str, code: int, *, coloured: bool = False) -> logging.LogRecord:
    """A record as werkzeug's request handler logs it (ANSI styles on 3xx/4xx/5xx)."""
    line = f"GET {path} HTTP/1.1"
    if coloured:
        line = f"\x1b[33m{line}\x1b[0m"
    return logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '127.0.0.1 - - [30/Nov/2026 21:00:00] "%s" %s %s',
        (line, str(code), "-"),
        None,
    )


def test_the_log_has_no_static_store_or_live_api_successes() -> None:
    quiet = DemoLogFilter(colour=False)
    assert not quiet.filter(request_record("/static/forge.css", 200))
    assert not quiet.filter(request_record("/static/forge.js?v=3", 304, coloured=True))
    assert not quiet.filter(request_record("/store/projects/x/channels/production.json", 304))
    assert not quiet.filter(request_record("/api/v1/live/heartbeat", 204))
    assert quiet.filter(request_record("/login", 200))
    assert quiet.filter(request_record("/projects/1", 302))
    # Failures stay visible: a missing asset, a refused heartbeat (a revoked token).
    assert quiet.filter(request_record("/static/missing.css", 404, coloured=True))
    assert quiet.filter(request_record("/api/v1/live/heartbeat", 401, coloured=True))


def test_colour_codes_only_on_a_terminal() -> None:
    record = request_record("/nope", 404, coloured=True)
    assert DemoLogFilter(colour=False).filter(record)
    assert "\x1b" not in record.getMessage()
    assert '"GET /nope HTTP/1.1" 404 -' in record.getMessage()
    coloured = request_record("/nope", 404, coloured=True)
    assert DemoLogFilter(colour=True).filter(coloured)
    assert "\x1b[33m" in coloured.getMessage()


def test_colour_follows_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert DemoLogFilter().colour is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert DemoLogFilter().colour is False


# --- the instructions name the FORGE's real buttons -----------------------------------------


def test_every_label_the_instructions_name_is_on_a_page() -> None:
    pages = "\n".join(p.read_text(encoding="utf-8") for p in TEMPLATES.rglob("*.html"))
    for key, label in LABELS.items():
        assert label in pages, f"{key}: the FORGE shows no {label!r}"


def test_the_instructions_use_the_labels(env: dict[str, str]) -> None:
    from forge_app import create_app
    from forge_app.demo import DEMO_HOOKS, seed_demo
    from forge_app.demo_console import print_instructions
    from forge_app.extensions import db

    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--no-serve"], env=env).exit_code == 0
    app = create_app(env)
    with app.app_context():
        info = seed_demo(db.session)
        for hook in DEMO_HOOKS:
            if hook.__name__ == "prepare_live_demo":
                hook(app, info)
        live = info.extra["live"]

        @click.command()
        def show() -> None:
            print_instructions(info, live, "http://f", "http://e/", Path("anvil.toml"))

        text = runner.invoke(show).output
        db.engine.dispose()
    for label in ("Unlock for editing", "Submit for review…", "Approve and lock"):
        assert f"“{label}”" in text
    assert "Unlock to edit" not in text
    assert not TOKEN.search(text)


# --- the example application's page ---------------------------------------------------------


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("live_app_example", EXAMPLE_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[ModuleType, AnvilClient, WirePublisher]]:
    publisher = WirePublisher(FileStore(tmp_path / "store"))
    publisher.publish(
        {
            "support.greeting": "Hi {{ customer_name }} 👋 from {{ product }}",
            "support.system": [
                ("system", "You help with {{ product }}."),
                ("user", "{{ question }}"),
            ],
            "support.extra": "not used by the app",
        },
        version="0.2.0",
    )
    publisher.publish(
        {"checkout.upsell": "{{ cart_items }} <b>and more</b>"},
        version="0.1.0",
        prompt_set_id=OTHER_SET_ID,
        name="Checkout helper",
    )
    client = AnvilClient(**publisher.client_settings(tmp_path / "cache"), start=False)
    client.sync()
    try:
        yield load_example(), client, publisher
    finally:
        client.close()


def test_the_example_page_has_headings_and_labelled_prompts(example: Any) -> None:
    module, client, _ = example
    page = module.render_page(client)
    assert 'http-equiv="refresh"' not in page
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    assert scripts == [""]  # one script, loaded from a file: no inline code
    assert '<script src="/static/live_app.js" defer>' in page
    assert "<style" not in page and 'href="/static/live_app.css"' in page
    assert re.findall(r"<h[1-3][^>]*>", page)[:4] == ["<h1>", '<h2 id="status-heading">',
                                                      '<h2 id="sets-heading">',
                                                      '<h2 id="prompts-heading">']  # fmt: skip
    assert "<h3>Support bot <code>0.2.0</code></h3>" in page
    assert "<h3>Checkout helper <code>0.1.0</code></h3>" in page
    figures = re.findall(r'<figure class="card" data-prompt="([^"]+)"><figcaption>', page)
    assert figures == list(module.USES)  # every prompt the app shows has a caption
    assert '<figcaption><code>support.system</code> <span class="kind">chat prompt' in page
    assert "Hi Ada 👋 from Acme Cloud" in page
    assert "a laptop &lt;b&gt;and more&lt;/b&gt;" in page  # escaped, never markup
    assert "Also served (this app does not use them): <code>support.extra</code>" in page


def test_the_example_serves_its_state_and_script(example: Any) -> None:
    module, client, publisher = example
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.make_handler(client))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/state.json", timeout=5) as response:
            state = json.loads(response.read())
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        with urllib.request.urlopen(f"{base}/static/live_app.js", timeout=5) as response:
            script = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/javascript")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/static/../live_app.py", timeout=5)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert state["version"] == "Support bot@0.2.0, Checkout helper@0.1.0"
    assert [(s["name"], s["version"]) for s in state["sets"]] == [
        ("Support bot", "0.2.0"),
        ("Checkout helper", "0.1.0"),
    ]
    support = state["groups"][0]
    assert support["name"] == "Support bot" and support["version"] == "0.2.0"
    greeting = support["prompts"][0]
    assert greeting == {
        "id": "support.greeting",
        "kind": "text",
        "text": "Hi Ada 👋 from Acme Cloud",
    }
    assert 'fetch("/state.json"' in script and "innerHTML" not in script
    assert publisher.token not in json.dumps(state)
