"""``anvil-forge demo`` (what ``make demo`` runs) on a fresh instance folder: it seeds, publishes,
serves the FORGE, starts the example application, which serves the published prompts and
reports to the FORGE; Ctrl-C stops both processes. No external service is involved. The log
has no static-file lines and no colour codes (the output is a pipe); ``--json`` prints one line
for scripts and ``--example-port`` places the example app."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEADLINE = 90.0
TOKEN = re.compile(r"anvil_[a-z0-9]{12}_")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode("utf-8"))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class Demo:
    def __init__(self, tmp: Path, port: int, *options: str) -> None:
        command = Path(sys.executable).with_name("anvil-forge")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANVIL_", "FORGE_"))}
        env["FORGE_INSTANCE_PATH"] = str(tmp / "instance")
        env["PYTHONUNBUFFERED"] = "1"
        self.instance = tmp / "instance"
        self.process = subprocess.Popen(
            [str(command), "demo", "--port", str(port), *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if "--json" in options else subprocess.STDOUT,
            env=env,
            cwd=tmp,
            text=True,
        )
        self.errors = ""
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for_line(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.output)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C, to this PID
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.stderr is not None:
            self.errors = self.process.stderr.read()
            self.process.stderr.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path, free_port())
    try:
        yield running
    finally:
        running.stop()


def wait_until(condition, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_make_demo_serves_the_forge_and_a_live_example(demo: Demo) -> None:
    forge_url = demo.wait_for_line(r"FORGE listening on (http://\S+?)/?\s")[1].rstrip("/")
    example_url = demo.wait_for_line(r"Example app on (http://\S+/)")[1]
    text = "".join(demo.output)
    assert "Production serves Checkout helper 0.1.0 and Support bot 0.2.0." in text
    assert "owner@demo.anvil" in text and "Try it:" in text
    assert not TOKEN.search(text)  # the ACCESS_TOKEN is never printed

    page = wait_until(
        lambda: (html := get(example_url)) and "Support bot@0.2.0" in html and html,
        "the example to serve",
    )
    # One channel, two prompt sets: the example renders prompts of both.
    assert "Checkout helper@0.1.0" in page
    assert "Hi Ada 👋 Thanks for contacting Acme Cloud support." in page
    assert "The customer has a laptop in their cart." in page
    assert "(fallback: not published)" not in page
    assert get(f"{forge_url}/healthz") is not None
    # The page updates itself from /state.json (no reload) and labels every prompt.
    assert 'http-equiv="refresh"' not in page and '<script src="/static/live_app.js"' in page
    assert "<h3>Support bot <code>0.2.0</code></h3>" in page
    assert '<figure class="card" data-prompt="support.greeting"><figcaption>' in page
    state = json.loads(get(f"{example_url}state.json") or "{}")
    assert [g["name"] for g in state["groups"]] == ["Support bot", "Checkout helper"]
    assert 'fetch("/state.json"' in (get(f"{example_url}static/live_app.js") or "")

    # The log: pages are logged, static files are not, and there are no colour codes.
    assert get(f"{forge_url}/login") is not None
    assert get(f"{forge_url}/static/forge.css") is not None
    assert get(f"{forge_url}/static/missing-on-purpose.css") is None  # a 404 is logged
    demo.wait_for_line(r"GET /static/missing-on-purpose\.css HTTP/1\.1\" 404")

    # The example reported to the FORGE: one LIVE instance on production, serving 0.2.0.
    database = demo.instance / "anvil.db"

    def recorded() -> list[str]:
        with sqlite3.connect(database) as connection:
            rows = connection.execute("SELECT channel FROM live_instances").fetchall()
        connection.close()
        return [str(c) for (c,) in rows]

    assert wait_until(recorded, "the example's heartbeat") == ["production"]
    with sqlite3.connect(database) as connection:
        kinds = [k for (k,) in connection.execute("SELECT kind FROM publications")]
        releases = connection.execute(
            "SELECT releases_json FROM publications ORDER BY sequence DESC LIMIT 1"
        ).fetchone()[0]
    connection.close()
    assert kinds == ["publish", "publish"]
    assert sorted(e["name"] for e in json.loads(releases)) == ["Checkout helper", "Support bot"]
    config = (demo.instance / "live-demo" / "anvil.toml").read_text()
    assert f'store = "{forge_url}/store"' in config and not TOKEN.search(config)

    # Ctrl-C stops the FORGE and the example application.
    demo.stop()
    assert demo.process.returncode is not None
    wait_until(lambda: get(example_url) is None, "the example app to stop")
    assert get(f"{forge_url}/healthz") is None
    while not demo.lines.empty():
        demo.output.append(demo.lines.get())
    log = "".join(demo.output)
    assert '"GET /login HTTP/1.1" 200' in log
    assert "GET /static/forge.css" not in log and "/store/" not in log
    assert "\x1b[" not in log  # not a terminal: no colour codes


def test_demo_json_line_and_example_port(tmp_path: Path) -> None:
    forge_port, example_port = free_port(), free_port()
    demo = Demo(tmp_path, forge_port, "--json", "--example-port", str(example_port))
    try:
        line = demo.wait_for_line(r"^\{")
        summary = json.loads(line.string)
        assert summary["forge_url"] == f"http://127.0.0.1:{forge_port}"
        assert summary["example_url"] == f"http://127.0.0.1:{example_port}/"
        assert summary["accounts"][0] == {"email": "owner@demo.anvil", "role": "owner"}
        # Printed once both listen: the example app answers straight away.
        assert get(f"{summary['login_url']}") is not None
        page = wait_until(
            lambda: (html := get(summary["example_url"])) and "Support bot@0.2.0" in html and html,
            "the example to serve",
        )
        assert "Checkout helper@0.1.0" in page
    finally:
        demo.stop()
    while not demo.lines.empty():
        demo.output.append(demo.lines.get())
    assert "".join(demo.output).strip() == line.string.strip()  # stdout: the JSON line only
    assert "FORGE listening on" in demo.errors and "Example app on" in demo.errors
    assert not TOKEN.search(demo.errors + line.string)
