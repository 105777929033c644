"""Read-only ``https://`` and ``http://`` stores: a CDN, a public bucket, or the FORGE's /store/.

    >>> from anvil_client.stores import open_store
    >>> open_store("https://cdn.example.com/anvil").read_only
    True

Plain HTTP GET through one reused urllib3 connection pool (urllib3 is imported only here):
conditional GET (``If-None-Match`` → 304 is ``modified=False``), connect and read timeouts
plus an overall deadline, ``Accept-Encoding: identity``, a size cap checked against
``Content-Length`` first and enforced while streaming, and redirects followed only on the
same scheme, host and port. Every urllib3 error is mapped to a :class:`StoreError`. The overall
deadline is the client's one (:class:`anvil_client._transport.Deadline`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import quote, urljoin, urlsplit

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

from anvil_client._transport import Deadline
from anvil_client.errors import ConfigError, NotFound, SizeLimitError, StoreError, StoreUnavailable
from anvil_client.stores._base import GetResult, ObjectStore, PutOptions, PutResult

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 5.0
_MAX_REDIRECTS = 3
_CHUNK = 64 * 1024
_ERROR_BODY_LIMIT = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_USER_AGENT = "anvil-client (+https://github.com/anvil-prompts)"


_in_flight = threading.local()  # the Deadline of the GET this thread is making


def _watched(base: type[HTTPConnection]) -> type[HTTPConnection]:
    """``base`` whose requests tell the GET's :class:`Deadline` which socket to shut."""

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


