"""The client's HTTP transport pieces: one overall deadline per request, and plain connections.

    >>> from anvil_client._transport import Deadline
    >>> deadline = Deadline(30.0).start()
    >>> deadline.stop(); deadline.expired
    False

Socket timeouts bound each read, not their sum: a peer sending a byte now and then could hold
a status line, headers or a body open for ever. Every request the client makes (store GETs,
heartbeats) therefore runs under a :class:`Deadline`: one daemon thread per process watches
them all and, when one passes, shuts its socket down, so the blocked read returns at once and
the request fails as timed out. The FORGE's connections (heartbeats, the hint stream) are
built by :func:`http_connection`; ``http.client`` and ``ssl`` are imported on first use.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import http.client


class Deadline:
    """The overall deadline of one request: past it, the socket of :attr:`connection` is shut.

    :meth:`start` it before the request (connect, send, read) and :meth:`stop` it after; set
    :attr:`connection` (anything with a ``sock`` attribute) as soon as it is known. Then
    :attr:`expired` says whether the deadline cut the request short (whatever was read by
    then must not be used).
    """

    __slots__ = ("at", "connection", "done", "expired")

    def __init__(self, seconds: float, connection: Any = None) -> None:
        self.at = time.monotonic() + seconds
        self.connection = connection
        self.done = False
        self.expired = False

    def start(self) -> Deadline:
        """Have the process's watchdog expire this deadline when it passes."""
        _WATCHDOG.watch(self)
        return self

    def stop(self) -> None:
        """The request is over: the deadline no longer cuts anything off."""
        self.done = True

    def expire(self) -> None:
        self.expired = True
        shutdown(getattr(self.connection, "sock", None))


def shutdown(sock: object) -> None:
    """Stop a socket at once (the plain socket call, also under TLS: it only stops the
    descriptor; the owner still closes it)."""
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread per process expires the requests whose deadline passed.

    Cheaper than a timer thread per request; a finished request is only marked ``done`` and
    its entry dropped when its deadline comes.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._running = False

    def watch(self, deadline: Deadline) -> None:
        with self._cond:
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="anvil-http-deadlines", daemon=True).start()
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._heap[0][2] is deadline:  # else the thread already wakes up earlier
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    deadline = heapq.heappop(self._heap)[2]
                    if not deadline.done:
                        deadline.expire()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()


def _new_watchdog_in_child() -> None:
    global _WATCHDOG  # the parent's thread (and maybe its lock) did not survive fork()
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_new_watchdog_in_child)


def http_connection(
    *, https: bool, host: str, port: int | None, timeout: float
) -> http.client.HTTPConnection:
    """A new (not yet connected) ``http.client`` connection; https verifies the certificate
    against the system's CAs. ``timeout`` bounds connecting and each socket operation."""
    import http.client  # only processes that talk to a FORGE pay for it

    if https:
        import ssl

        return http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(host, port, timeout=timeout)
