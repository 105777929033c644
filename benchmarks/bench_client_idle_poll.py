"""The running client's idle polls against SeaweedFS, side by side with a bare urllib3 loop.

    $ .venv/bin/python benchmarks/bench_client_idle_poll.py

Starts a real SeaweedFS (tests/servers.py), publishes a 1,000-prompt bundle with boto3, and
puts one counting HTTP proxy per measured process between it and SeaweedFS, so the requests
each process makes are counted on the wire. Three processes run at the same time:

- **client**: an ``AnvilClient`` whose background poller runs (ACCEPTING, ``poll_interval``
  0.05 s, no heartbeats) reading the store as a public bucket through ``HttpStore``;
- **bare**: a loop that does exactly the same conditional GET of the pointer with urllib3
  (one kept-alive connection pool, ``If-None-Match``, a wait of the same interval);
- **default**: a client at the default 30 s interval, for the idle CPU per minute.

Each process reports its own CPU time (``time.process_time()``: every thread, the poller's
wake-ups, disk checks and state sharing included) at the start and end of each window; CPU
per poll is the CPU of the window divided by the requests its proxy saw. Goal (issue 14 §4):
the client at most 1.5x the bare loop.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from client_setup import ROOT, BenchPublisher, bundle_bytes

from anvil_client import AnvilClient
from anvil_client.stores import open_store
from anvil_client.wire import pointer_key
from tests.servers import SeaweedFS

INTERVAL = 0.05
WINDOW = 10.0
WINDOWS = 3
DEFAULT_WINDOW = 60.0
BENCH_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "anvil-bench",
    "AWS_SECRET_ACCESS_KEY": "anvil-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# Each child prints "ready" once it polls idly, then its process CPU time for every line read.
CLIENT = """
import json, sys, time
from anvil_client import AnvilClient
settings = json.loads(sys.argv[1])
client = AnvilClient(**settings, start=True)
while client.status()["sequence"] is None:
    time.sleep(0.01)
print("ready", flush=True)
for _ in sys.stdin:
    status = client.status()
    assert status["last_error"] is None and status["leader"], status
    print(time.process_time(), flush=True)
"""

BARE = """
import sys, threading, time, urllib3
port, path, interval = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1, retries=False,
                                  timeout=urllib3.Timeout(connect=5, read=30))
etag = pool.request("GET", path).headers["ETag"]
stop = threading.Event()

def loop():
    while not stop.is_set():
        response = pool.request("GET", path, headers={"If-None-Match": etag})
        assert response.status == 304, response.status
        stop.wait(interval)

threading.Thread(target=loop, daemon=True).start()
print("ready", flush=True)
for _ in sys.stdin:
    print(time.process_time(), flush=True)
