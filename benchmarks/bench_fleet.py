"""Fleet benchmark (issue 14 §5): publish to N instances, with and without hints.

    .venv/bin/python benchmarks/bench_fleet.py [--instances 1000] [--processes 4]
        [--threads 12] [--interval 5] [--publishes 3] [--modes hints,poll]

Setup: PostgreSQL (pgserver), the FORGE under gunicorn with 4 workers (infra/gunicorn.conf.py:
gevent, the store served by the FORGE at /store/), and N simulated LIVE instances in a few
processes on 127.0.0.1. Not ``anvil_client`` objects (a thousand of them, each with its own
threads and cache folder, would measure this 2-core VM's scheduler), but a faithful light
simulation of what each one does on the wire, with the real checks:

- polls ``/store/<pointer>`` every ``--interval`` s (random phase) with ``If-None-Match``;
- on a new pointer: ``verify_pointer`` (Ed25519, project, channel), GETs each entry's bundle
  object, ``check_object`` + ``open_object`` (AES-GCM with the ACCESS_TOKEN, content hash),
  then counts the instance as applied and sends a DESIGN §7 heartbeat (from a separate
  heartbeat thread, never the poller);
- with hints: holds one ``/api/v1/live/hints`` stream per instance (one selector thread per
  process) and, on a hint newer than its sequence, polls after a random delay up to 0.25 s
  (the client's ``HINT_JITTER``), at most once a second.

Propagation is measured per instance from the moment the publish call returned in the driver
until that instance verified and decrypted the new entry. Prints p50/p95/p99/max per mode,
heartbeat throughput and latency, store requests per second, and the CPU of each FORGE
worker, PostgreSQL and the simulated fleet. A benchmark, not a test: it exits 0.
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import json
import multiprocessing
import random
import re
import selectors
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from queue import Empty, Queue
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anvil_client.wire import (
    AccessToken,
    TrustedKey,
    check_object,
    open_object,
    pointer_key,
    verify_pointer,
)
from benchmarks.fleet_setup import (
    Gunicorn,
    Postgres,
    cpu_delta,
    release_and_publish,
    seed_forge,
    tree_cpu,
)

HINT_JITTER = 0.25  # anvil_client._client.HINT_JITTER
HINT_MIN_SPACING = 1.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- one simulated instance ------------------------------------------------------------------


class Instance:
    def __init__(self, index: int) -> None:
        self.index = index
        self.instance_id = str(uuid.uuid4())
        self.etag: str | None = None
        self.sequence = -1
        self.releases: list[dict[str, str]] = []
        self.last_hint_poll = 0.0
        self.lock = threading.Lock()


class Fleet:
    """The instances of one process: poller threads, a heartbeat thread, a hint reader."""

    def __init__(self, cfg: dict[str, Any], indexes: list[int], out: Any, control: Any) -> None:
        self.cfg = cfg
        self.out = out
        self.control = control
        self.instances = [Instance(i) for i in indexes]
        self.trusted = [TrustedKey.parse(cfg["trusted_key"])]
        self.token = AccessToken.parse(cfg["token"])
        self.key = pointer_key(cfg["project_id"], "production")
        self.heap: list[tuple[float, int, int]] = []
        self.heap_lock = threading.Condition()
        self.heartbeats: Queue[Instance | None] = Queue()
        self.stats: Counter[str] = Counter()
        self.stats_lock = threading.Lock()
        self.heartbeat_latency: list[float] = []
        self.stop = threading.Event()

    def count(self, name: str, n: int = 1) -> None:
        with self.stats_lock:
            self.stats[name] += n

    def schedule(self, when: float, instance: Instance) -> None:
        with self.heap_lock:
            heapq.heappush(self.heap, (when, instance.index, id(instance)))
            self.heap_lock.notify()

    # -- polling ------------------------------------------------------------------------------

    def poller(self) -> None:
        by_id = {id(i): i for i in self.instances}
        connection = http.client.HTTPConnection("127.0.0.1", self.cfg["port"], timeout=60)
        while not self.stop.is_set():
            with self.heap_lock:
                while not self.heap and not self.stop.is_set():
                    self.heap_lock.wait(0.5)
                if self.stop.is_set():
                    break
                when, _, key = self.heap[0]
                delay = when - time.time()
                if delay > 0:
                    self.heap_lock.wait(min(delay, 0.5))
                    continue
                heapq.heappop(self.heap)
            instance = by_id[key]
            try:
                self.poll(connection, instance)
            except (OSError, http.client.HTTPException):
                self.count("poll_errors")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.cfg["port"], timeout=60)
            if when >= instance.last_hint_poll:  # a regular poll: schedule the next one
                self.schedule(when + self.cfg["interval"], instance)
        connection.close()

    def get(self, connection: http.client.HTTPConnection, key: str, etag: str | None) -> Any:
        headers = {"If-None-Match": etag} if etag else {}
        connection.request("GET", f"/store/{key}", headers=headers)
        response = connection.getresponse()
        return response, response.read()

    def poll(self, connection: http.client.HTTPConnection, instance: Instance) -> None:
        with instance.lock:
            response, data = self.get(connection, self.key, instance.etag)
            self.count("store_requests")
            if response.status == 304:
                self.count("poll_304")
                return
            if response.status != 200:
                self.count(f"poll_{response.status}")
                return
            self.count("poll_200")
            pointer = verify_pointer(
                data, self.trusted, project_id=self.cfg["project_id"], channel="production"
            )
            instance.etag = response.getheader("ETag")
            if pointer.sequence <= instance.sequence:
                return
            served = []
            for release in pointer.releases:
                object_response, blob = self.get(connection, release.object.path, None)
                self.count("store_requests")
                if object_response.status != 200:
                    self.count("object_errors")
                    return
                check_object(release, blob)
                open_object(release, blob, self.token)
                served.append(
                    {
                        "prompt_set_id": release.prompt_set_id,
                        "version": release.version,
                        "content_sha256": release.content_sha256,
                    }
                )
            instance.sequence = pointer.sequence
            instance.releases = served
            self.out.put(("applied", instance.index, pointer.sequence, time.time()))
        self.heartbeats.put(instance)

    # -- heartbeats ---------------------------------------------------------------------------

    def heartbeater(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.cfg["port"], timeout=60)
        headers = {"Authorization": f"Bearer {self.cfg['token']}"}
        headers["Content-Type"] = "application/json"
        while True:
            instance = self.heartbeats.get()
            if instance is None:
                break
            body = json.dumps(
                {
                    "instance_id": instance.instance_id,
                    "hostname": f"fleet-{instance.index}",
                    "project_id": self.cfg["project_id"],
                    "channel": "production",
                    "mode": "accepting",
                    "sequence": instance.sequence,
                    "releases": instance.releases,
                    "last_error": None,
                    "client_version": "0.1.0",
                }
            ).encode()
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/v1/live/heartbeat", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                self.count(f"heartbeat_{response.status}")
            except (OSError, http.client.HTTPException):
                self.count("heartbeat_errors")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.cfg["port"], timeout=60)
            with self.stats_lock:
                self.heartbeat_latency.append(time.perf_counter() - started)
        connection.close()

    # -- hints ----------------------------------------------------------------------------------

    def hint_reader(self) -> None:
        selector = selectors.DefaultSelector()
        request = (
            f"GET /api/v1/live/hints?project_id={self.cfg['project_id']}&channel=production "
            f"HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.cfg['token']}\r\n\r\n"
        ).encode()
        for instance in self.instances:
            sock = socket.create_connection(("127.0.0.1", self.cfg["port"]), timeout=60)
            sock.sendall(request)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, [instance, b""])
        self.count("streams", len(self.instances))
        found = re.compile(rb'"sequence": (\d+)')
        while not self.stop.is_set():
            for key, _ in selector.select(timeout=0.5):
                instance, buffer = key.data
                try:
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(key.fileobj)
                    self.count("streams_closed")
                    continue
                buffer += chunk
                last = buffer.rfind(b"\n\n")
                if last < 0:
                    key.data[1] = buffer
                    continue
                complete, key.data[1] = buffer[: last + 2], buffer[last + 2 :]
                for match in found.finditer(complete):
                    self.count("hints")
                    self.on_hint(instance, int(match.group(1)))
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()

    def on_hint(self, instance: Instance, sequence: int) -> None:
        now = time.time()
        self.out.put(("hint", instance.index, sequence, now))
        if sequence <= instance.sequence:
            return
        when = max(
            now + random.uniform(0.0, HINT_JITTER), instance.last_hint_poll + HINT_MIN_SPACING
        )
        instance.last_hint_poll = when
        self.schedule(when, instance)

    # -- the process ----------------------------------------------------------------------------

    def run(self) -> None:
        interval = self.cfg["interval"]
        start = time.time()
        for instance in self.instances:
            self.schedule(start + random.uniform(0, interval), instance)
        threads = [threading.Thread(target=self.poller) for _ in range(self.cfg["threads"])]
        threads.append(threading.Thread(target=self.heartbeater))
        if self.cfg["hints"]:
            threads.append(threading.Thread(target=self.hint_reader))
        for thread in threads:
            thread.start()
        self.control.wait()  # the driver is done
        self.stop.set()
        self.heartbeats.put(None)
        with self.heap_lock:
            self.heap_lock.notify_all()
        for thread in threads:
            thread.join(timeout=60)
        self.out.put(("stats", dict(self.stats), self.heartbeat_latency))


def _fleet_process(cfg: dict[str, Any], indexes: list[int], out: Any, control: Any) -> None:
    Fleet(cfg, indexes, out, control).run()


# --- the driver -------------------------------------------------------------------------------


def run_mode(
    hints: bool, args: argparse.Namespace, forge: Gunicorn, seed: Any, app: Any, pg: Postgres
) -> dict[str, Any]:
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    control = context.Event()
    cfg = {
        "port": int(forge.url.rsplit(":", 1)[1]),
        "project_id": seed.project_id,
        "token": seed.token,
        "trusted_key": seed.trusted_key,
        "interval": args.interval,
        "threads": args.threads,
        "hints": hints,
    }
    indexes = list(range(args.instances))
    procs = [
        context.Process(
            target=_fleet_process, args=(cfg, indexes[i :: args.processes], out, control)
        )
        for i in range(args.processes)
    ]
    for p in procs:
        p.start()
    applied: dict[int, dict[int, float]] = {}
    hinted: dict[int, dict[int, float]] = {}

    def drain(until: float, want: tuple[int, int] | None = None) -> None:
        """Read 'applied' messages until ``until`` or until ``want`` = (sequence, count)."""
        while time.time() < until:
            if want is not None and len(applied.get(want[0], {})) >= want[1]:
                return
            try:
                kind, index, sequence, moment = out.get(timeout=0.2)
            except Empty:
                continue
            if kind == "applied":
                applied.setdefault(sequence, {})[index] = moment
            elif kind == "hint":
                hinted.setdefault(sequence, {}).setdefault(index, moment)

    # Every instance syncs once (its first poll) before the measurement starts.
    drain(time.time() + args.interval * 4 + 30, (seed.sequence, args.instances))
    ready = len(applied.get(seed.sequence, {}))
    workers_before = forge.cpu()
    pg_before = tree_cpu(pg.pid) if pg.pid else {}
    fleet_before = sum(tree_cpu(p.pid or 0).get(p.pid or 0, 0.0) for p in procs)
    wall_start = time.time()
    delays: list[float] = []
    hint_delays: list[float] = []
    missed = 0
    for n in range(args.publishes):
        sequence = release_and_publish(
            app, seed, f"Hello {{{{ name }}}} #{n} {uuid.uuid4().hex[:6]}"
        )
        published = time.time()
        seed.sequence = sequence
        drain(published + args.interval * 3 + 10, (sequence, args.instances))
        got = applied.get(sequence, {})
        delays.extend(moment - published for moment in got.values())
        drain(time.time() + 0.5)  # late hint messages
        hint_delays.extend(moment - published for moment in hinted.get(sequence, {}).values())
        missed += args.instances - len(got)
        drain(time.time() + 1.0)  # a pause between publishes (heartbeats settle)
    wall = time.time() - wall_start
    workers_after = forge.cpu()
    fleet_cpu = sum(tree_cpu(p.pid or 0).get(p.pid or 0, 0.0) for p in procs) - fleet_before
    pg_cpu = cpu_delta(pg_before, tree_cpu(pg.pid)) if pg.pid else float("nan")
    control.set()
    stats: Counter[str] = Counter()
    latencies: list[float] = []
    for _ in procs:
        while True:
            message = out.get(timeout=120)
            if message[0] == "stats":
                stats.update(message[1])
                latencies.extend(message[2])
                break
    for p in procs:
        p.join(timeout=60)
    return {
        "hints": hints,
        "ready": ready,
        "delays": delays,
        "hint_delays": hint_delays,
        "missed": missed,
        "wall": wall,
        "stats": stats,
        "heartbeat_latency": latencies,
        "workers": {
            pid: workers_after[pid] - workers_before.get(pid, 0.0) for pid in workers_after
        },
        "pg_cpu": pg_cpu,
        "fleet_cpu": fleet_cpu,
    }


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    delays, stats, wall = result["delays"], result["stats"], result["wall"]
    name = "with hints" if result["hints"] else "polling only"
    print(f"\n== {name}: {args.instances} instances, poll interval {args.interval:g} s ==")
    print(f"  synced before the first publish: {result['ready']}/{args.instances}")
    print(
        "  propagation s: p50 {:.2f}  p95 {:.2f}  p99 {:.2f}  max {:.2f}  "
        "(applied {} of {}, missed {})".format(
            percentile(delays, 0.5),
            percentile(delays, 0.95),
            percentile(delays, 0.99),
            max(delays) if delays else float("nan"),
            len(delays),
            args.instances * args.publishes,
            result["missed"],
        )
    )
    goal = 1.0 if result["hints"] else args.interval + 1.0
    p99 = percentile(delays, 0.99)
    print(
        f"  goal p99 ≤ {goal:g} s: {'met' if p99 <= goal else 'NOT met'} "
        f"(p99/goal = {p99 / goal:.2f})"
    )
    beats = stats.get("heartbeat_204", 0)
    hb = result["heartbeat_latency"]
    other = sum(v for k, v in stats.items() if k.startswith("heartbeat_") and k != "heartbeat_204")
    print(
        f"  heartbeats: {beats} accepted, {other} other; {beats / wall:.0f}/s over the run; "
        f"latency ms p50 {1000 * percentile(hb, 0.5):.1f} p99 {1000 * percentile(hb, 0.99):.1f} "
        f"max {1000 * max(hb or [0]):.1f}"
    )
    print(
        f"  store: {stats.get('store_requests', 0) / wall:.0f} requests/s "
        f"(pointer 304: {stats.get('poll_304', 0)}, 200: {stats.get('poll_200', 0)}, "
        f"errors: {stats.get('poll_errors', 0) + stats.get('object_errors', 0)})"
    )
    if result["hints"]:
        hinted = result["hint_delays"]
        print(
            f"  hint streams: {stats.get('streams', 0)} held, {stats.get('hints', 0)} hints, "
            f"{stats.get('streams_closed', 0)} closed by the FORGE; hint delivered after "
            f"p50 {percentile(hinted, 0.5):.2f} s, p99 {percentile(hinted, 0.99):.2f} s, "
            f"max {max(hinted or [float('nan')]):.2f} s ({len(hinted)} deliveries)"
        )
    workers = result["workers"]
    total = sum(workers.values())
    split = ", ".join(f"{cpu / wall:.2f}" for _, cpu in sorted(workers.items()))
    print(
        f"  CPU (cores over {wall:.0f} s): FORGE {total / wall:.2f} (per process: {split}), "
        f"PostgreSQL {result['pg_cpu'] / wall:.2f}, "
        f"simulated fleet {result['fleet_cpu'] / wall:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=12, help="poller threads per process")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--publishes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--modes", default="hints,poll")
    args = parser.parse_args()

    pg = Postgres.start()
    forge = None
    try:
        url = pg.create_database("bench_fleet")
        seed = seed_forge(url, pg.parent / "instance")
        app = seed.app()
        seed.sequence = release_and_publish(app, seed, "Hello {{ name }}!")  # type: ignore[attr-defined]
        forge = Gunicorn.start(
            seed,
            workers=args.workers,
            extra_env={
                "FORGE_HEARTBEAT_TOKEN_LIMIT": "100000000",
                "FORGE_HINT_MAX_STREAMS": str(args.instances * 2),
            },
        )
        print(
            f"FORGE: gunicorn, {args.workers} workers (gevent), PostgreSQL; "
            f"{args.instances} simulated instances in {args.processes} processes"
        )
        results = []
        for mode in args.modes.split(","):
            result = run_mode(mode.strip() == "hints", args, forge, seed, app, pg)
            report(result, args)
            results.append(result)
        if len(results) == 2:
            with_hints, without = results
            ratio = percentile(without["delays"], 0.99) / percentile(with_hints["delays"], 0.99)
            print(f"\np99 propagation without hints / with hints: {ratio:.1f}x")
        return 0
    finally:
        if forge is not None:
            forge.stop()
            problems = [
                line
                for line in forge.log.read_text(errors="replace").splitlines()
                if "ERROR" in line or "Traceback" in line or "Error" in line
            ]
            if problems:
                print(
                    f"\nFORGE log: {len(problems)} error lines, the first:",
                    *problems[:5],
                    sep="\n  ",
                )
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