class HttpStore(ObjectStore):
    """A read-only store reached by plain HTTP GET.

    Args:
        url: ``https://host[:port]/prefix`` or ``http://…``; keys are appended to the prefix.
        timeout: the most one request may take, and the socket read timeout (seconds).
        connect_timeout: the most connecting may take (seconds).
        headers: extra request headers (for example a CDN token).
        ca_certs: a CA bundle file for a private certificate authority.
        maxsize: connections kept alive in the pool (threads beyond it get a fresh one).

    Raises:
        ConfigError: if the URL is not an absolute http(s) URL without query or fragment.
    """

    read_only = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        ca_certs: str | None = None,
        maxsize: int = 2,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"HTTP store URL must be http(s)://host/prefix, got {url!r}")
        if parts.query or parts.fragment:
            raise ConfigError("HTTP store URL must not have a query or fragment")
        if parts.username or parts.password:
            raise ConfigError("HTTP store URL must not contain credentials; pass headers= instead")
        if timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("HTTP store timeouts must be positive")
        try:
            port = parts.port
        except ValueError as e:
            raise ConfigError(f"HTTP store URL has an invalid port: {url!r}") from e
        self.scheme = scheme
        self.host = parts.hostname
        self.port = port or (443 if scheme == "https" else 80)
        bracketed = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        self._origin = f"{scheme}://{bracketed}:{self.port}"
        self.base_path = quote(parts.path.rstrip("/"), safe=_PATH_SAFE)
        self.url = f"{scheme}://{parts.netloc}{self.base_path}"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._headers = {
            "Accept-Encoding": "identity",
            "User-Agent": _USER_AGENT,
            **(dict(headers) if headers else {}),
        }
        self._pool_args: dict[str, object] = {"maxsize": maxsize, "block": False}
        if scheme == "https":
            self._pool_args["cert_reqs"] = "CERT_REQUIRED"
            if ca_certs is not None:
                self._pool_args["ca_certs"] = ca_certs
        self._lock = threading.Lock()
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._pid = os.getpid()

    # -- the pool: one per store, rebuilt in a forked child ---------------------------------

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
                        timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.timeout),
                        **self._pool_args,
                    )
                except LocationParseError as e:
                    raise ConfigError(f"HTTP store URL is invalid: {self.url!r}") from e
                pool.ConnectionCls = (
                    _WatchedHTTPSConnection if self.scheme == "https" else _WatchedHTTPConnection
                )
                self._pool = pool
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # -- GET --------------------------------------------------------------------------------

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        deadline = _in_flight.deadline = Deadline(self.timeout).start()
        try:
            result = self._get_until(key, if_none_match, max_size, deadline.at)
        except StoreError as e:
            if deadline.expired:
                raise StoreUnavailable(
                    f"GET {key} from {self.url} timed out after {self.timeout:g} s"
                ) from e
            raise
        finally:
            deadline.stop()
            _in_flight.deadline = None
        if deadline.expired:  # what was read before the cut-off may parse, but is cut short
            raise StoreUnavailable(f"GET {key} from {self.url} timed out after {self.timeout:g} s")
        return result

    def _get_until(
        self, key: str, if_none_match: str | None, max_size: int, deadline: float
    ) -> GetResult:
        path = f"{self.base_path}/{key}"  # keys are URL-safe (check_key)
        headers = dict(self._headers)
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._request(key, path, headers, deadline)
            try:
                location = response.headers.get("Location")
                if response.status in _REDIRECTS and location:
                    path = self._same_origin_path(key, path, location)
                    continue
                return self._answer(key, response, if_none_match, max_size, deadline)
            finally:
                _finish(response)
        raise StoreError(
            f"GET {key} from {self.url} was redirected too many times (more than {_MAX_REDIRECTS})"
        )

    def _request(
        self, key: str, path: str, headers: dict[str, str], deadline: float
    ) -> BaseHTTPResponse:
        pool = self._connection_pool()
        # One retry when a kept-alive connection was closed by the server while idle; a
        # timeout or a refused connection is not retried (the poller backs off instead).
        for attempt in (1, 2):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreUnavailable(
                    f"GET {key} from {self.url} timed out after {self.timeout:g} s"
                )
            timeout = urllib3.Timeout(
                connect=min(self.connect_timeout, remaining), read=min(self.timeout, remaining)
            )
            try:
                return pool.urlopen(
                    "GET",
                    path,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    decode_content=False,
                    timeout=timeout,
                )
            # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: catch it first.
            except (NewConnectionError, NameResolutionError) as e:
                raise StoreUnavailable(f"store {self.url} is unreachable: {_reason(e)}") from e
            except ConnectTimeoutError as e:
                raise StoreUnavailable(
                    f"store {self.url} is unreachable: no connection within "
                    f"{min(self.connect_timeout, remaining):g} s"
                ) from e
            except Urllib3Timeout as e:
                raise StoreUnavailable(
                    f"GET {key} from {self.url} timed out after {self.timeout:g} s"
                ) from e
            except SSLError as e:
                raise StoreUnavailable(
                    f"TLS with {self.host} failed for store {self.url}: {_reason(e)}"
                ) from e
            except ProtocolError as e:
                if attempt == 2:
                    raise StoreUnavailable(
                        f"GET {key} from {self.url} failed: the connection broke ({_reason(e)})"
                    ) from e
            except HTTPError as e:
                raise StoreUnavailable(f"GET {key} from {self.url} failed: {_reason(e)}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _same_origin_path(self, key: str, path: str, location: str) -> str:
        target = urlsplit(urljoin(f"{self._origin}{path}", location))
        try:
            target_port = target.port or (443 if target.scheme == "https" else 80)
        except ValueError:
            target_port = -1
        if (target.scheme, target.hostname, target_port) != (self.scheme, self.host, self.port):
            raise StoreError(
                f"GET {key} from {self.url} was redirected to another host or scheme; "
                "refusing to follow"
            )
        return target.path + (f"?{target.query}" if target.query else "")

    def _answer(
        self,
        key: str,
        response: BaseHTTPResponse,
        if_none_match: str | None,
        max_size: int,
        deadline: float,
    ) -> GetResult:
        status = response.status
        etag = response.headers.get("ETag")
        if status == 304:
            return GetResult(data=b"", etag=etag or if_none_match, modified=False)
        if status in (404, 410):
            raise NotFound(f"{key} does not exist in {self.url}")
        if status >= 500 or status == 429:
            raise StoreUnavailable(f"GET {key} from {self.url} failed: HTTP {status}")
        if status in (401, 403):
            raise StoreError(
                f"GET {key} from {self.url} was refused (HTTP {status}); the store must allow "
                "anonymous reads (an S3 bucket also answers 403 for a missing object)"
            )
        if status != 200:
            raise StoreError(f"GET {key} from {self.url} answered HTTP {status}")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise StoreError(
                f"GET {key} from {self.url} came with Content-Encoding {_clip(encoding)!r} "
                "although identity was asked for"
            )
        length = _content_length(response)
        if length is not None and length > max_size:
            raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit")
        return GetResult(data=self._read_body(key, response, max_size, deadline), etag=etag)

    def _read_body(
        self, key: str, response: BaseHTTPResponse, max_size: int, deadline: float
    ) -> bytes:
        chunks = []
        size = 0
        try:
            while chunk := response.read1(_CHUNK):
                size += len(chunk)
                if size > max_size:
                    raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit")
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"GET {key} from {self.url} timed out after {self.timeout:g} s"
                    )
                chunks.append(chunk)
        except Urllib3Timeout as e:
            raise StoreUnavailable(
                f"GET {key} from {self.url} timed out after {self.timeout:g} s"
            ) from e
        except (HTTPError, OSError) as e:
            raise StoreUnavailable(
                f"GET {key} from {self.url} failed while reading: {_reason(e)}"
            ) from e
        length = _content_length(response)
        if length is not None and size != length:
            raise StoreUnavailable(
                f"GET {key} from {self.url} ended after {size} of {length} bytes"
            )
        return b"".join(chunks)

    # -- read-only --------------------------------------------------------------------------

    def _put(self, key: str, data: bytes, **options: Unpack[PutOptions]) -> PutResult:
        raise StoreError(f"{self.url} is read-only")

    def _list(self, prefix: str) -> list[str]:
        raise StoreError(f"{self.url} is read-only: HTTP stores cannot list")

    def _delete(self, key: str) -> None:
        raise StoreError(f"{self.url} is read-only")


def _finish(response: BaseHTTPResponse) -> None:
    """Give the connection back for reuse when its body was consumed; otherwise close it.

    A short error page of known length is drained so the connection stays alive; a body
    left unread (a cap or deadline was hit), or of unknown or large length, is never read.
    """
    try:
        if response.status in (204, 304) or response.status < 200:
            pass  # no body by definition (RFC 9110 §6.4.1)
        elif not response.closed:
            length = _content_length(response)
            if response.status != 200 and length is not None and length <= _ERROR_BODY_LIMIT:
                response.read(length)
            else:
                response.close()
    except (HTTPError, OSError):
        response.close()
    finally:
        response.release_conn()


def _content_length(response: BaseHTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _clip(text: str, limit: int = 120) -> str:
    """Server-provided text in an error: one short line (a status line may be 64 KiB)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(error: BaseException) -> str:
    """The innermost OS or TLS reason, as one short lowercase phrase ("connection refused")."""
    return _clip(_innermost_reason(error), 200)


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
