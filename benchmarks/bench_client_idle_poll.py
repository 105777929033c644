"""An idle poll against SeaweedFS over plain http://: one request, no bundle bytes, little CPU.

    $ .venv/bin/python benchmarks/bench_client_idle_poll.py

Starts a real SeaweedFS (tests/servers.py), publishes a 1,000-prompt bundle with boto3, and
puts a counting HTTP proxy between the client and SeaweedFS so requests and body bytes are
counted on the wire. The client reads the store as a public bucket through ``HttpStore``
(``http://host/bucket``). After the first sync, every poll is an idle one: a conditional GET
of the pointer answered 304. Client CPU per poll is the polling thread's CPU time.
"""

from __future__ import annotations

import http.client
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from client_setup import BenchPublisher, bundle_bytes

from anvil_client import AnvilClient
from anvil_client.stores import open_store
from tests.servers import SeaweedFS

POLLS = 300
BENCH_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "anvil-bench",
    "AWS_SECRET_ACCESS_KEY": "anvil-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class CountingProxy:
    """Forwards GETs to ``upstream`` (keep-alive on both sides) and counts what passes."""

    def __init__(self, upstream_port: int) -> None:
        self.requests: list[tuple[str, int, int]] = []  # (path, status, body bytes)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            local = threading.local()

            def do_GET(self) -> None:
                conn = getattr(self.local, "conn", None)
                if conn is None:
                    conn = self.local.conn = http.client.HTTPConnection(
                        "127.0.0.1", upstream_port, timeout=30
                    )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request("GET", self.path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                proxy.requests.append((self.path, response.status, len(body)))
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seaweed = SeaweedFS(root=root / "seaweedfs")
        # weed turns AWS_* credentials in its environment into an identity, which would
        # close the bucket to anonymous reads: start it without any, then give boto3 some.
        for name in BENCH_CREDENTIALS:
            os.environ.pop(name, None)
        seaweed.start()
        os.environ.update(BENCH_CREDENTIALS)
        proxy = None
        try:
            bucket = seaweed.create_bucket("bench-idle-poll")
            publish_store = open_store(f"s3://{bucket}?endpoint_url={seaweed.endpoint}")
            publisher = BenchPublisher(publish_store)
            prompts = {f"p.{i:04d}": f"Prompt {i} for {{{{ user }}}}." for i in range(1000)}
            plaintext = bundle_bytes(prompts)
            publisher.publish(plaintext)
            proxy = CountingProxy(seaweed.s3_port)
            url = f"http://127.0.0.1:{proxy.port}/{bucket}"
            with AnvilClient(**publisher.settings(root / "cache", url), start=False) as client:
                client.sync()
                assert client.status()["prompts"] == 1000
                first = list(proxy.requests)
                proxy.requests.clear()
                cpu, wall = [], []
                for _ in range(POLLS):
                    c0, w0 = time.thread_time(), time.perf_counter()
                    client._poll(conditional=True)  # exactly what the poller thread runs
                    cpu.append(time.thread_time() - c0)
                    wall.append(time.perf_counter() - w0)
                status = client.status()
            publish_store.close()
        finally:
            if proxy is not None:
                proxy.close()
            seaweed.stop()

    idle = proxy.requests
    statuses = sorted({s for _, s, _ in idle})
    bundle_requests = [r for r in idle if "/bundles/" in r[0]]
    body_bytes = sum(n for _, _, n in idle)
    print(f"idle poll against SeaweedFS over http:// ({POLLS} polls after the first sync)")
    print(
        f"  first sync                  {len(first)} requests, "
        f"{sum(n for _, _, n in first):,} body bytes ({len(plaintext):,}-byte bundle)"
    )
    print(f"  requests per idle poll      {len(idle) / POLLS:.2f}  (HTTP status {statuses})")
    print(f"  bundle requests             {len(bundle_requests)}")
    print(f"  body bytes received         {body_bytes}")
    print(f"  client CPU per idle poll    {statistics.median(cpu) * 1e6:7.0f} us (median)")
    print(f"  wall time per idle poll     {statistics.median(wall) * 1e3:7.2f} ms (median)")
    print(f"  last_error                  {status['last_error']}")
    ok = len(idle) == POLLS and statuses == [304] and body_bytes == 0
    print(f"RESULT idle_poll {'OK' if ok else 'MISSED'} requests={len(idle) / POLLS:.2f}/poll")


if __name__ == "__main__":
    main()