"""


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


class Child:
    """A measured process and the proxy its requests go through."""

    def __init__(self, name: str, script: str, args: list[str], proxy: CountingProxy) -> None:
        self.name = name
        self.proxy = proxy
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._line() == "ready", f"{name} did not start"

    def _line(self) -> str:
        out: IO[str] | None = self.process.stdout
        assert out is not None
        return out.readline().strip()

    def mark(self) -> tuple[float, int]:
        """(process CPU seconds, requests its proxy saw so far)."""
        seen = len(self.proxy.requests)
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write("mark\n")
        stdin.flush()
        return float(self._line()), seen

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def per_poll(start: tuple[float, int], end: tuple[float, int]) -> tuple[float, int]:
    requests = end[1] - start[1]
    return (end[0] - start[0]) / max(requests, 1), requests


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
        proxies: list[CountingProxy] = []
        children: list[Child] = []
        try:
            bucket = seaweed.create_bucket("bench-idle-poll")
            publish_store = open_store(f"s3://{bucket}?endpoint_url={seaweed.endpoint}")
            publisher = BenchPublisher(publish_store)
            prompts = {f"p.{i:04d}": f"Prompt {i} for {{{{ user }}}}." for i in range(1000)}
            publisher.publish(bundle_bytes(prompts))
            proxies = [CountingProxy(seaweed.s3_port) for _ in range(3)]
            client_proxy, bare_proxy, default_proxy = proxies

            def settings(proxy: CountingProxy, cache: str, interval: float) -> str:
                url = f"http://127.0.0.1:{proxy.port}/{bucket}"
                values = publisher.settings(root / cache, url)
                values.update(cache_dir=str(values["cache_dir"]), poll_interval=interval)
                return json.dumps(values)

            # The cache is filled once; the measured clients start from it like a restart.
            with AnvilClient(
                **json.loads(settings(client_proxy, "cache", INTERVAL)), start=False
            ) as first:
                first.sync()
            default = Child(
                "default", CLIENT, [settings(default_proxy, "cache-default", 30.0)], default_proxy
            )
            client = Child(
                "client", CLIENT, [settings(client_proxy, "cache", INTERVAL)], client_proxy
            )
            path = (
                f"/{bucket}/{pointer_key(publisher.settings(root, '')['project_id'], 'production')}"
            )
            bare = Child("bare", BARE, [str(bare_proxy.port), path, str(INTERVAL)], bare_proxy)
            children = [default, client, bare]
            time.sleep(1.0)  # past the start: first polls, imports, thread start-up
            default_start = default.mark()
            started = time.monotonic()
            rounds = []
            for _ in range(WINDOWS):
                c0, b0 = client.mark(), bare.mark()
                time.sleep(WINDOW)
                c1, b1 = client.mark(), bare.mark()
                rounds.append((per_poll(c0, c1), per_poll(b0, b1)))
            time.sleep(max(0.0, DEFAULT_WINDOW - (time.monotonic() - started)))
            default_end = default.mark()
            minutes = (time.monotonic() - started) / 60
            publish_store.close()
        finally:
            for child in children:
                child.stop()
            for proxy in proxies:
                proxy.close()
            seaweed.stop()

    statuses = sorted({s for p in (client_proxy, bare_proxy) for _, s, _ in p.requests[2:]})
    body_bytes = sum(n for _, s, n in client_proxy.requests if s == 304)
    client_cpu = [r[0][0] for r in rounds]
    bare_cpu = [r[1][0] for r in rounds]
    ratios = [c / b for c, b in zip(client_cpu, bare_cpu, strict=True)]
    print(
        f"idle polls against SeaweedFS over http://, {WINDOWS} windows of {WINDOW:.0f} s, "
        f"interval {INTERVAL} s, measured side by side"
    )
    for i, ((c, cn), (b, bn)) in enumerate(rounds, 1):
        print(
            f"  window {i}: client {c * 1e6:6.0f} us/poll ({cn} requests)   "
            f"bare urllib3 {b * 1e6:6.0f} us/poll ({bn} requests)   ratio {c / b:5.2f}x"
        )
    ratio = statistics.median(ratios)
    print(f"  client CPU per idle poll     {statistics.median(client_cpu) * 1e6:7.0f} us (median)")
    print(f"  bare urllib3 conditional GET {statistics.median(bare_cpu) * 1e6:7.0f} us (median)")
    print(f"  ratio                        {ratio:7.2f}x  (goal <= 1.50x)")
    print(f"  HTTP statuses after start    {statuses}, body bytes in 304s: {body_bytes}")
    default_cpu = (default_end[0] - default_start[0]) / minutes
    default_requests = default_end[1] - default_start[1]
    print(
        f"  default 30 s interval        {default_cpu * 1e3:7.2f} ms CPU per minute idle "
        f"({default_requests} requests in {minutes:.1f} min)"
    )
    ok = ratio <= 1.5 and statuses == [304]
    print(f"RESULT idle_poll {'OK' if ok else 'MISSED'} ratio={ratio:.2f}x")


if __name__ == "__main__":
    main()
