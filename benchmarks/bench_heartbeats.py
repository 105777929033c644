"""Heartbeat ingestion: gunicorn (4 workers, infra/gunicorn.conf.py) on PostgreSQL (pgserver).

    .venv/bin/python benchmarks/bench_heartbeats.py [--seconds 10] [--instances 4000]
        [--processes 2] [--connections 24] [--workers 4] [--worker-class gevent] [--usage]
        [--both] [--in-process 1000]

The load generator: ``--processes`` processes, each driving ``--connections`` keep-alive
HTTP/1.1 sockets from one selector loop with bodies serialised in advance (it shares the
cores with the FORGE, so it must be cheap; its CPU is printed too). They send DESIGN §7
heartbeats (with ``--usage`` a 5-prompt usage report each) for ``--instances`` distinct
instances, each instance's first one before the clock starts, as fast as the FORGE answers,
for ``--seconds``. Prints the rate, latency percentiles, every status code, the CPU the FORGE
(master + workers), PostgreSQL and the load generator spent per heartbeat, the machine's load
average, and the FORGE CPU per heartbeat of the same view called in process. The goal of
issue 14: ≥ 1,500 heartbeats/s, 0 errors. The per-token limit is raised for the run
(``FORGE_HEARTBEAT_TOKEN_LIMIT``): one token sends them all; the per-instance limit stays (12 a
minute; each instance sends fewer).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import selectors
import socket
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleet_setup import (
    Gunicorn,
    Postgres,
    cpu_delta,
    heartbeat_body,
    seed_forge,
    tree_cpu,
    usage_payload,
)

GOAL = 1500.0


def _request(port: int, token: str, body: bytes) -> bytes:
    """One pre-serialised ``POST /api/v1/live/heartbeat`` (HTTP/1.1, keep-alive)."""
    head = (
        "POST /api/v1/live/heartbeat HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Cursor:
    """Requests taken in turn (bytes, or a callable building them: usage reports). Shared by
    every connection of a timed run, so each instance sends about as often as the others and
    a fast connection does not run its own instances into the per-instance limit."""

    def __init__(self, requests: list[Any]) -> None:
        self.requests = requests
        self.next = 0

    def take(self) -> Any:
        item = self.requests[self.next % len(self.requests)]
        self.next += 1
        return item

    def once_through(self) -> bool:
        return self.next >= len(self.requests)


class _Connection:
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, port: int, cursor: _Cursor) -> None:
        self.port = port
        self.cursor = cursor
        self.buffer = b""
        self.started = 0.0
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def send(self) -> None:
        item = self.cursor.take()
        data = item() if callable(item) else item
        self.started = time.perf_counter()
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def receive(self) -> tuple[int, bool] | None:
        """(status, connection closed) once a whole answer is in, else None."""
        chunk = self.sock.recv(65536)
        if not chunk:
            return 0, True
        self.buffer += chunk
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name == "content-length":
                length = int(value)
        if len(self.buffer) < head_end + 4 + length:
            return None
        self.buffer = self.buffer[head_end + 4 + length :]
        return int(head.split(" ", 2)[1]), "connection: close" in head

    def reconnect(self) -> None:
        self.sock.close()
        self.buffer = b""
        self.sock = self._connect()


def _loop(conns: list[_Connection], end: float | None) -> tuple[Counter[int], list[float]]:
    """Keep one request in flight on every connection until ``end`` (None: until each has
    sent its list once); every status and latency."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    selector = selectors.DefaultSelector()
    for conn in conns:
        conn.send()
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    active = len(conns)
    while active:
        for key, _ in selector.select(timeout=30):
            conn = key.data
            try:
                answer = conn.receive()
            except OSError:
                answer = (0, True)
            if answer is None:
                continue
            statuses[answer[0]] += 1
            latencies.append(time.perf_counter() - conn.started)
            selector.unregister(conn.sock)
            if answer[1]:
                conn.reconnect()
            if time.time() >= end if end is not None else conn.cursor.once_through():
                conn.sock.close()
                active -= 1
            else:
                selector.register(conn.sock, selectors.EVENT_READ, conn)
                conn.send()
    return statuses, latencies


