"""The LIVE client against real S3 servers: SeaweedFS (a real process) and moto.

Publishes are made with the wire functions directly (tests/anvil_client/wire_publisher.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient
from anvil_client.stores import ObjectStore, open_store
from tests.anvil_client.spy_stores import SpyStore, wait_for
from tests.anvil_client.wire_publisher import OTHER_SET_ID, WirePublisher

pytestmark = pytest.mark.integration
INTERVAL = 0.5


def v(n: int) -> dict[str, str]:
    return {"welcome.message": f"v{n} {{{{ name }}}}"}


def serves(client: AnvilClient, version: str) -> Callable[[], bool]:
    return lambda: client.status()["version"] == version


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    """Clients and stores to close at teardown (clients first: they may be mid-poll)."""
    made: list[Any] = []
    yield made
    for thing in made:
        thing.close()


def check_accepting_pickup(
    publish_store: ObjectStore, client_store: ObjectStore, cache: Path, made: list[Any]
) -> None:
    publisher = WirePublisher(publish_store)
    publisher.publish(v(1), version="1.0.0")
    spy = SpyStore(client_store)
    client = AnvilClient(**publisher.client_settings(cache, store=spy), poll_interval=INTERVAL)
    made.extend([client, spy, publish_store])
    wait_for(serves(client, "1.0.0"), timeout=30, message="the first poll")
    wait_for(lambda: len(spy.pointer_gets()) >= 2, timeout=30)
    assert spy.pointer_gets()[-1].outcome == "304"  # idle polls are conditional
    publisher.publish(v(2), version="2.0.0")
    before = len(spy.pointer_gets())
    wait_for(serves(client, "2.0.0"), timeout=30, message="the publish to be picked up")
    after = [c.outcome for c in spy.pointer_gets()[before:]]
    # Picked up by the next poll (one poll interval); a poll in flight may have seen the old one.
    assert after[:1] == ["200"] or after[:2] == ["304", "200"]
    assert client.prompt("welcome.message", name="Ada") == "v2 Ada"
    assert client.status()["last_error"] is None


def test_accepting_client_picks_up_a_publish_on_seaweedfs(
    seaweed_bucket: str, tmp_path: Path, clients: list[Any]
) -> None:
    check_accepting_pickup(
        open_store(seaweed_bucket), open_store(seaweed_bucket), tmp_path / "cache", clients
    )


def test_accepting_client_picks_up_a_publish_on_moto(
    moto_s3: Any, tmp_path: Path, clients: list[Any]
) -> None:
    url = "s3://anvil-test/prefix"
    check_accepting_pickup(open_store(url), open_store(url), tmp_path / "cache", clients)


def test_frozen_reads_nothing_until_anvil_sync_then_serves_it(
    seaweed_bucket: str, tmp_path: Path, clients: list[Any]
) -> None:
    publisher = WirePublisher(open_store(seaweed_bucket))
    publisher.publish(v(1), version="1.0.0")
    cache = tmp_path / "frozen-cache"
    # The app's FROZEN process: running, with a spy on every store request it could make.
    frozen_spy = SpyStore(open_store(seaweed_bucket))
    settings = publisher.client_settings(cache, store=frozen_spy)
    frozen = AnvilClient(**settings, mode="frozen", poll_interval=INTERVAL)
    clients.extend([frozen, frozen_spy, publisher.store])
    # An ACCEPTING neighbour on another cache dir shows that poll intervals pass meanwhile.
    watcher_spy = SpyStore(open_store(seaweed_bucket))
    watcher = AnvilClient(
        **publisher.client_settings(tmp_path / "watcher", store=watcher_spy),
        poll_interval=INTERVAL,
    )
    clients[:0] = [watcher, watcher_spy]
    wait_for(serves(watcher, "1.0.0"), timeout=30)
    publisher.publish(v(2), version="2.0.0")
    wait_for(serves(watcher, "2.0.0"), timeout=30)
    wait_for(lambda: len(watcher_spy.pointer_gets()) >= 4, timeout=30)
    assert frozen_spy.calls == []
    assert frozen.status()["version"] is None

    env = {k: val for k, val in os.environ.items() if not k.startswith("ANVIL_")}
    env.update(
        ANVIL_STORE=seaweed_bucket,
        ANVIL_PROJECT_ID=publisher.project_id,
        ANVIL_ACCESS_TOKEN=publisher.token,
        ANVIL_TRUSTED_KEYS=publisher.trusted_key,
        ANVIL_CACHE_DIR=str(cache),
        ANVIL_MODE="frozen",
    )
    anvil = Path(sys.executable).with_name("anvil")
    run = subprocess.run(
        [str(anvil), "sync"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "now serves version 2.0.0" in run.stdout
    wait_for(serves(frozen, "2.0.0"), timeout=30, message="the frozen process to load the sync")
    assert frozen.prompt("welcome.message", name="Ada") == "v2 Ada"
    assert frozen_spy.calls == []
    status = frozen.status()
    assert status["mode"] == "frozen"
    assert status["source"] == "disk"


def test_two_sets_on_seaweedfs_are_served_together_and_updated_one_at_a_time(
    seaweed_bucket: str, tmp_path: Path, clients: list[Any]
) -> None:
    publisher = WirePublisher(open_store(seaweed_bucket))
    publisher.publish(v(1), version="1.0.0")
    publisher.publish(
        {"checkout.thanks": "Thanks {{ name }}!"},
        version="1.0.0",
        prompt_set_id=OTHER_SET_ID,
        name="Checkout helper",
    )
    spy = SpyStore(open_store(seaweed_bucket))
    client = AnvilClient(
        **publisher.client_settings(tmp_path / "cache", store=spy), poll_interval=INTERVAL
    )
    clients.extend([client, spy, publisher.store])
    both = "Support bot@1.0.0, Checkout helper@1.0.0"
    wait_for(serves(client, both), timeout=30, message="the first poll")
    assert len(spy.bundle_gets()) == 2
    published = publisher.publish(
        {"checkout.thanks": "Merci {{ name }}!"},
        version="1.1.0",
        prompt_set_id=OTHER_SET_ID,
        name="Checkout helper",
    )
    wait_for(serves(client, "Support bot@1.0.0, Checkout helper@1.1.0"), timeout=30)
    assert [c.key for c in spy.bundle_gets()[2:]] == [published.release["object"]["path"]]
    assert client.prompt("checkout.thanks", name="Ada") == "Merci Ada!"
    assert client.prompt("welcome.message", name="Ada") == "v1 Ada"
    assert [r["version"] for r in client.status()["releases"]] == ["1.0.0", "1.1.0"]
