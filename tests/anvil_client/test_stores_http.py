"""HttpStore against a small local HTTP/1.1 server: 304s, reuse, timeouts, caps, redirects."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from anvil_client.errors import (
    ConfigError,
    NotFound,
    SizeLimitError,
    StoreError,
    StoreUnavailable,
)
from anvil_client.stores import FileStore, HttpStore, cache_control_for
from anvil_client.stores._file import etag_of

POINTER = "projects/p1/channels/production.json"
BUNDLE = "projects/p1/bundles/" + "b" * 64 + ".jwe"
MiB = 1024 * 1024


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()  # set at teardown: frees handlers that stall
        self.endless_sent: list[int] = []  # bytes each endless handler managed to send

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (on purpose: timeouts, caps) is not a server error.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, route: str = "store") -> str:
        return f"http://127.0.0.1:{self.port}/{route}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers)))
        route, _, key = self.path.lstrip("/").partition("/")
        handler = getattr(self, "route_" + route.replace("-", "_"), None)
        if handler is None:
            self.reply(404, b"no route")
        else:
            handler(key)

    def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def route_store(self, key: str) -> None:
        path = self.server.root / key
        if not path.is_file():
            self.reply(404, b"<Error>NoSuchKey</Error>")
            return
        data = path.read_bytes()
        etag = etag_of(data)
        headers = {"ETag": etag, "Cache_Control": cache_control_for(key)}
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            return
        self.reply(200, data, Content_Type="application/json", **headers)

    def route_status(self, key: str) -> None:
        self.reply(int(key.split("/")[0]), b"status page")

    def route_slow(self, key: str) -> None:
        self.server.release.wait(10)
        self.reply(200, b"late")

    def route_drip(self, key: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000):
                if self.server.release.wait(0.02):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            return

    def _endless(self, chunked: bool) -> None:
        self.send_response(200)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        block = b"z" * (64 * 1024)
        sent = 0
        try:
            while sent < 512 * MiB and not self.server.release.is_set():
                if chunked:
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(block), block))
                else:
                    self.wfile.write(block)
                sent += len(block)
        except OSError:
            pass
        finally:
            with self.server.lock:
                self.server.endless_sent.append(sent)

    def route_endless_chunked(self, key: str) -> None:
        self._endless(chunked=True)

    def route_endless_close(self, key: str) -> None:
        self._endless(chunked=False)

    def route_declared(self, key: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10**12))
        self.end_headers()
        self.close_connection = True

    def route_gzip(self, key: str) -> None:
        self.reply(200, b"\x1f\x8b...", Content_Encoding="gzip")

    def route_redirect_same(self, key: str) -> None:
        self.reply(302, b"", Location=f"/store/{key}")

    def route_redirect_other(self, key: str) -> None:
        self.reply(302, b"", Location=f"http://localhost:{self.server.port}/store/{key}")

    def route_redirect_https(self, key: str) -> None:
        self.reply(301, b"", Location=f"https://127.0.0.1:{self.server.port}/store/{key}")

    def route_redirect_loop(self, key: str) -> None:
        self.reply(307, b"", Location=self.path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("http-store")
    files = FileStore(root)
    files.put(POINTER, b'{"pointer": 1}')
    files.put(BUNDLE, b"B" * 5000)
    srv = Server(root)
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
def open_http() -> Iterator[Any]:
    """Build HttpStores that are closed after the test."""
    made: list[HttpStore] = []

    def make(url: str, **kwargs: Any) -> HttpStore:
        store = HttpStore(url, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_get_and_conditional_get(server: Server, open_http: Any) -> None:
    store = open_http(server.url())
    first = store.get(POINTER)
    assert first.data == b'{"pointer": 1}'
    assert first.modified
    assert first.etag == etag_of(first.data)
    again = store.get(POINTER, if_none_match=first.etag)
    assert again.modified is False
    assert again.data == b""
    assert again.etag == first.etag
    assert store.get(POINTER, if_none_match='"stale"').data == first.data
    path, headers = server.requests[-2]
    assert path == f"/store/{POINTER}"
    assert headers["If-None-Match"] == first.etag
    assert headers["Accept-Encoding"] == "identity"


def test_not_found(server: Server, open_http: Any) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        open_http(server.url()).get("projects/p1/channels/missing.json")


def test_one_connection_is_reused(server: Server, open_http: Any) -> None:
    store = open_http(server.url())
    before = server.connections
    etag = store.get(POINTER).etag
    for _ in range(5):
        assert store.get(POINTER, if_none_match=etag).modified is False
        assert store.get(BUNDLE).data == b"B" * 5000
        with pytest.raises(NotFound):
            store.get("projects/p1/nothing.json")
    # 16 requests, one TCP connection: the 304s had no body and the 404 pages were drained.
    assert server.connections - before == 1


def test_threads_share_the_pool(server: Server, open_http: Any) -> None:
    store = open_http(server.url(), maxsize=2)
    before = server.connections
    results: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            data = store.get(BUNDLE).data
            with lock:
                results.append(data)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [b"B" * 5000] * 20
    assert 1 <= server.connections - before <= 4


def test_a_forked_child_gets_its_own_connections(server: Server, open_http: Any) -> None:
    store = open_http(server.url())
    store.get(POINTER)
    before = server.connections
    store._transport._pid = (
        -1
    )  # as if this were a child after fork(): inherited sockets must not be used
    store.get(POINTER)
    assert server.connections - before == 1


def test_read_timeout(server: Server, open_http: Any) -> None:
    store = open_http(server.url("slow"), timeout=0.3)
    with pytest.raises(StoreUnavailable, match=r"timed out after 0\.3 s"):
        store.get(POINTER)


def test_overall_deadline_stops_a_slow_drip(server: Server, open_http: Any) -> None:
    # Every byte arrives well within the read timeout; only the overall deadline can stop it.
    store = open_http(server.url("drip"), timeout=0.5)
    with pytest.raises(StoreUnavailable, match="timed out"):
        store.get(POINTER)


@pytest.mark.parametrize("route", ["endless-chunked", "endless-close"])
def test_an_endless_body_is_cut_at_max_size(server: Server, open_http: Any, route: str) -> None:
    store = open_http(server.url(route))
    already = len(server.endless_sent)
    with pytest.raises(SizeLimitError, match="1048576-byte limit"):
        store.get(POINTER, max_size=MiB)
    store.close()
    _wait_for(lambda: len(server.endless_sent) > already)
    # The server could push little more than the cap and the socket buffers before the
    # client hung up; it would have sent 512 MiB to a reader that kept going.
    assert server.endless_sent[already] < 64 * MiB


def test_a_declared_oversize_is_refused_before_reading(server: Server, open_http: Any) -> None:
    with pytest.raises(SizeLimitError):
        open_http(server.url("declared")).get(POINTER, max_size=MiB)


def test_size_cap_on_a_normal_object(server: Server, open_http: Any) -> None:
    store = open_http(server.url())
    with pytest.raises(SizeLimitError):
        store.get(BUNDLE, max_size=4999)
    assert len(store.get(BUNDLE, max_size=5000).data) == 5000


def test_server_down_is_one_clear_sentence(open_http: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_http(f"http://127.0.0.1:{port}/store")
    with pytest.raises(StoreUnavailable) as caught:
        store.get(POINTER)
    message = str(caught.value)
    assert message == f"store http://127.0.0.1:{port}/store is unreachable: connection refused"
    assert "urllib3" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, StoreUnavailable),
        (502, StoreUnavailable),
        (503, StoreUnavailable),
        (429, StoreUnavailable),
        (404, NotFound),
        (410, NotFound),
        (403, StoreError),
        (401, StoreError),
        (400, StoreError),
        (206, StoreError),
    ],
)
def test_status_codes_map_to_store_errors(
    server: Server, open_http: Any, status: int, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        open_http(server.url("status")).get(f"{status}/x")
    assert type(caught.value) is error
    assert str(status) in str(caught.value) or error is NotFound


def test_same_origin_redirect_is_followed(server: Server, open_http: Any) -> None:
    assert open_http(server.url("redirect-same")).get(POINTER).data == b'{"pointer": 1}'


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("redirect-other", "another host"),
        ("redirect-https", "another host or scheme"),
        ("redirect-loop", "too many"),
    ],
)
def test_other_redirects_are_refused(
    server: Server, open_http: Any, route: str, message: str
) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        open_http(server.url(route)).get(POINTER)
    assert not isinstance(caught.value, StoreUnavailable)


def test_content_encoding_is_refused(server: Server, open_http: Any) -> None:
    with pytest.raises(StoreError, match="Content-Encoding 'gzip'"):
        open_http(server.url("gzip")).get(POINTER)


def test_read_only(server: Server, open_http: Any) -> None:
    store = open_http(server.url())
    before = len(server.requests)
    with pytest.raises(StoreError, match="read-only"):
        store.put(POINTER, b"x")
    with pytest.raises(StoreError, match="read-only"):
        store.delete(POINTER)
    with pytest.raises(StoreError, match="read-only"):
        store.list("projects/")
    assert len(server.requests) == before
    assert store.read_only


def test_unsafe_keys_never_reach_the_server(server: Server, open_http: Any) -> None:
    store = open_http(server.url())
    before = len(server.requests)
    for key in ("../etc/passwd", "a/../../b", "%2e%2e/x", "a?b=c", "a#b"):
        with pytest.raises(StoreError, match="unsafe"):
            store.get(key)
    assert len(server.requests) == before


def test_extra_headers_are_sent(server: Server, open_http: Any) -> None:
    store = open_http(server.url(), headers={"X-Cdn-Token": "t0k"})
    store.get(POINTER)
    assert server.requests[-1][1]["X-Cdn-Token"] == "t0k"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/x",
        "http:///x",
        "https://u:p@h/x",
        "https://h/x?q=1",
        "https://h/x#f",
        "http://h:0x/",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        HttpStore(url)


def test_bad_timeouts() -> None:
    with pytest.raises(ConfigError):
        HttpStore("http://h/x", timeout=0)


def test_url_and_prefix(server: Server, open_http: Any) -> None:
    store = open_http(server.url() + "/")
    assert store.url == server.url()
    assert store.get(POINTER).data == b'{"pointer": 1}'
    assert repr(store) == f"HttpStore({server.url()!r})"
