"""A stand-in FORGE on 127.0.0.1 for the client's tests: heartbeats and the hint stream.

``POST …/api/v1/live/heartbeat`` is recorded and answered with ``answer`` (or by ``respond``);
``GET …/api/v1/live/hints`` holds a Server-Sent Events stream open; :meth:`FakeForge.hint`
writes an event to every open stream and :meth:`FakeForge.drop_streams` closes them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeForge:
    def __init__(self) -> None:
        self.heartbeats: list[dict[str, Any]] = []
        self.hint_requests: list[dict[str, Any]] = []
        self.answer = 204
        self.respond: Callable[[dict[str, Any]], int] | None = None
        self.hint_answer = 200
        self.hold = threading.Event()  # set = heartbeats are answered at once
        self.hold.set()
        self.ports: set[int] = set()  # client ports heartbeats came from (one per connection)
        self._streams: list[Any] = []
        self._lock = threading.Lock()
        forge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                record = {"path": self.path, "headers": dict(self.headers), "body": body}
                forge.hold.wait(30)
                with forge._lock:
                    forge.heartbeats.append(record)
                    forge.ports.add(self.client_address[1])
                status = forge.respond(record) if forge.respond is not None else forge.answer
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                with forge._lock:
                    forge.hint_requests.append({"path": self.path, "headers": dict(self.headers)})
                if forge.hint_answer != 200:
                    self.send_response(forge.hint_answer)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(b": connected\n\n")
                self.wfile.flush()
                done = threading.Event()
                with forge._lock:
                    forge._streams.append((self, done))
                done.wait(60)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/forge"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(r["body"]) for r in self.heartbeats]

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def hint(self, channel: str, sequence: int, *, raw: bytes | None = None) -> None:
        data = raw or (
            b"event: hint\ndata: "
            + json.dumps({"channel": channel, "sequence": sequence}).encode()
            + b"\n\n"
        )
        with self._lock:
            streams = list(self._streams)
        for handler, _ in streams:
            try:
                handler.wfile.write(data)
                handler.wfile.flush()
            except OSError:
                pass

    def drop_streams(self) -> None:
        with self._lock:
            streams, self._streams = self._streams, []
        for _, done in streams:
            done.set()

    def close(self) -> None:
        self.hold.set()
        self.drop_streams()
        self.server.shutdown()
        self.server.server_close()
