"""The background poller: ACCEPTING and FROZEN, ETags, backoff, outages, leadership, heartbeats."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient
from anvil_client._cache import DiskCache
from anvil_client._timing import client_version
from anvil_client.errors import NotFound
from anvil_client.stores import FileStore
from anvil_client.wire import HEARTBEAT_MAX_SIZE
from tests.anvil_client.spy_stores import SpyStore, wait_for
from tests.anvil_client.wire_publisher import WirePublisher

MakeClient = Callable[..., AnvilClient]


def v(n: int) -> dict[str, str]:
    return {"welcome.message": f"v{n} {{{{ name }}}}"}


def serves(client: AnvilClient, version: str) -> Callable[[], bool]:
    return lambda: client.status()["version"] == version


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- ACCEPTING ------------------------------------------------------------------------------


def test_accepting_picks_up_a_publish_with_its_next_poll(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(start=True, poll_interval=0.1)
    wait_for(serves(client, "1.0.0"), message="the first poll")
    publisher.publish(v(2), version="2.0.0")
    published_at = len(store.pointer_gets())
    wait_for(serves(client, "2.0.0"), message="the publish to be picked up")
    assert client.prompt("welcome.message", name="Ada") == "v2 Ada"
    after = store.pointer_gets()[published_at:]
    # At most a poll already in flight saw the old pointer; the next one applied the new one.
    assert [c.outcome for c in after[:2]] in (["200"], ["200", "304"], ["304", "200"])


def test_an_idle_poll_is_one_conditional_request_and_no_bundle(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(start=True, poll_interval=0.05)
    wait_for(serves(client, "1.0.0"))
    applied = len(store.pointer_gets())
    bundles, read = len(store.bundle_gets()), store.bytes_read
    wait_for(lambda: len(store.pointer_gets()) >= applied + 3, message="three idle polls")
    idle = store.pointer_gets()[applied:]
    assert all(c.outcome == "304" and c.if_none_match for c in idle)
    assert len(store.bundle_gets()) == bundles
    assert store.bytes_read == read
    assert client.status()["last_error"] is None


def test_the_etag_is_remembered_only_after_a_successful_poll(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client()
    client.sync()
    published = publisher.publish(v(2), version="2.0.0")
    path = published.release["object"]["path"]
    data = publisher.store.get(path).data
    publisher.store.delete(path)
    with pytest.raises(NotFound):
        client._poll(conditional=True)
    first = store.pointer_gets()[-1]
    assert first.outcome == "200"
    with pytest.raises(NotFound):
        client._poll(conditional=True)
    # Not a 304: the pointer that failed to apply was not remembered.
    assert store.pointer_gets()[-1].if_none_match == first.if_none_match
    assert store.pointer_gets()[-1].outcome == "200"
    publisher.store.put(path, data)
    client._poll(conditional=True)
    assert client.status()["version"] == "2.0.0"
    client._poll(conditional=True)
    assert store.pointer_gets()[-1].outcome == "304"


def test_polls_are_spaced_by_the_interval_with_jitter(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(poll_interval=30)
    clock = FakeClock()
    client._clock = clock
    client._next_poll = clock.now
    delays = []
    for _ in range(30):
        client._tick()
        delays.append(client._next_poll - clock.now)
        clock.now = client._next_poll
    assert all(27.0 <= d <= 33.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 5  # jittered, not lock-step


# --- outages and backoff ----------------------------------------------------------------------


def test_a_long_outage_backs_off_exponentially_and_never_breaks_prompt(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(poll_interval=30)
    client.sync()
    clock = FakeClock()
    client._clock = clock
    client._next_poll = clock.now
    store.down = True
    start, delays = clock.now, []
    while clock.now - start < 30 * 60:  # half an hour of simulated outage
        client._tick()
        delays.append(client._next_poll - clock.now)
        clock.now = client._next_poll
        assert client.prompt("welcome.message", name="Ada") == "v1 Ada"
        assert "down" in (client.status()["last_error"] or "")
    # 30·2ⁿ·[0.5, 1), capped at 300 s: far fewer requests than one per 30 s.
    assert delays[0] >= 30 and max(delays) <= 300
    assert sum(1 for d in delays if d > 150) > len(delays) // 2
    assert len(delays) < 30 * 60 / 30 / 3
    store.down = False
    client._tick()
    assert client.status()["last_error"] is None
    assert 27 <= client._next_poll - clock.now <= 33  # back to the normal interval


def test_an_outage_in_real_time_never_makes_prompt_fail(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(start=True, poll_interval=0.02)
    wait_for(serves(client, "1.0.0"))
    store.down = True
    failed_before = len([c for c in store.calls if c.outcome == "StoreUnavailable"])
    while len([c for c in store.calls if c.outcome == "StoreUnavailable"]) < failed_before + 4:
        assert client.prompt("welcome.message", name="Ada") == "v1 Ada"
    assert client.status()["last_error"] is not None
    store.down = False
    publisher.publish(v(2), version="2.0.0")
    wait_for(serves(client, "2.0.0"), timeout=15, message="recovery after the outage")
    assert client.status()["last_error"] is None


# --- FROZEN and the mode override ---------------------------------------------------------------


def test_frozen_never_reads_the_store_and_serves_what_sync_writes(
    publisher: WirePublisher, make_client: MakeClient, tmp_path: Path
) -> None:
    publisher.publish(v(1), version="1.0.0")
    frozen_store = SpyStore(FileStore(tmp_path / "store"))
    frozen = make_client(store=frozen_store, mode="frozen", start=True, poll_interval=0.05)
    watcher_store = SpyStore(FileStore(tmp_path / "store"))
    watcher = make_client(
        store=watcher_store, cache_dir=tmp_path / "w", start=True, poll_interval=0.05
    )
    wait_for(serves(watcher, "1.0.0"))
    publisher.publish(v(2), version="2.0.0")
    wait_for(serves(watcher, "2.0.0"))
    wait_for(lambda: len(watcher_store.pointer_gets()) >= 6)  # time passes: several intervals
    assert frozen_store.calls == []
    assert frozen.status()["version"] is None
    # `anvil sync` in another process does the fetch; the frozen process picks it up from disk.
    syncer = make_client(mode="frozen")
    syncer.sync()
    wait_for(serves(frozen, "2.0.0"), message="the frozen client to load the synced cache")
    assert frozen.prompt("welcome.message", name="Ada") == "v2 Ada"
    assert frozen_store.calls == []


def test_a_running_process_honours_anvil_mode(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore, tmp_path: Path
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(start=True, poll_interval=0.05)
    wait_for(serves(client, "1.0.0"))
    disk = DiskCache(client.config.cache_dir, publisher.project_id, "production")
    disk.write_mode("frozen")
    wait_for(lambda: client.mode == "frozen", message="the override to be seen")
    frozen_calls = len(store.calls)
    watcher_store = SpyStore(FileStore(tmp_path / "store"))
    watcher = make_client(
        store=watcher_store, cache_dir=tmp_path / "w", start=True, poll_interval=0.05
    )
    wait_for(lambda: len(watcher_store.pointer_gets()) >= 8)  # several intervals pass
    assert len(store.calls) == frozen_calls
    assert client.status()["mode_source"] == "override"
    disk.clear_mode()
    wait_for(lambda: len(store.calls) > frozen_calls, message="polling to resume")
    assert client.mode == "accepting"
    watcher.close()


# --- one poller per cache dir -------------------------------------------------------------------


def test_one_client_per_cache_dir_polls_and_another_takes_over(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    publisher.publish(v(1), version="1.0.0")
    clients = [make_client(start=True, poll_interval=0.05) for _ in range(3)]
    wait_for(lambda: sum(c.status()["leader"] for c in clients) == 1, message="a leader")
    leader = next(c for c in clients if c.status()["leader"])
    for c in clients:
        wait_for(serves(c, "1.0.0"))
    leader.close()
    rest = [c for c in clients if c is not leader]
    wait_for(lambda: sum(c.status()["leader"] for c in rest) == 1, message="a new leader")
    publisher.publish(v(2), version="2.0.0")
    for c in rest:
        wait_for(serves(c, "2.0.0"))


# --- heartbeats -----------------------------------------------------------------------------------


@dataclass
class Forge:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    answer: int = 204


@pytest.fixture
def forge() -> Iterator[Forge]:
    """A stand-in FORGE on 127.0.0.1 that records heartbeats and answers ``forge.answer``."""
    box: dict[str, Forge] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            box["forge"].requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": body}
            )
            self.send_response(box["forge"].answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box["forge"] = Forge(url=f"http://127.0.0.1:{server.server_port}/forge")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box["forge"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def versions(raw: bytes | str) -> list[str]:
    return [entry["version"] for entry in json.loads(raw)["releases"]]


def test_heartbeats_report_what_is_served(
    publisher: WirePublisher,
    make_client: MakeClient,
    forge: Forge,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="anvil_client")
    publisher.publish(v(1), version="1.0.0")
    client = make_client(start=True, poll_interval=0.05, forge_url=forge.url)
    wait_for(lambda: any(versions(r["body"]) == ["1.0.0"] for r in forge.requests))
    request = forge.requests[-1]
    assert request["path"] == "/forge/api/v1/live/heartbeat"
    assert request["headers"]["Authorization"] == f"Bearer {publisher.token}"
    assert request["headers"]["Content-Type"] == "application/json"
    body = json.loads(request["body"])
    assert set(body) == {
        "instance_id", "hostname", "project_id", "channel", "mode", "sequence", "releases",
        "last_error", "client_version",
    }  # fmt: skip
    assert body["instance_id"] == client.instance_id
    assert body["project_id"] == publisher.project_id
    assert body["mode"] == "accepting"
    assert body["sequence"] == 1
    assert body["releases"] == [
        {
            "prompt_set_id": publisher.prompt_set_id,
            "version": "1.0.0",
            "content_sha256": client.status()["content_sha256"],
        }
    ]
    assert body["last_error"] is None
    assert body["client_version"] == client_version()
    assert request["headers"]["User-Agent"] == f"anvil-client/{client_version()}"
    assert len(request["body"]) <= HEARTBEAT_MAX_SIZE
    publisher.publish(v(2), version="2.0.0")
    wait_for(lambda: versions(forge.requests[-1]["body"]) == ["2.0.0"])
    assert len(forge.requests) < 10  # after applies, not after every idle poll
    assert client.status()["heartbeat_error"] is None
    assert client.status()["last_heartbeat"] is not None
    assert publisher.token not in caplog.text


def test_heartbeats_report_errors_and_their_failure_changes_nothing(
    publisher: WirePublisher, make_client: MakeClient, forge: Forge, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    forge.answer = 401
    client = make_client(start=True, poll_interval=0.05, forge_url=forge.url)
    wait_for(serves(client, "1.0.0"))
    wait_for(lambda: client.status()["heartbeat_error"] is not None)
    assert "401" in (client.status()["heartbeat_error"] or "")
    assert client.status()["last_error"] is None
    store.down = True
    wait_for(lambda: any(json.loads(r["body"])["last_error"] for r in forge.requests))
    assert client.prompt("welcome.message", name="Ada") == "v1 Ada"


def test_frozen_instances_send_heartbeats_too(
    publisher: WirePublisher, make_client: MakeClient, forge: Forge, store: SpyStore
) -> None:
    client = make_client(start=True, mode="frozen", forge_url=forge.url, poll_interval=0.05)
    wait_for(lambda: forge.requests, message="a heartbeat at start")
    body = json.loads(forge.requests[0]["body"])
    assert body["mode"] == "frozen" and body["releases"] == [] and body["sequence"] is None
    assert store.calls == []
    client.close()


def test_an_unreachable_forge_is_reported_not_raised(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(forge_url="http://127.0.0.1:9")  # discard port: connection refused
    client.sync()
    client._send_heartbeat()
    assert "failed" in (client.status()["heartbeat_error"] or "")
    assert client.prompt("welcome.message", name="Ada") == "v1 Ada"
