"""The client's one HTTP transport: urllib3 connection pools, each request under one deadline.

    >>> from anvil_client._transport import Deadline
    >>> deadline = Deadline(30.0).start()
    >>> deadline.stop(); deadline.expired
    False

Every HTTP request the client makes goes through a :class:`Transport` (one kept-alive urllib3
pool per origin, rebuilt in a forked child, TLS verified against the system's CAs or a given
bundle, redirects never followed, no retries but one on a connection that broke before any
answer): the store's conditional GETs, heartbeats and the hint stream. urllib3 is imported
only by processes that talk HTTP (this module is imported on first use).

Socket timeouts bound each read, not their sum: a peer sending a byte now and then could hold
a status line, headers or a body open for ever. Every request therefore runs under a
:class:`Deadline`: one daemon thread per process watches them all and, when one passes, shuts
its socket down, so the blocked read returns at once and the request fails as timed out. A
hint stream's deadline is never started (the stream is meant to stay open); expiring it by
hand drops the stream.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.response import BaseHTTPResponse

_ERROR_BODY_LIMIT = 64 * 1024

Failure = Literal["invalid", "unreachable", "connect-timeout", "timeout", "tls", "broken", "failed"]


class Deadline:
    """The overall deadline of one request: past it, the socket of :attr:`connection` is shut.

    :meth:`start` it before the request (connect, send, read) and :meth:`stop` it after; the
    :class:`Transport` sets :attr:`connection` as soon as it is known. Then :attr:`expired`
    says whether the deadline cut the request short (whatever was read by then must not be
    used).
    """

    __slots__ = ("at", "connection", "done", "expired")

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.connection: Any = None
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
        """Cut the request off now: shut its socket (the plain socket call, also under TLS:
        it only stops the descriptor; the pool still closes it)."""
        self.expired = True
        sock = getattr(self.connection, "sock", None)
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


class TransportError(Exception):
    """A request that got no (complete) answer; :attr:`kind` says how it failed, the caller
    words the sentence."""

    def __init__(self, kind: Failure, error: BaseException | None = None, seconds: float = 0.0):
        super().__init__(kind)
        self.kind = kind
        self.error = error
        self.seconds = seconds  # for "connect-timeout": the connect timeout that ran out

    @property
    def reason(self) -> str:
        """The innermost OS or TLS reason, as one short lowercase phrase ("connection refused")."""
        return clip(_innermost_reason(self.error), 200) if self.error else self.kind

    @property
    def detail(self) -> str:
        """The failure as the socket or ``http.client`` raised it: ``Type: text`` (clipped)."""
        error = _original(self.error) if self.error else self
        return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


_in_flight = threading.local()  # the Deadline of the request this thread is making


def _watched(base: type[HTTPConnection]) -> type[HTTPConnection]:
    """``base`` whose requests tell the request's :class:`Deadline` which socket to shut."""

    class Watched(base):  # type: ignore[valid-type,misc]
        def request(self, *args: Any, **kwargs: Any) -> None:
            deadline = getattr(_in_flight, "deadline", None)
            if deadline is not None:
                deadline.connection = self
            super().request(*args, **kwargs)

    Watched.__name__ = Watched.__qualname__ = f"_Watched{base.__name__}"
    return Watched


_WatchedHTTPConnection = _watched(HTTPConnection)
_WatchedHTTPSConnection = _watched(HTTPSConnection)


