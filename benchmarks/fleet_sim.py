"""The simulated LIVE instances of ``bench_fleet.py``: what each client does on the wire, with
the real checks (``verify_pointer``, ``check_object``, ``open_object``), many instances per
process; and the hint streams (the fleet's and the driver's probe).

    Fleet(cfg, indexes, out, control).run()  # in a child process; reports through ``out``

``cfg`` holds the FORGE's port, the store's port and path prefix, the project, the token and
trusted key, the poll interval, poller threads per process, hints on or off and the hint
jitter. Messages on ``out``: ``(kind, index, sequence, time, extra)`` with kind ``applied``
(extra: poll start, CPU of verify + decrypt, when the hint came or None), ``hint``, ``beat``
and, last, ``stats``.
"""

from __future__ import annotations

import heapq
import http.client
import json
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
from queue import Queue
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anvil_client._timing import HINT_MIN_SPACING
from anvil_client.wire import (
    AccessToken,
    TrustedKey,
    check_object,
    open_object,
    pointer_key,
    verify_pointer,
)

# --- one simulated instance ------------------------------------------------------------------


class Instance:
    def __init__(self, index: int) -> None:
        self.index = index
        self.instance_id = str(uuid.uuid4())
        self.etag: str | None = None
        self.sequence = -1
        self.releases: list[dict[str, str]] = []
        self.last_hint_poll = 0.0
        self.hinted_at: float | None = None
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

    def store_connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.cfg["store_port"], timeout=60)

    def next_due(self) -> tuple[float, int] | None:
        """Wait for the next due poll: (when it was due, instance key); None when stopping."""
        with self.heap_lock:
            while not self.stop.is_set():
                if not self.heap:
                    self.heap_lock.wait(0.5)
                    continue
                when, _, key = self.heap[0]
                delay = when - time.time()
                if delay > 0:
                    self.heap_lock.wait(min(delay, 0.5))
                    continue
                heapq.heappop(self.heap)
                return when, key
        return None

    def poller(self) -> None:
        by_id = {id(i): i for i in self.instances}
        connection = self.store_connection()
        while (due := self.next_due()) is not None:
            when, key = due
            instance = by_id[key]
            for attempt in range(2):  # a kept-alive connection the server closed: once more
                try:
                    self.poll(connection, instance)
                    break
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = self.store_connection()
                    if attempt:
                        self.count("poll_errors")
            if when >= instance.last_hint_poll:  # a regular poll: schedule the next one
                self.schedule(when + self.cfg["interval"], instance)
        connection.close()

    def get(self, connection: http.client.HTTPConnection, key: str, etag: str | None) -> Any:
        headers = {"If-None-Match": etag} if etag else {}
        connection.request("GET", f"{self.cfg['store_prefix']}/{key}", headers=headers)
        response = connection.getresponse()
        self.count("store_requests")
        return response, response.read()

    def poll(self, connection: http.client.HTTPConnection, instance: Instance) -> None:
        with instance.lock:
            started = time.time()
            response, data = self.get(connection, self.key, instance.etag)
            self.count(f"poll_{response.status}")
            if response.status != 200:
                return
            cpu = time.thread_time()
            pointer = verify_pointer(
                data, self.trusted, project_id=self.cfg["project_id"], channel="production"
            )
            instance.etag = response.getheader("ETag")
            if pointer.sequence <= instance.sequence:
                return
            served = self.open_releases(connection, pointer)
            if served is None:
                return
            cpu = time.thread_time() - cpu
            instance.sequence = pointer.sequence
            instance.releases = served
            hinted, instance.hinted_at = instance.hinted_at, None
            self.out.put(
                ("applied", instance.index, pointer.sequence, time.time(), (started, cpu, hinted))
            )
        self.heartbeats.put(instance)

    def open_releases(
        self, connection: http.client.HTTPConnection, pointer: Any
    ) -> list[dict[str, str]] | None:
        """GET, check and decrypt each entry's bundle; None if one could not be fetched."""
        served = []
        for release in pointer.releases:
            object_response, blob = self.get(connection, release.object.path, None)
            if object_response.status != 200:
                self.count("object_errors")
                return None
            check_object(release, blob)
            open_object(release, blob, self.token)
            served.append(
                {
                    "prompt_set_id": release.prompt_set_id,
                    "version": release.version,
                    "content_sha256": release.content_sha256,
                }
            )
        return served

    # -- heartbeats ---------------------------------------------------------------------------

    def heartbeat_body(self, instance: Instance) -> bytes:
        return json.dumps(
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

    def heartbeater(self) -> None:
        def connect() -> http.client.HTTPConnection:
            return http.client.HTTPConnection("127.0.0.1", self.cfg["port"], timeout=60)

        def send(body: bytes) -> int:
            connection.request("POST", "/api/v1/live/heartbeat", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status

        connection = connect()
        headers = {"Authorization": f"Bearer {self.cfg['token']}"}
        headers["Content-Type"] = "application/json"
        while (instance := self.heartbeats.get()) is not None:
            body = self.heartbeat_body(instance)
            started = time.perf_counter()
            for attempt in range(2):  # a kept-alive connection the FORGE closed: once more
                try:
                    self.count(f"heartbeat_{send(body)}")
                    self.out.put(("beat", instance.index, instance.sequence, time.time(), None))
                    break
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = connect()
                    if attempt:
                        self.count("heartbeat_errors")
            with self.stats_lock:
                self.heartbeat_latency.append(time.perf_counter() - started)
        connection.close()

    # -- hints ----------------------------------------------------------------------------------

    def hint_reader(self) -> None:
        selector = open_hint_streams(self.cfg, self.instances)
        self.count("streams", len(self.instances))
        while not self.stop.is_set():
            for key, _ in selector.select(timeout=0.5):
                sequences = read_hints(selector, key)
                if sequences is None:
                    self.count("streams_closed")
                for sequence in sequences or ():
                    self.count("hints")
                    self.on_hint(key.data[0], sequence)
        close_streams(selector)

    def on_hint(self, instance: Instance, sequence: int) -> None:
        """What ``anvil_client._timing.hint_poll_time`` does: a jittered poll, spaced."""
        now = time.time()
        self.out.put(("hint", instance.index, sequence, now, None))
        if sequence <= instance.sequence:
            return
        when = max(
            now + random.uniform(0.0, self.cfg["hint_jitter"]),
            instance.last_hint_poll + HINT_MIN_SPACING,
        )
        instance.last_hint_poll = when
        instance.hinted_at = now
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
        self.out.put(("stats", dict(self.stats), self.heartbeat_latency, None, None))


def fleet_process(cfg: dict[str, Any], indexes: list[int], out: Any, control: Any) -> None:
    Fleet(cfg, indexes, out, control).run()


# --- hint streams -----------------------------------------------------------------------------


def open_hint_streams(cfg: dict[str, Any], owners: list[Any]) -> selectors.BaseSelector:
    """One ``/api/v1/live/hints`` stream per owner, registered with ``[owner, buffer]``."""
    selector = selectors.DefaultSelector()
    request = (
        f"GET /api/v1/live/hints?project_id={cfg['project_id']}&channel=production "
        f"HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {cfg['token']}\r\n\r\n"
    ).encode()
    for owner in owners:
        sock = socket.create_connection(("127.0.0.1", cfg["port"]), timeout=60)
        sock.sendall(request)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, [owner, b""])
    return selector


_SEQUENCE = re.compile(rb'"sequence": (\d+)')


def read_hints(selector: selectors.BaseSelector, key: selectors.SelectorKey) -> list[int] | None:
    """The sequences of the complete events now readable on one stream; None once it closed."""
    try:
        chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
    except BlockingIOError:
        return []
    if not chunk:
        selector.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]
        return None
    buffer = key.data[1] + chunk
    last = buffer.rfind(b"\n\n")
    if last < 0:
        key.data[1] = buffer
        return []
    complete, key.data[1] = buffer[: last + 2], buffer[last + 2 :]
    return [int(match.group(1)) for match in _SEQUENCE.finditer(complete)]


def close_streams(selector: selectors.BaseSelector) -> None:
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()


class HintProbe:
    """A few extra streams read by an otherwise idle thread of the driver, opened after the
    fleet's: when their hints arrive is the FORGE's fan-out, without the fleet's own CPU."""

    def __init__(self, cfg: dict[str, Any], count: int) -> None:
        self.selector = open_hint_streams(cfg, list(range(count)))
        self.received: dict[int, list[float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.5):
                now = time.time()
                for sequence in read_hints(self.selector, key) or ():
                    self.received.setdefault(sequence, []).append(now)
        close_streams(self.selector)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