def _client(
    port: int,
    token: str,
    project_id: str,
    instances: list[str],
    seconds: float,
    connections: int,
    usage: bool,
    start_at: float,
    out: Any,
) -> None:
    """One load process: ``connections`` keep-alive sockets driven by one selector loop,
    bodies serialised before the clock starts (cheap, so the FORGE gets the cores)."""
    report = iter(range(1, 10**9))

    def build(instance: str) -> Any:
        if usage:
            return lambda: _request(
                port,
                token,
                heartbeat_body(project_id, instance, usage=usage_payload(next(report))),
            )
        return _request(port, token, heartbeat_body(project_id, instance))

    if seconds > 0:  # a timed run: every connection takes the next instance in turn
        shared = _Cursor([build(i) for i in instances])
        conns = [_Connection(port, shared) for _ in range(min(connections, len(instances)))]
    else:  # the warm-up: each instance once, split between the connections
        slices = [[build(i) for i in instances[n::connections]] for n in range(connections)]
        conns = [_Connection(port, _Cursor(s)) for s in slices if s]
    while time.time() < start_at:
        time.sleep(0.005)
    cpu_before = time.process_time()
    statuses, latencies = _loop(conns, start_at + seconds if seconds > 0 else None)
    out.put((dict(statuses), latencies, time.process_time() - cpu_before))


