"""A hostile HTTP store and FORGE: a local server that misbehaves on purpose.

The publisher writes a real channel into a directory; the server serves it with ETags and
304s like a CDN, unless a test tells it how to misbehave for the pointer or the bundle.
Also DESIGN §7's ordering rules, seen from the wire.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient
from anvil_client._heartbeat import HeartbeatSender
from anvil_client.errors import AnvilError, SizeLimitError, StoreError, StoreUnavailable
from anvil_client.stores import FileStore, HttpStore
from anvil_client.stores._file import etag_of
from tests.anvil_client.hostile_kit import (
    UNEXPECTED,
    V1,
    V2,
    check_sentence,
    no_poller_crash,
    refused,
)
from tests.anvil_client.spy_stores import wait_for
from tests.anvil_client.wire_publisher import WirePublisher

Behaviour = Callable[["Handler", str], None]


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.answers: list[tuple[str, int]] = []
        self.pointer: Behaviour | None = None
        self.bundle: Behaviour | None = None
        self.etags = True
        self.release = threading.Event()  # frees handlers that stall

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is fine
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/store"

    def pointer_requests(self) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, h in self.requests if "/channels/" in p]

    def bundle_requests(self) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, h in self.requests if "/bundles/" in p]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers)))
        key = self.path.removeprefix("/store/")
        behaviour = self.server.pointer if "/channels/" in key else self.server.bundle
        if behaviour is not None:
            behaviour(self, key)
        else:
            self.serve_file(key)

    def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        with self.server.lock:  # recorded before the client can see the answer
            self.server.answers.append((self.path, status))
        self.send_response(status)
        if "Content_Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def serve_file(self, key: str) -> None:
        path = self.server.root / key
        if not path.is_file():
            self.reply(404, b"no such key")
            return
        data = path.read_bytes()
        etag = etag_of(data)
        if self.server.etags and self.headers.get("If-None-Match") == etag:
            with self.server.lock:
                self.server.answers.append((self.path, 304))
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        headers = {"ETag": etag} if self.server.etags else {}
        self.reply(200, data, Content_Type="application/json", **headers)

    def drip(self, head: bytes, body: bytes = b"", interval: float = 0.05) -> None:
        """Send ``head`` and ``body`` one byte at a time, until released."""
        try:
            for byte in head + body:
                if self.server.release.wait(interval):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            self.server.release.wait(30)
        except OSError:
            return

    def reset(self) -> None:
        """Close with an RST: SO_LINGER with a zero timeout."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("hostile-http"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


@pytest.fixture
def channel(server: Server, tmp_path: Path) -> Iterator[WirePublisher]:
    """A fresh channel in the served directory; the server behaves until told otherwise."""
    server.pointer = server.bundle = None
    server.etags = True
    server.release.clear()
    with server.lock:
        server.requests.clear()
        server.answers.clear()
    publisher = WirePublisher(FileStore(server.root), channel=f"c{abs(hash(tmp_path)) % 10**9}")
    yield publisher
    server.pointer = server.bundle = None
    server.release.set()