class Transport:
    """Requests to one origin (``scheme://host:port``) over a pool of kept-alive connections.

    ``connect_timeout`` bounds connecting, ``read_timeout`` each socket read; both are cut to
    what is left of the request's :class:`Deadline`. Safe to share between threads.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        ca_certs: str | None = None,
        maxsize: int = 1,
    ) -> None:
        self.https = scheme == "https"
        bracketed = f"[{host}]" if ":" in host else host  # IPv6 literal
        self._origin = f"{scheme}://{bracketed}:{port or (443 if self.https else 80)}"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._pool_args: dict[str, Any] = {"maxsize": maxsize, "block": False}
        if self.https:
            self._pool_args["cert_reqs"] = "CERT_REQUIRED"  # the system's CAs unless ca_certs
            if ca_certs is not None:
                self._pool_args["ca_certs"] = ca_certs
        self._lock = threading.Lock()
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._pid = os.getpid()

    def _connection_pool(self) -> urllib3.HTTPConnectionPool:
        with self._lock:
            if self._pool is not None and self._pid != os.getpid():
                # Sockets inherited over fork() are shared with the parent: never reuse them.
                self._pool.close()
                self._pool = None
            if self._pool is None:
                self._pid = os.getpid()
                try:
                    pool = urllib3.connection_from_url(
                        self._origin,
                        retries=False,
                        timeout=urllib3.Timeout(
                            connect=self.connect_timeout, read=self.read_timeout
                        ),
                        **self._pool_args,
                    )
                except LocationParseError as e:
                    raise TransportError("invalid", e) from e
                pool.ConnectionCls = (
                    _WatchedHTTPSConnection if self.https else _WatchedHTTPConnection
                )
                self._pool = pool
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def open(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        deadline: Deadline,
        body: bytes | None = None,
    ) -> BaseHTTPResponse:
        """Send one request and return the response with its body unread (``read1`` it, then
        :func:`finish` it).

        A kept-alive connection the server closed meanwhile is retried once on a new one;
        a timeout or a refused connection is not retried.

        Raises:
            TransportError: no answer (the deadline already passed, unreachable, TLS, …).
        """
        pool = self._connection_pool()
        for attempt in (1, 2):
            remaining = deadline.at - time.monotonic()
            if remaining <= 0 or deadline.expired:
                raise TransportError("timeout")
            connect = min(self.connect_timeout, remaining)
            _in_flight.deadline = deadline
            try:
                return pool.urlopen(
                    method,
                    path,
                    body=body,
                    headers=dict(headers),
                    redirect=False,  # no retries either: the pool is built with retries=False
                    preload_content=False,
                    decode_content=False,
                    timeout=urllib3.Timeout(
                        connect=connect, read=min(self.read_timeout, remaining)
                    ),
                )
            except ProtocolError as e:
                if attempt == 2:
                    raise TransportError("broken", e) from e
            except (HTTPError, OSError) as e:
                raise _failure(e, connect) from e
            finally:
                _in_flight.deadline = None
        raise AssertionError("unreachable")  # pragma: no cover


def _failure(error: BaseException, connect: float) -> TransportError:
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: look at it first.
    if isinstance(error, (NewConnectionError, NameResolutionError)):
        return TransportError("unreachable", error)
    if isinstance(error, ConnectTimeoutError):
        return TransportError("connect-timeout", error, seconds=connect)
    if isinstance(error, (Urllib3Timeout, TimeoutError)):
        return TransportError("timeout", error)
    if isinstance(error, SSLError):
        return TransportError("tls", error)
    return TransportError("failed", error)


def read1(response: BaseHTTPResponse, size: int) -> bytes:
    """What has arrived of the body, at most ``size`` bytes (``b""`` at its end).

    Raises:
        TransportError: ``timeout`` (no byte within the read timeout) or ``broken``.
    """
    try:
        return response.read1(size)
    except Urllib3Timeout as e:
        raise TransportError("timeout", e) from e
    except (HTTPError, OSError) as e:
        raise TransportError("broken", e) from e


def finish(response: BaseHTTPResponse) -> None:
    """Give the connection back for reuse when its body was consumed; otherwise close it.

    A short error page of known length is drained so the connection stays alive; a body
    left unread (a cap or deadline was hit), or of unknown or large length, is never read.
    """
    try:
        if response.status in (204, 304) or response.status < 200:
            pass  # no body by definition (RFC 9110 §6.4.1)
        elif not response.closed:
            length = content_length(response)
            if response.status != 200 and length is not None and length <= _ERROR_BODY_LIMIT:
                response.read(length)
            else:
                response.close()
    except (HTTPError, OSError):
        response.close()
    finally:
        response.release_conn()


def content_length(response: BaseHTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def clip(text: str, limit: int = 120) -> str:
    """Server-provided text in an error: one short line (a status line may be 64 KiB)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _original(error: BaseException) -> BaseException:
    """The exception under urllib3's wrappers (what the socket, ``ssl`` or ``http.client``
    raised)."""
    seen = error
    while type(seen).__module__.startswith("urllib3"):
        inner = next((a for a in seen.args if isinstance(a, BaseException)), None)
        inner = inner or seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    return seen


def _innermost_reason(error: BaseException) -> str:
    seen = error
    while seen.__cause__ is not None or seen.__context__ is not None:
        nxt = seen.__cause__ or seen.__context__
        assert nxt is not None
        seen = nxt
    for candidate in (seen, error):
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror.lower()
        reason = getattr(candidate, "reason", None)
        if isinstance(reason, str) and reason:
            return reason
    text = str(error)
    return text.rsplit(": ", 1)[-1] if ": " in text else text