def drive(
    url: str,
    token: str,
    project_id: str,
    *,
    instances: list[str],
    seconds: float,
    processes: int,
    connections: int,
    usage: bool = False,
) -> tuple[Counter[int], list[float], float]:
    """Send heartbeats from ``processes`` x ``connections`` keep-alive connections for
    ``seconds`` (0: each instance once); (statuses, latencies, load generator CPU seconds)."""
    port = int(url.rsplit(":", 1)[1])
    context = multiprocessing.get_context("fork")
    queue: Any = context.Queue()
    start_at = time.time() + 1.0
    procs = [
        context.Process(
            target=_client,
            args=(
                port,
                token,
                project_id,
                instances[i::processes],
                seconds,
                connections,
                usage,
                start_at,
                queue,
            ),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    client_cpu = 0.0
    for _ in procs:
        found, times, cpu = queue.get(timeout=seconds + 600)
        statuses.update({int(k): v for k, v in found.items()})
        latencies.extend(times)
        client_cpu += cpu
    for p in procs:
        p.join(timeout=30)
    return statuses, latencies, client_cpu


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_process(seed: Any, instances: list[str], extra: dict[str, str]) -> float:
    """CPU seconds per heartbeat of the same view called in this process, one after another
    (Flask test client, the same PostgreSQL database; no HTTP server, no load generator)."""
    from forge_app import create_app

    app = create_app({**seed.config, **extra})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {seed.token}", "Content-Type": "application/json"}
    bodies = [heartbeat_body(seed.project_id, instance) for instance in instances]
    for body in bodies[:50]:  # warm: connections, prepared statements
        client.post("/api/v1/live/heartbeat", data=body, headers=headers)
    started = time.process_time()
    for body in bodies[50:]:
        response = client.post("/api/v1/live/heartbeat", data=body, headers=headers)
        if response.status_code != 204:
            raise RuntimeError(f"in-process heartbeat answered {response.status_code}")
    return (time.process_time() - started) / max(1, len(bodies) - 50)


def report(
    label: str,
    statuses: Counter[int],
    latencies: list[float],
    seconds: float,
    cpu: dict[str, float],
) -> bool:
    """Print one run; whether it met the goal."""
    total = sum(statuses.values())
    ok = statuses.get(204, 0)
    rate = ok / seconds
    errors = total - ok
    print(f"\n{label}:")
    print(f"  heartbeats accepted: {ok} in {seconds:.1f} s = {rate:,.0f}/s (goal ≥ {GOAL:,.0f}/s)")
    print(f"  status codes: {dict(sorted(statuses.items()))}; errors: {errors}")
    print(
        "  latency ms: p50 {:.1f}  p95 {:.1f}  p99 {:.1f}  max {:.1f}  mean {:.1f}".format(
            *(1000 * percentile(latencies, q) for q in (0.5, 0.95, 0.99)),
            1000 * max(latencies),
            1000 * statistics.fmean(latencies),
        )
    )
    if total:
        print(
            "  CPU per heartbeat (ms): "
            + ", ".join(f"{name} {1000 * value / total:.2f}" for name, value in cpu.items())
        )
        print(
            "  CPU cores busy: "
            + ", ".join(f"{name} {value / seconds:.2f}" for name, value in cpu.items())
        )
    return errors == 0 and rate >= GOAL


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--instances", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=24, help="per load process")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-class", default="forge_app.gevent_worker.ForgeGeventWorker")
    parser.add_argument("--usage", action="store_true", help="each heartbeat carries usage")
    parser.add_argument("--both", action="store_true", help="run without and with usage")
    parser.add_argument(
        "--in-process", type=int, default=1000, help="heartbeats measured in process (0: skip)"
    )
    args = parser.parse_args()

    extra = {
        "FORGE_HEARTBEAT_TOKEN_LIMIT": "100000000",
        "FORGE_MAX_INSTANCES_PER_TOKEN": str(max(10_000, args.instances)),
    }
    pg = Postgres.start()
    forge = None
    try:
        url = pg.create_database("bench_heartbeats")
        seed = seed_forge(url, pg.parent / "instance")
        forge = Gunicorn.start(
            seed, workers=args.workers, worker_class=args.worker_class, extra_env=extra
        )
        instances = [str(uuid.uuid4()) for _ in range(args.instances)]
        print(
            f"gunicorn {args.workers} x {args.worker_class} workers on PostgreSQL; "
            f"{args.processes} load processes x {args.connections} keep-alive connections, "
            f"{args.instances} instances, {args.seconds:g} s per run; "
            f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})"
        )
        # Warm up: every instance's first heartbeat (creates its row, the ORM path).
        drive(
            forge.url,
            seed.token,
            seed.project_id,
            instances=instances,
            seconds=0,
            processes=args.processes,
            connections=args.connections,
        )
        runs = [False, True] if args.both else [args.usage]
        met = True
        for usage in runs:
            pg_pid = pg.pid
            pg_before = tree_cpu(pg_pid) if pg_pid else {}
            before = forge.cpu()
            started = time.perf_counter()
            statuses, latencies, client_cpu = drive(
                forge.url,
                seed.token,
                seed.project_id,
                instances=instances,
                seconds=args.seconds,
                processes=args.processes,
                connections=args.connections,
                usage=usage,
            )
            seconds = time.perf_counter() - started - 1.0  # drive waits 1 s before the start
            cpu = {
                "FORGE": cpu_delta(before, forge.cpu()),
                "PostgreSQL": cpu_delta(pg_before, tree_cpu(pg_pid)) if pg_pid else math.nan,
                "load generator": client_cpu,
            }
            label = "with usage (5 prompts)" if usage else "without usage"
            met = report(label, statuses, latencies, seconds, cpu) and met
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
        if args.in_process:
            forge.stop()
            forge = None
            count = min(args.in_process, len(instances))
            per = in_process(seed, instances[:count], extra)
            print(
                f"in process (Flask test client, same database, {count - 50} known instances "
                f"one after another): FORGE CPU {1000 * per:.2f} ms per heartbeat"
            )
        print("\nverdict:", "goal met" if met else "goal NOT met (see the numbers above)")
        return 0
    finally:
        if forge is not None:
            forge.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