@pytest.fixture
def http_client(
    server: Server, channel: WirePublisher, tmp_path: Path
) -> Iterator[Callable[..., AnvilClient]]:
    clients: list[AnvilClient] = []
    stores: list[HttpStore] = []

    def make(timeout: float = 5.0, **overrides: Any) -> AnvilClient:
        store = HttpStore(server.url, timeout=timeout, connect_timeout=2.0)
        stores.append(store)
        settings = channel.client_settings(tmp_path / "cache", store=store)
        settings.setdefault("start", False)
        settings.update(overrides)
        client = AnvilClient(**settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for store in stores:
        store.close()


def serving_v1(
    channel: WirePublisher, http_client: Callable[..., AnvilClient], **kw: Any
) -> AnvilClient:
    channel.publish(V1, version="1.0.0")
    client = http_client(**kw)
    client.sync()
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    return client


def run_within(action: Callable[[], Any], seconds: float, unblock: Callable[[], None]) -> Any:
    """Run ``action`` in a thread; fail if it has not finished after ``seconds``."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(("ok", action()))
        except BaseException as e:  # handed to the test thread
            outcome.append(("error", e))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        unblock()
        thread.join(10)
        pytest.fail(f"still running after {seconds} s")
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


# --- the pointer GET ----------------------------------------------------------------------


def test_a_declared_huge_pointer_is_refused_before_reading(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client)

    def huge(handler: Handler, key: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**12))
        handler.end_headers()
        handler.close_connection = True

    server.pointer = huge
    refused(client, SizeLimitError, "65536-byte limit")


@pytest.mark.parametrize("framing", ["close", "chunked"])
def test_an_endless_pointer_without_length_is_cut_at_64_kib(
    server: Server,
    channel: WirePublisher,
    http_client: Callable[..., AnvilClient],
    framing: str,
) -> None:
    client = serving_v1(channel, http_client)

    def endless(handler: Handler, key: str) -> None:
        handler.send_response(200)
        if framing == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        block = b"{" * 16384
        try:
            for _ in range(64 * 1024):  # 1 GiB at most
                if server.release.is_set():
                    return
                if framing == "chunked":
                    handler.wfile.write(b"%x\r\n%b\r\n" % (len(block), block))
                else:
                    handler.wfile.write(block)
        except OSError:
            return

    server.pointer = endless
    refused(client, SizeLimitError, "65536-byte limit")


def test_a_pointer_dripped_byte_by_byte_times_out(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client, timeout=1.0)
    data = (server.root / channel.pointer_key).read_bytes()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data)
    server.pointer = lambda handler, key: handler.drip(head, data)
    run_within(lambda: refused(client, StoreUnavailable, "timed out"), 20, server.release.set)


@pytest.mark.parametrize("where", ["status-line", "headers", "error-page"])
def test_a_response_head_dripped_byte_by_byte_times_out(
    server: Server,
    channel: WirePublisher,
    http_client: Callable[..., AnvilClient],
    where: str,
) -> None:
    client = serving_v1(channel, http_client, timeout=1.0)
    heads = {
        "status-line": b"HTTP/1.1 200 " + b"O" * 5000,
        "headers": b"HTTP/1.1 200 OK\r\n" + b"X-Slow: a\r\n" * 90,
        "error-page": b"HTTP/1.1 404 Not Found\r\nContent-Length: 60000\r\n\r\n" + b"x" * 60000,
    }
    # Each byte comes well within the 1 s read timeout: only an overall deadline stops it.
    server.pointer = lambda handler, key: handler.drip(heads[where], interval=0.1)
    error = run_within(
        lambda: refused(client, StoreUnavailable, "timed out"), 20, server.release.set
    )
    assert "1 s" in str(error)


def test_a_redirect_to_another_host_is_not_followed(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client)
    port = server.server_address[1]
    server.pointer = lambda h, k: h.reply(302, Location=f"http://localhost:{port}/store/{k}")
    refused(client, StoreError, "redirected to another host")
    server.pointer = lambda h, k: h.reply(301, Location="file:///etc/passwd")
    refused(client, StoreError, "redirected to another host or scheme")
    server.pointer = lambda h, k: h.reply(307, Location=h.path)
    refused(client, StoreError, "redirected too many times")


def test_a_304_to_an_unconditional_get_is_not_success(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    channel.publish(V1, version="1.0.0")
    client = http_client()
    server.pointer = lambda h, k: h.reply(304)
    refused(client, StoreError, "304 Not Modified to an unconditional request", version=None)
    assert client.status()["last_sync"] is None
    # And with something served, a 304 to sync()'s unconditional GET confirms nothing.
    server.pointer = None
    client.sync()
    server.pointer = lambda h, k: h.reply(304)
    refused(client, StoreError, "unconditional")
    assert "If-None-Match" not in server.pointer_requests()[-1]


def test_a_304_to_a_conditional_get_without_an_etag_keeps_ours(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client)
    sent = client._etag
    server.pointer = lambda h, k: h.reply(304)  # no ETag header in the answer
    assert client._poll(conditional=True) is False
    assert server.pointer_requests()[-1]["If-None-Match"] == sent
    assert client._etag == sent
    assert client.status()["last_error"] is None


@pytest.mark.parametrize(
    "etag",
    ['"a\x01b"', '"' + "e" * 5000 + '"', '"tab\there"', "\x7f"],
    ids=["control", "long", "tab", "del"],
)
def test_an_unusable_etag_is_not_sent_back(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient], etag: str
) -> None:
    channel.publish(V1, version="1.0.0")
    data = (server.root / channel.pointer_key).read_bytes()

    def weird(handler: Handler, key: str) -> None:
        handler.reply(200, data, ETag=etag)

    server.pointer = weird
    client = http_client()
    client.sync()
    for _ in range(2):
        assert client._poll(conditional=True) is False
    assert all("If-None-Match" not in h for h in server.pointer_requests())
    assert client.status()["last_error"] is None
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"


@pytest.mark.parametrize(
    "etag", ['W/"weak"', '"a b"', "unquoted-é"], ids=["weak", "space", "latin1"]
)
def test_odd_but_sendable_etags_are_used(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient], etag: str
) -> None:
    channel.publish(V1, version="1.0.0")
    data = (server.root / channel.pointer_key).read_bytes()

    def odd(handler: Handler, key: str) -> None:
        if handler.headers.get("If-None-Match") == etag:
            handler.reply(304, ETag=etag)
        else:
            handler.reply(200, data, ETag=etag)

    server.pointer = odd
    client = http_client()
    client.sync()
    assert client._poll(conditional=True) is False
    assert server.pointer_requests()[-1].get("If-None-Match") == etag
    assert ("/store/" + channel.pointer_key, 304) in server.answers


def test_content_encoding_gzip_is_refused(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client)
    import gzip

    data = gzip.compress((server.root / channel.pointer_key).read_bytes())
    server.pointer = lambda h, k: h.reply(200, data, Content_Encoding="gzip")
    refused(client, StoreError, "Content-Encoding 'gzip'")


@pytest.mark.parametrize(
    ("status", "error", "match"),
    [
        (500, StoreUnavailable, "HTTP 500"),
        (503, StoreUnavailable, "HTTP 503"),
        (429, StoreUnavailable, "HTTP 429"),
        (403, StoreError, "HTTP 403"),
        (206, StoreError, "HTTP 206"),
        (204, StoreError, "HTTP 204"),
    ],
)
def test_error_statuses_are_store_errors(
    server: Server,
    channel: WirePublisher,
    http_client: Callable[..., AnvilClient],
    status: int,
    error: type[AnvilError],
    match: str,
) -> None:
    client = serving_v1(channel, http_client)
    server.pointer = lambda h, k: h.reply(status, b"<html>oops</html>" if status != 204 else b"")
    refused(client, error, match)


@pytest.mark.parametrize(
    "answer",
    [
        lambda h, k: h.reset(),
        lambda h, k: (h.wfile.write(b"HTTP/1.1 abc nonsense\r\n\r\n"), h.reset()),
        lambda h, k: (h.wfile.write(b"garbage\r\n\r\n"), h.reset()),
        lambda h, k: (
            h.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{"partial'),
            h.reset(),
        ),
        lambda h, k: (
            h.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            h.reset(),
        ),
        lambda h, k: (
            h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
            h.reset(),
        ),
    ],
    ids=["reset", "bad-status", "not-http", "truncated", "bad-chunk", "negative-length"],
)
def test_broken_connections_are_store_unavailable(
    server: Server,
    channel: WirePublisher,
    http_client: Callable[..., AnvilClient],
    answer: Behaviour,
) -> None:
    client = serving_v1(channel, http_client)
    server.pointer = answer
    with pytest.raises(AnvilError) as caught:
        client.sync()
    assert isinstance(caught.value, StoreError | SizeLimitError)
    check_sentence(str(caught.value))
    assert client.status()["last_error"] == str(caught.value)
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    server.pointer = None
    channel.publish(V2, version="2.0.0")
    client.sync()  # the store's connection pool recovers
    assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."


# --- the bundle GET -----------------------------------------------------------------------


def test_a_bundle_dripped_slowly_times_out_and_v1_stays(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client, timeout=1.0)
    channel.publish(V2, version="2.0.0")

    def slow(handler: Handler, key: str) -> None:
        data = (server.root / key).read_bytes()
        handler.drip(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data), data, 0.02)

    server.bundle = slow
    run_within(lambda: refused(client, StoreUnavailable, "timed out"), 20, server.release.set)


def test_a_bundle_body_longer_than_signed_is_cut_at_the_signed_size(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client)
    published = channel.publish(V2, version="2.0.0")
    size = published.release["object"]["size"]

    def longer(handler: Handler, key: str) -> None:
        data = (server.root / key).read_bytes()
        handler.reply(200, data + b" " * 10_000_000)

    server.bundle = longer
    refused(client, SizeLimitError, f"{size}-byte limit")


# --- DESIGN §7: what a poll remembers -----------------------------------------------------


def test_a_failed_bundle_get_never_turns_into_a_permanent_304(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client)
    v1_etag = client._etag
    channel.publish(V2, version="2.0.0")
    v2_etag = etag_of((server.root / channel.pointer_key).read_bytes())
    server.bundle = lambda h, k: h.reply(500, b"down")
    with pytest.raises(StoreUnavailable):
        client._poll(conditional=True)
    assert client.status()["version"] == "1.0.0"
    state = json.loads(Path(client.status()["cache_dir"], "state.json").read_bytes())
    assert state["etag"] == v1_etag != v2_etag  # the failed poll's ETag was not kept
    server.bundle = None
    assert client._poll(conditional=True) is True
    assert server.pointer_requests()[-1]["If-None-Match"] == v1_etag
    assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
    assert client._poll(conditional=True) is False  # now the new ETag gives a 304
    assert server.pointer_requests()[-1]["If-None-Match"] == v2_etag


def test_a_restart_after_a_failed_poll_does_not_send_the_failed_etag(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    first = serving_v1(channel, http_client)
    channel.publish(V2, version="2.0.0")
    server.bundle = lambda h, k: h.reply(503, b"down")
    with pytest.raises(StoreUnavailable):
        first._poll(conditional=True)
    first.close()
    server.bundle = None
    restarted = http_client()
    assert restarted._poll(conditional=True) is True
    assert restarted.prompt("welcome.message", name="Ada") == "Hello Ada, v2."


def test_a_304_updates_last_check_but_changes_nothing_else(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    client = serving_v1(channel, http_client)
    long_ago = datetime.now(UTC) - timedelta(days=1)
    client._last_check = client._last_sync = long_ago
    snapshot = client._snapshot
    state_file = Path(client.status()["cache_dir"], "state.json")
    before = state_file.stat()
    assert client._poll(conditional=True) is False
    assert server.answers[-1] == ("/store/" + channel.pointer_key, 304)
    status = client.status()
    assert status["last_check"] is not None and status["last_check"] > long_ago.isoformat()
    assert status["stale"] is False
    assert status["last_error"] is None
    assert client._snapshot is snapshot
    # An idle poll writes nothing: the sync just shared its times with the other processes.
    after = state_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Once the share period has passed, the next idle poll shares its time.
    client._next_share = client._clock()
    assert client._poll(conditional=True) is False
    state = json.loads(state_file.read_bytes())
    assert state["last_check"] == client.status()["last_check"]


def test_an_identical_pointer_without_etags_is_a_no_op(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient]
) -> None:
    server.etags = False
    client = serving_v1(channel, http_client)
    pointer_file = Path(client.status()["cache_dir"], "pointer.json")
    before = pointer_file.stat()
    snapshot = client._snapshot
    bundles = len(server.bundle_requests())
    for _ in range(3):
        assert client._poll(conditional=True) is False
    assert len(server.bundle_requests()) == bundles
    assert client._snapshot is snapshot
    after = pointer_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert client.status()["last_error"] is None


def test_the_poller_thread_survives_every_attack_in_turn(
    server: Server,
    channel: WirePublisher,
    http_client: Callable[..., AnvilClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="anvil_client")
    channel.publish(V1, version="1.0.0")
    client = http_client(timeout=1.0, start=True, poll_interval=0.05)
    wait_for(lambda: client.status()["version"] == "1.0.0")
    attacks: list[Behaviour] = [
        lambda h, k: h.reply(200, b"\xef\xbb\xbf{}"),
        lambda h, k: h.reply(200, b"[" * 60000),
        lambda h, k: h.reply(500),
        lambda h, k: h.reset(),
        lambda h, k: h.reply(302, Location="http://example.com/"),
        lambda h, k: h.reply(200, b"x", Content_Encoding="br"),
    ]
    for attack in attacks:
        errors = client.status()["last_error"]
        server.pointer = attack
        wait_for(lambda: client.status()["last_error"] not in (None, errors))
        server.pointer = None
        wait_for(lambda: client.status()["last_error"] is None)
    assert client._thread is not None and client._thread.is_alive()
    no_poller_crash(caplog)
    assert UNEXPECTED not in caplog.text
    channel.publish(V2, version="2.0.0")
    wait_for(lambda: client.status()["version"] == "2.0.0")


# --- the heartbeat ------------------------------------------------------------------------


class Forge(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        forge = self

        class ForgeHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with forge.lock:
                    forge.posts += 1
                answer(self)

        super().__init__(("127.0.0.1", 0), ForgeHandler)
        self.lock = threading.Lock()
        self.posts = 0
        self.release = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def forge_with() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], Forge]]:
    made: list[tuple[Forge, threading.Thread]] = []

    def make(answer: Callable[[BaseHTTPRequestHandler], None]) -> Forge:
        forge = Forge(answer)
        thread = threading.Thread(target=forge.serve_forever, daemon=True)
        thread.start()
        made.append((forge, thread))
        return forge

    yield make
    for forge, thread in made:
        forge.release.set()
        forge.shutdown()
        forge.server_close()
        thread.join(timeout=10)


def _drip_forever(forge_ref: list[Forge]) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        try:
            handler.wfile.write(b"HTTP/1.1 204 ")
            while not forge_ref[0].release.wait(0.1):
                handler.wfile.write(b"x")
                handler.wfile.flush()
        except OSError:
            return

    return answer


@pytest.mark.parametrize("kind", ["drip", "silent", "500", "redirect", "garbage"])
def test_a_bad_forge_never_holds_up_polling_or_serving(
    server: Server,
    channel: WirePublisher,
    http_client: Callable[..., AnvilClient],
    forge_with: Callable[[Callable[[BaseHTTPRequestHandler], None]], Forge],
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="anvil_client")
    ref: list[Forge] = []
    answers: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {
        "drip": _drip_forever(ref),
        "silent": lambda h: ref[0].release.wait(30),
        "500": lambda h: (
            h.send_response(500),
            h.send_header("Content-Length", "0"),
            h.end_headers(),
        ),
        "garbage": lambda h: h.wfile.write(b"HTTP/1.1 abc " + b"x" * 60_000 + b"\r\n\r\n"),
        "redirect": lambda h: (
            h.send_response(302),
            h.send_header("Location", "http://example.com/steal"),
            h.send_header("Content-Length", "0"),
            h.end_headers(),
        ),
    }
    forge = forge_with(answers[kind])
    ref.append(forge)
    channel.publish(V1, version="1.0.0")
    client = http_client(start=False, poll_interval=0.05, forge_url=forge.url)
    assert client._heartbeat is not None
    client._heartbeat = HeartbeatSender(forge.url, channel.token, timeout=0.5)
    client._started = True
    client._start_thread()
    wait_for(lambda: client.status()["version"] == "1.0.0")
    wait_for(lambda: forge.posts >= 1)
    channel.publish(V2, version="2.0.0")  # an apply makes the next heartbeat due at once
    wait_for(lambda: client.status()["version"] == "2.0.0", timeout=15)
    wait_for(lambda: client.status()["heartbeat_error"] is not None, timeout=15)
    status = client.status()
    check_sentence(status["heartbeat_error"] or "")
    assert status["last_error"] is None
    if kind in ("drip", "silent"):
        assert "timed out after 0.5 s" in (status["heartbeat_error"] or "")
    assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
    assert channel.token not in caplog.text
    no_poller_crash(caplog)


@pytest.mark.parametrize("etag", ['"x"\n', '"x"\r\nX-Injected: 1', "\x00", "é" * 2000])
def test_a_broken_etag_in_the_state_file_does_not_fail_every_poll(
    server: Server, channel: WirePublisher, http_client: Callable[..., AnvilClient], etag: str
) -> None:
    first = serving_v1(channel, http_client)
    first.close()
    state_path = Path(first.status()["cache_dir"], "state.json")
    state = json.loads(state_path.read_bytes())
    assert state["etag_sequence"] == 1
    state["etag"] = etag
    state_path.write_text(json.dumps(state))
    restarted = http_client()
    assert restarted._poll(conditional=True) is False
    assert restarted.status()["last_error"] is None
    assert all(
        "X-Injected" not in h and h.get("If-None-Match") != etag for h in server.pointer_requests()
    )


@pytest.mark.parametrize(
    "answer",
    [
        lambda h, k: (h.wfile.write(b"HTTP/1.1 abc " + b"x" * 60_000 + b"\r\n\r\n"), h.reset()),
        lambda h, k: (h.wfile.write(b"SPAM" + b"y" * 60_000 + b"\r\n\r\n"), h.reset()),
        lambda h, k: h.reply(302, Location="http://" + "z" * 60_000 + "/"),
        lambda h, k: h.reply(200, b"{}", Content_Encoding="x" * 60_000),
    ],
    ids=["status-line", "not-http", "location", "encoding"],
)
def test_server_text_in_errors_is_kept_short(
    server: Server,
    channel: WirePublisher,
    http_client: Callable[..., AnvilClient],
    answer: Behaviour,
) -> None:
    client = serving_v1(channel, http_client)
    server.pointer = answer
    with pytest.raises(StoreError) as caught:
        client.sync()
    check_sentence(str(caught.value))
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
