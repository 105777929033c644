"""The client's one HTTP transport: store GETs, heartbeats and the hint stream share it."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from anvil_client import _hints, _transport
from anvil_client._heartbeat import HeartbeatSender
from anvil_client._hints import MAX_LINE, _lines
from anvil_client._transport import TransportError
from anvil_client.errors import StoreUnavailable
from anvil_client.stores import HttpStore

POINTER = "projects/p1/channels/production.json"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._reply(b'{"pointer": 1}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._reply(b"{}")

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA): cert file, key file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anvil test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _certificate(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_tls_is_verified_for_the_store_and_for_heartbeats(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    with pytest.raises(StoreUnavailable, match=r"^TLS with 127\.0\.0\.1 failed for store .*verif"):
        HttpStore(f"{url}/store").get(POINTER)
    status, problem = HeartbeatSender(url, "token", timeout=5).post(b"{}", "test")
    assert status is None
    assert problem is not None
    assert problem.startswith(f"heartbeat to {url}/api/v1/live/heartbeat failed: SSLCertVerif")
    # The store's own CA bundle is trusted (and only the store has that setting).
    assert HttpStore(f"{url}/store", ca_certs=str(cert)).get(POINTER).data == b'{"pointer": 1}'


def test_a_refused_heartbeat_names_the_socket_error() -> None:
    port = _closed_port()
    status, problem = HeartbeatSender(f"http://127.0.0.1:{port}", "t").post(b"{}", "test")
    assert status is None
    assert problem == (
        f"heartbeat to http://127.0.0.1:{port}/api/v1/live/heartbeat failed: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )


class _Chunks:
    """A response whose body arrives in the given pieces."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    def read1(self, size: int) -> bytes:
        return self._chunks.pop(0)[:size] if self._chunks else b""


def test_stream_lines_are_split_across_reads() -> None:
    lines = list(_lines(_Chunks(b"event: hi", b"nt\ndata: 1\n\n: keep", b"-alive\n", b"tail")))
    assert lines == [b"event: hint\n", b"data: 1\n", b"\n", b": keep-alive\n"]


@pytest.mark.parametrize(
    "chunks",
    [
        (b"x" * MAX_LINE + b"\n",),  # a full line too long
        (b"x" * (MAX_LINE + 1),),  # a line still growing past the limit
        (b"x" * (MAX_LINE - 1), b"yy"),
    ],
)
def test_a_stream_line_over_the_limit_drops_the_stream(chunks: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError, match=f"a line longer than {MAX_LINE} bytes"):
        list(_lines(_Chunks(*chunks)))


def test_a_line_just_under_the_limit_is_taken() -> None:
    line = b"x" * (MAX_LINE - 1) + b"\n"
    assert list(_lines(_Chunks(line))) == [line]


def test_a_silent_stream_is_a_transport_timeout() -> None:
    class Silent:
        def read1(self, size: int) -> bytes:
            from urllib3.exceptions import ReadTimeoutError

            raise ReadTimeoutError(None, "/", "Read timed out.")  # type: ignore[arg-type]

    with pytest.raises(TransportError) as caught:
        list(_lines(Silent()))
    assert caught.value.kind == "timeout"


def test_heartbeats_and_hints_use_the_one_transport() -> None:
    sender = HeartbeatSender(f"http://127.0.0.1:{_closed_port()}", "t")
    sender.post(b"{}", "test")
    assert isinstance(sender._transport, _transport.Transport)
    stream = _hints.HintStream(
        "http://127.0.0.1:9",
        "t",
        project_id="p",
        channel="production",
        on_hint=lambda sequence: None,
        active=lambda: False,
        user_agent="test",
    )
    assert isinstance(stream._transport, _transport.Transport)


def _closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
