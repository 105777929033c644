"""Cheap idle polls (issue 14 §4): nothing written, nothing opened in the cache, and what the
sibling processes of a cache dir still see."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anvil_client import AnvilClient
from tests.anvil_client.spy_stores import SpyStore
from tests.anvil_client.wire_publisher import WirePublisher

MakeClient = Callable[..., AnvilClient]
V1 = {"welcome.message": "v1 {{ name }}"}

_opened: list[str] | None = None  # paths opened while a test records, else None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _opened is not None and event == "open" and args and isinstance(args[0], str | Path):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only while asked to


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def idle_leader(make_client: MakeClient, publisher: WirePublisher) -> tuple[AnvilClient, Clock]:
    publisher.publish(V1, version="1.0.0")
    client = make_client(poll_interval=1.0)
    clock = Clock()
    client._clock = clock
    client._next_poll = client._next_disk_check = client._next_full_compare = clock.now
    client._tick()  # leads, syncs, shares
    assert client.status()["leader"] and client.status()["version"] == "1.0.0"
    return client, clock


def tree(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }


def test_idle_polls_write_nothing_and_open_nothing_in_the_cache(
    make_client: MakeClient, publisher: WirePublisher, store: SpyStore
) -> None:
    global _opened
    client, clock = idle_leader(make_client, publisher)
    cache_dir = Path(client.status()["cache_dir"])
    before = tree(cache_dir)
    polls = len(store.pointer_gets())
    _opened = []
    try:
        for _ in range(3):  # within the share period and the full-compare period
            clock.now += 1.1
            client._tick()
        opened = [p for p in _opened if p.startswith(str(cache_dir))]
    finally:
        _opened = None
    assert [c.outcome for c in store.pointer_gets()[polls:]] == ["304"] * 3
    assert opened == []
    assert tree(cache_dir) == before


def test_an_idle_leader_shares_its_times_every_few_intervals(
    make_client: MakeClient, publisher: WirePublisher
) -> None:
    client, clock = idle_leader(make_client, publisher)
    state = Path(client.status()["cache_dir"], "state.json")
    before = state.stat().st_mtime_ns, state.stat().st_ino
    clock.now += client._share_period + 0.1
    client._tick()
    after = state.stat().st_mtime_ns, state.stat().st_ino
    assert after != before
    # ...and its own write does not make it re-read the cache at the next check.
    assert client._disk_sig == client._cache.signature()


def test_siblings_see_errors_at_once_and_fresh_times_within_the_share_period(
    make_client: MakeClient, publisher: WirePublisher, store: SpyStore
) -> None:
    leader, clock = idle_leader(make_client, publisher)
    sibling = make_client(poll_interval=1.0)
    assert not sibling._cache.try_lead()
    store.down = True
    clock.now += 1.1
    leader._tick()
    sibling._check_disk()
    assert "down" in (sibling.status()["last_error"] or "")
    assert sibling.status()["leader"] is False
    store.down = False
    clock.now += 100.0
    leader._tick()
    sibling._check_disk()
    assert sibling.status()["last_error"] is None
    assert sibling.status()["last_sync"] == leader.status()["last_sync"]
    assert sibling.status()["stale"] is False


def test_a_new_leader_keeps_the_etag_of_idle_polls(
    make_client: MakeClient, publisher: WirePublisher, store: SpyStore
) -> None:
    leader, clock = idle_leader(make_client, publisher)
    for _ in range(3):
        clock.now += 1.1
        leader._tick()
    follower = make_client(poll_interval=1.0)
    leader.close()
    assert follower._cache.try_lead()
    assert follower._poll(conditional=True) is False
    assert store.pointer_gets()[-1].outcome == "304"


def test_a_process_waiting_to_lead_keeps_one_descriptor(
    make_client: MakeClient, publisher: WirePublisher
) -> None:
    global _opened
    leader, _ = idle_leader(make_client, publisher)
    waiting = make_client(poll_interval=1.0)
    assert not waiting._cache.try_lead()
    _opened = []
    try:
        for _ in range(5):
            assert not waiting._cache.try_lead()
        opened = list(_opened)
    finally:
        _opened = None
    assert opened == []
    leader.close()
    assert waiting._cache.try_lead()
