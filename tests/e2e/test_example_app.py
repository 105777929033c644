"""The example application's page (``examples/live_app.py``, the other end of ``make demo``) in
Chromium: a heading per prompt set and a labelled figure per prompt, no serious axe-core finding
at desktop and phone widths, and a publish shows up in place — no reload, no ``<meta refresh>``,
no inline script (its CSP allows none)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from anvil_client.stores import FileStore
from tests.anvil_client.wire_publisher import OTHER_SET_ID, WirePublisher

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "live_app.py"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"


def serious_axe_findings(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .map(v => ({id: v.id, impact: v.impact,
                        nodes: v.nodes.map(n => n.target.join(" "))}))"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[str, WirePublisher]]:
    """The example app on a file store with Support bot 0.2.0 and Checkout helper 0.1.0."""
    publisher = WirePublisher(FileStore(tmp_path / "store"))
    publisher.publish(
        {
            "support.greeting": "Hi {{ customer_name }} 👋 ({{ product }})",
            "support.system": [
                ("system", "You help {{ product }} users."),
                ("user", "{{ question }}"),
            ],
        },
        version="0.2.0",
    )
    publisher.publish(
        {"checkout.upsell": "Add a case to {{ cart_items }}?"},
        version="0.1.0",
        prompt_set_id=OTHER_SET_ID,
        name="Checkout helper",
    )
    config = tmp_path / "anvil.toml"
    config.write_text(
        f'store = "{publisher.store.url}"\n'
        f'project_id = "{publisher.project_id}"\n'
        'channel = "production"\n'
        f'trusted_keys = ["{publisher.trusted_key}"]\n'
        'access_token_env = "ANVIL_ACCESS_TOKEN"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n'
        "poll_interval = 1\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    env.update({"ANVIL_ACCESS_TOKEN": publisher.token, "PYTHONPATH": str(ROOT)})
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "Example app on" in line, line
        yield f"http://127.0.0.1:{port}/", publisher
    finally:
        process.terminate()  # this PID only
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_example_page_is_labelled_and_updates_in_place(
    example: tuple[str, WirePublisher], page: Any, screenshots: Path
) -> None:
    url, publisher = example
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    loads: list[str] = []
    page.on("load", lambda: loads.append(page.url))
    page.goto(url)

    assert page.locator('meta[http-equiv="refresh"]').count() == 0
    assert page.locator("script:not([src])").count() == 0
    expect(page.locator("h1")).to_have_text("Example app")
    expect(page.get_by_role("heading", level=2)).to_have_count(3)
    sets = page.get_by_role("heading", level=3)
    expect(sets).to_have_text(["Support bot 0.2.0", "Checkout helper 0.1.0"])
    greeting = page.get_by_role("figure", name="support.greeting text prompt")
    expect(greeting).to_contain_text("Hi Ada 👋 (Acme Cloud)")
    expect(page.get_by_role("figure", name="support.system chat prompt")).to_contain_text(
        "You help Acme Cloud users."
    )
    for width, height in ((1360, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        assert serious_axe_findings(page) == [], width
        page.screenshot(path=str(screenshots / f"example-app-{width}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        assert not overflow, f"horizontal scroll at {width}px"

    page.evaluate("window.__stillTheSamePage = true")
    publisher.publish(
        {
            "support.greeting": "Hello {{ customer_name }}, welcome back to {{ product }}!",
            "support.system": [
                ("system", "You help {{ product }} users."),
                ("user", "{{ question }}"),
            ],
        },
        version="0.3.0",
    )
    expect(greeting).to_contain_text("Hello Ada, welcome back to Acme Cloud!", timeout=20_000)
    expect(sets).to_have_text(["Support bot 0.3.0", "Checkout helper 0.1.0"])
    expect(page.locator("#version")).to_have_text("Support bot@0.3.0, Checkout helper@0.1.0")
    assert page.evaluate("window.__stillTheSamePage === true")  # updated in place
    assert len(loads) == 1, loads
    assert page.title() == "Example app · Support bot@0.3.0, Checkout helper@0.1.0"
    assert errors == [], errors
