"""The hint stream (issue 14 §3): a Server-Sent Events stream that only says "poll now"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from anvil_client import AnvilClient, ClientConfig
from anvil_client._hints import parse_hint
from anvil_client._timing import HINT_MIN_SPACING
from anvil_client.errors import ConfigError
from tests.anvil_client.fake_forge import FakeForge
from tests.anvil_client.spy_stores import SpyStore, wait_for
from tests.anvil_client.wire_publisher import WirePublisher

MakeClient = Callable[..., AnvilClient]


def v(n: int) -> dict[str, str]:
    return {"welcome.message": f"v{n} {{{{ name }}}}"}


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    forge = FakeForge()
    yield forge
    forge.close()


def test_a_hint_makes_the_leader_poll_at_once(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    # An hour between polls: only the hint can bring 2.0.0 within the test.
    client = make_client(start=True, poll_interval=3600, forge_url=forge.url, hints=True)
    wait_for(lambda: client.status()["version"] == "1.0.0")
    wait_for(lambda: forge.open_streams == 1, message="the hint stream")
    wait_for(lambda: client.status()["hints"] == "connected")
    request = forge.hint_requests[0]
    parts = urlsplit(request["path"])
    assert parts.path == "/forge/api/v1/live/hints"
    assert parse_qs(parts.query) == {
        "project_id": [publisher.project_id],
        "channel": [publisher.channel],
    }
    assert request["headers"]["Authorization"] == f"Bearer {publisher.token}"
    assert request["headers"]["Accept"] == "text/event-stream"
    publisher.publish(v(2), version="2.0.0")
    polls = len(store.pointer_gets())
    forge.hint(publisher.channel, 2)
    wait_for(lambda: client.status()["version"] == "2.0.0", message="the hinted poll")
    assert len(store.pointer_gets()) == polls + 1
    assert client.prompt("welcome.message", name="Ada") == "v2 Ada"


def test_hints_for_what_is_applied_or_other_channels_are_ignored(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(v(1), version="1.0.0")
    publisher.publish(v(2), version="2.0.0")
    client = make_client(forge_url=forge.url, hints=True)
    client.sync()
    client._on_hint(1)
    client._on_hint(2)
    assert client._hint_poll_at is None
    client._on_hint(3)
    assert client._hint_poll_at is not None


def test_hints_cause_at_most_one_poll_per_second(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(forge_url=forge.url, hints=True)
    client.sync()
    now = [100.0]
    client._clock = lambda: now[0]
    client._last_hint_poll = 99.9  # a hinted poll just happened
    client._on_hint(50)
    assert client._hint_poll_at is not None
    assert client._hint_poll_at >= 99.9 + HINT_MIN_SPACING
    first = client._hint_poll_at
    client._on_hint(51)  # a second hint before the poll changes nothing
    assert client._hint_poll_at == first


def test_the_delay_after_a_hint_is_random_and_small(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(forge_url=forge.url, hints=True)
    client.sync()
    now = [100.0]
    client._clock = lambda: now[0]
    client._last_hint_poll = 0.0  # long ago
    delays = set()
    for _ in range(20):
        client._hint_poll_at = None
        client._on_hint(9)
        assert client._hint_poll_at is not None
        delays.add(client._hint_poll_at - 100.0)
    assert all(0.0 <= d <= 0.25 for d in delays)
    assert len(delays) > 1


def test_a_dropped_stream_is_reopened_and_polling_goes_on(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(start=True, poll_interval=0.05, forge_url=forge.url, hints=True)
    wait_for(lambda: forge.open_streams == 1, message="the hint stream")
    forge.drop_streams()
    polls = len(store.pointer_gets())
    wait_for(lambda: len(store.pointer_gets()) > polls + 2, message="polling without a stream")
    wait_for(lambda: len(forge.hint_requests) == 2, message="a reconnection")
    wait_for(lambda: forge.open_streams == 1)
    assert client.status()["last_error"] is None


def test_a_refused_stream_backs_off_and_never_affects_serving(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    forge.hint_answer = 404  # an old FORGE without the endpoint
    publisher.publish(v(1), version="1.0.0")
    client = make_client(start=True, poll_interval=0.05, forge_url=forge.url, hints=True)
    wait_for(lambda: forge.hint_requests, message="one attempt")
    wait_for(lambda: client._hints is not None and client._hints.failures >= 1)
    assert client._hints is not None and "404" in (client._hints.error or "")
    wait_for(lambda: client.status()["version"] == "1.0.0")
    assert client.prompt("welcome.message", name="Ada") == "v1 Ada"
    assert client.status()["hints"] != "connected"


def test_no_stream_by_default_nor_when_frozen(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(v(1), version="1.0.0")
    plain = make_client(start=True, poll_interval=0.05, forge_url=forge.url)
    wait_for(lambda: plain.status()["version"] == "1.0.0")
    assert plain._hints is None and plain.status()["hints"] == "off"
    plain.close()
    frozen = make_client(
        start=True, poll_interval=0.05, forge_url=forge.url, hints=True, mode="frozen"
    )
    wait_for(lambda: frozen.status()["leader"])
    wait_for(lambda: forge.heartbeats, message="a heartbeat")
    assert forge.hint_requests == []
    assert frozen.status()["hints"] == "off"


def test_only_the_leader_holds_the_stream(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(v(1), version="1.0.0")
    clients = [
        make_client(start=True, poll_interval=0.05, forge_url=forge.url, hints=True)
        for _ in range(3)
    ]
    wait_for(lambda: forge.open_streams == 1, message="one stream")
    wait_for(lambda: sum(c.status()["leader"] for c in clients) == 1)
    assert len(forge.hint_requests) == 1
    assert [c.status()["hints"] for c in clients].count("off") == 2


@pytest.mark.parametrize(
    ("event", "data", "expected"),
    [
        ("hint", '{"channel": "production", "sequence": 42}', 42),
        ("hint", '{"channel": "staging", "sequence": 42}', None),
        ("message", '{"channel": "production", "sequence": 42}', None),
        ("hint", '{"channel": "production", "sequence": "42"}', None),
        ("hint", '{"channel": "production", "sequence": true}', None),
        ("hint", '{"channel": "production", "sequence": 0}', None),
        ("hint", '{"channel": "production"}', None),
        ("hint", "not json", None),
        ("hint", "[1, 2]", None),
        ("hint", "[" * 100_000, None),
    ],
)
def test_only_well_formed_hints_for_the_channel_count(
    event: str, data: str, expected: int | None
) -> None:
    assert parse_hint(event, data, "production") == expected


def test_garbage_on_the_stream_is_survived(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client(start=True, poll_interval=0.05, forge_url=forge.url, hints=True)
    wait_for(lambda: forge.open_streams == 1)
    forge.hint("", 0, raw=b"event: hint\ndata: {nope\n\n" + b"x" * 10_000 + b"\n\n")
    wait_for(lambda: len(forge.hint_requests) >= 2, message="a new stream after a long line")
    wait_for(lambda: client.status()["version"] == "1.0.0")
    assert client.prompt("welcome.message", name="Ada") == "v1 Ada"


def test_hints_config() -> None:
    key = "ed25519:uhIT/MMJEKl24xuQ440NefwCbt8ZIJmSkGXOsN/iI/k="
    base = {"store": "file:///tmp/s", "project_id": "p1", "trusted_keys": (key,)}
    assert ClientConfig(**base).hints is False  # type: ignore[arg-type]
    assert ClientConfig(**base).usage is True  # type: ignore[arg-type]
    env = {"ANVIL_HINTS": "true", "ANVIL_USAGE": "off"}
    config = ClientConfig.from_env(environ=env, **base)
    assert (config.hints, config.usage) == (True, False)
    with pytest.raises(ConfigError, match="ANVIL_HINTS must be true or false"):
        ClientConfig.from_env(environ={"ANVIL_HINTS": "maybe"}, **base)
    with pytest.raises(ConfigError, match="hints must be true or false"):
        ClientConfig(**base, hints="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [("5000", 0.001, 5.0), ("30", 1.0, 30.0), ("0", 1.0, 1.0), ("99999", 1.0, 600.0),
     ("soon", 1.0, None), (None, 1.0, None), ("-5", 1.0, None), ("1" * 40, 1.0, None)],
)  # fmt: skip
def test_retry_hints_from_the_forge_are_bounded(
    text: str | None, scale: float, expected: float | None
) -> None:
    from anvil_client._hints import _seconds

    assert _seconds(text, scale=scale) == expected
