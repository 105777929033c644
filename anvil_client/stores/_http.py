"""Read-only ``https://`` and ``http://`` stores: a CDN, a public bucket, or the FORGE's /store/.

    >>> from anvil_client.stores import open_store
    >>> open_store("https://cdn.example.com/anvil").read_only
    True

Plain HTTP GET through the client's one transport (``anvil_client._transport``: a reused
urllib3 connection pool under an overall deadline):
conditional GET (``If-None-Match`` → 304 is ``modified=False``), connect and read timeouts
plus an overall deadline, ``Accept-Encoding: identity``, a size cap checked against
``Content-Length`` first and enforced while streaming, and redirects followed only on the
same scheme, host and port. Every transport error is mapped to a :class:`StoreError`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Unpack
from urllib.parse import quote, urljoin, urlsplit

from anvil_client._transport import (
    Deadline,
    Transport,
    TransportError,
    clip,
    content_length,
    finish,
    read1,
)
from anvil_client.errors import (
    AnvilError,
    ConfigError,
    NotFound,
    SizeLimitError,
    StoreError,
    StoreUnavailable,
)
from anvil_client.stores._base import GetResult, ObjectStore, PutOptions, PutResult

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 5.0
_MAX_REDIRECTS = 3
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_USER_AGENT = "anvil-client (+https://github.com/anvil-prompts)"


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
        self._transport = Transport(
            scheme,
            self.host,
            self.port,
            connect_timeout=connect_timeout,
            read_timeout=timeout,
            ca_certs=ca_certs,
            maxsize=maxsize,
        )

    def close(self) -> None:
        self._transport.close()

    # -- GET --------------------------------------------------------------------------------

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        deadline = Deadline(self.timeout).start()
        try:
            result = self._get_until(key, if_none_match, max_size, deadline)
        except StoreError as e:
            if deadline.expired:
                raise StoreUnavailable(self._timed_out(key)) from e
            raise
        finally:
            deadline.stop()
        if deadline.expired:  # what was read before the cut-off may parse, but is cut short
            raise StoreUnavailable(self._timed_out(key))
        return result

    def _timed_out(self, key: str) -> str:
        return f"GET {key} from {self.url} timed out after {self.timeout:g} s"

    def _get_until(
        self, key: str, if_none_match: str | None, max_size: int, deadline: Deadline
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
                finish(response)
        raise StoreError(
            f"GET {key} from {self.url} was redirected too many times (more than {_MAX_REDIRECTS})"
        )

    def _request(
        self, key: str, path: str, headers: dict[str, str], deadline: Deadline
    ) -> BaseHTTPResponse:
        try:
            return self._transport.open("GET", path, headers=headers, deadline=deadline)
        except TransportError as e:
            raise self._failed(key, e) from e

    def _failed(self, key: str, e: TransportError) -> AnvilError:
        if e.kind == "invalid":
            return ConfigError(f"HTTP store URL is invalid: {self.url!r}")
        if e.kind == "unreachable":
            return StoreUnavailable(f"store {self.url} is unreachable: {e.reason}")
        if e.kind == "connect-timeout":
            return StoreUnavailable(
                f"store {self.url} is unreachable: no connection within {e.seconds:g} s"
            )
        if e.kind == "timeout":
            return StoreUnavailable(self._timed_out(key))
        if e.kind == "tls":
            return StoreUnavailable(f"TLS with {self.host} failed for store {self.url}: {e.reason}")
        if e.kind == "broken":
            return StoreUnavailable(
                f"GET {key} from {self.url} failed: the connection broke ({e.reason})"
            )
        return StoreUnavailable(f"GET {key} from {self.url} failed: {e.reason}")

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
        deadline: Deadline,
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
                f"GET {key} from {self.url} came with Content-Encoding {clip(encoding)!r} "
                "although identity was asked for"
            )
        length = content_length(response)
        if length is not None and length > max_size:
            raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit")
        return GetResult(data=self._read_body(key, response, max_size, deadline), etag=etag)

    def _read_body(
        self, key: str, response: BaseHTTPResponse, max_size: int, deadline: Deadline
    ) -> bytes:
        chunks = []
        size = 0
        try:
            while chunk := read1(response, _CHUNK):
                size += len(chunk)
                if size > max_size:
                    raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit")
                if time.monotonic() > deadline.at:
                    raise StoreUnavailable(self._timed_out(key))
                chunks.append(chunk)
        except TransportError as e:
            if e.kind == "timeout":
                raise StoreUnavailable(self._timed_out(key)) from e
            raise StoreUnavailable(
                f"GET {key} from {self.url} failed while reading: {e.reason}"
            ) from e
        length = content_length(response)
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
