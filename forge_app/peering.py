"""Peering: read other FORGEs through their REST API, safely.

    >>> client = peer_client(app, forge)                       # doctest: +SKIP
    >>> orgs = client.get("/orgs", OrgList)                    # doctest: +SKIP

Remote calls go only to the URLs configured in ``[[known_forges]]`` (paths are built here from
quoted segments, redirects are never followed), with a connect deadline and a total deadline
that the caller never waits past, a cap on the response size (no compressed encodings), and
every answer validated by the same pydantic models that this FORGE's API answers with. Answers
are cached for a short TTL and then revalidated with ``If-None-Match``. Whatever goes wrong
(down, slow, hostile, malformed) becomes one :class:`PeerError` sentence for the page.

The bearer token is read from the environment variable named by ``bearer_token_env`` for each
request; it is never stored, logged, shown or put in an error message. The local references
to remote projects and copies of their versions are :mod:`forge_app.services.remote_projects`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3
from flask import Flask
from pydantic import BaseModel, ValidationError

from forge_app.config import KnownForge
from forge_app.errors import ForgeError, Kind

__all__ = [
    "PeerClient",
    "PeerError",
    "PeerLimits",
    "add_known_forge",
    "fetch_all",
    "find_forge",
    "known_forges",
    "peer_client",
    "segment",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_STATE_KEY = "forge.peering"
_CHUNK = 64 * 1024
#: Every remote read: no redirect followed, no retry, the body streamed and never decoded.
_REQUEST_OPTIONS: dict[str, Any] = {
    "redirect": False,
    "retries": False,
    "preload_content": False,
    "decode_content": False,
}
#: What a remote's failing status means, for the page.
_FAILED_STATUS = {
    404: "has no such object, or its token may not see it",
    429: "is rate-limiting this FORGE; try again in a minute",
}


class PeerError(ForgeError):
    """A remote FORGE could not be read; ``str()`` is one sentence for the page."""

    default_kind = Kind.REMOTE


@dataclass(frozen=True)
class PeerLimits:
    """Deadlines (seconds), the response size cap (bytes) and the cache TTL (seconds)."""

    connect_timeout: float = 2.0
    total_timeout: float = 5.0
    max_body: int = 4 * 1024 * 1024
    ttl: float = 30.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PeerLimits:
        default = cls()
        return cls(
            connect_timeout=float(
                config.get("FORGE_PEER_CONNECT_TIMEOUT", default.connect_timeout)
            ),
            total_timeout=float(config.get("FORGE_PEER_TOTAL_TIMEOUT", default.total_timeout)),
            max_body=int(config.get("FORGE_PEER_MAX_BODY", default.max_body)),
            ttl=float(config.get("FORGE_PEER_CACHE_TTL", default.ttl)),
        )


@dataclass
class _Cached:
    etag: str | None
    data: bytes
    fetched: float


class _Cache:
    """A small thread-safe LRU of raw answers, keyed by (forge, path)."""

    def __init__(self, max_entries: int = 512) -> None:
        self._entries: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: tuple[str, str]) -> _Cached | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[str, str], entry: _Cached) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


# Shared by every app of the process. Two pools: fan-out tasks wait for fetch tasks, never for
# a task of their own pool, so they cannot deadlock; threads start only when first used.
_FETCHES = ThreadPoolExecutor(max_workers=16, thread_name_prefix="forge-peer")
_FANOUT = ThreadPoolExecutor(max_workers=8, thread_name_prefix="forge-peer-fanout")


@dataclass
class _State:
    forges: tuple[KnownForge, ...]
    limits: PeerLimits
    cache: _Cache
    pool: urllib3.PoolManager
    executor: ThreadPoolExecutor
    fanout: ThreadPoolExecutor


def _state(app: Flask) -> _State:
    state = app.extensions.get(_STATE_KEY)
    if state is None:
        state = app.extensions[_STATE_KEY] = _State(
            forges=tuple(app.config["FORGE_SETTINGS"].known_forges),
            limits=PeerLimits.from_config(app.config),
            cache=_Cache(),
            pool=urllib3.PoolManager(num_pools=16, maxsize=4, retries=False),
            executor=_FETCHES,
            fanout=_FANOUT,
        )
    assert isinstance(state, _State)
    return state


def known_forges(app: Flask) -> tuple[KnownForge, ...]:
    """The configured FORGEs, in configuration order."""
    return _state(app).forges


def add_known_forge(app: Flask, forge: KnownForge) -> None:
    """Add (or replace, by name) a peer at run time; the demo configures its own FORGE so."""
    state = _state(app)
    state.forges = (*[f for f in state.forges if f.slug != forge.slug], forge)


def find_forge(app: Flask, slug_or_name: str) -> KnownForge | None:
    for forge in known_forges(app):
        if slug_or_name in (forge.slug, forge.name):
            return forge
    return None


def segment(value: object) -> str:
    """One path segment, quoted so it can never change the path or the host."""
    return quote(str(value), safe="")


class PeerClient:
    """Reads one configured FORGE's API (see the module docstring)."""

    def __init__(self, forge: KnownForge, state: _State, environ: Mapping[str, str]) -> None:
        self.forge = forge
        self._state = state
        self._environ = environ

    def get(self, path: str, model: type[M]) -> M:
        """``GET {url}/api/v1{path}`` validated by ``model``.

        Raises:
            PeerError: one sentence naming the FORGE and what went wrong.
        """
        limits = self._state.limits
        key = (self.forge.slug, path)
        cached = self._state.cache.get(key)
        if cached is not None and time.monotonic() - cached.fetched < limits.ttl:
            return self._parse(cached.data, model)
        future = self._state.executor.submit(self._fetch, path, cached)
        try:
            data, etag = future.result(timeout=limits.total_timeout + 0.25)
        except FutureTimeout:
            raise self._error(f"did not answer within {limits.total_timeout:g} seconds") from None
        result = self._parse(data, model)
        # Only answers that validated are kept, so a bad answer is asked again next time.
        self._state.cache.put(key, _Cached(etag, data, time.monotonic()))
        return result

    def _error(self, reason: str) -> PeerError:
        return PeerError(f"{self.forge.name} {reason}.")

    def _parse(self, data: bytes, model: type[M]) -> M:
        try:
            value = json.loads(data)
        except ValueError:
            raise self._error("answered with something that is not JSON") from None
        try:
            return model.model_validate(value)
        except ValidationError:
            raise self._error("answered with data that does not match the FORGE API") from None

    def _fetch(self, path: str, cached: _Cached | None) -> tuple[bytes, str | None]:
        limits = self._state.limits
        token = self._environ.get(self.forge.bearer_token_env, "")
        if not token:
            raise self._error(
                f"has no API token: set the environment variable {self.forge.bearer_token_env}"
            )
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": "anvil-forge-peering/1",
        }
        if cached is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        deadline = time.monotonic() + limits.total_timeout
        timeout = urllib3.Timeout(connect=limits.connect_timeout, read=limits.total_timeout)
        try:
            url = f"{self.forge.url}/api/v1{path}"
            response = self._state.pool.request(
                "GET", url, headers=headers, timeout=timeout, **_REQUEST_OPTIONS
            )
        except urllib3.exceptions.NewConnectionError:  # before its base, ConnectTimeoutError
            raise self._error("cannot be reached") from None
        except urllib3.exceptions.ConnectTimeoutError:
            raise self._error("did not accept a connection in time") from None
        except urllib3.exceptions.ReadTimeoutError:
            raise self._error(f"did not answer within {limits.total_timeout:g} seconds") from None
        except urllib3.exceptions.HTTPError:
            raise self._error("cannot be reached") from None
        try:
            if response.status == 304 and cached is not None:
                data, etag = cached.data, cached.etag
            else:
                data, etag = self._read(response, deadline), response.headers.get("ETag")
        except BaseException:
            # A connection left mid-answer is never reused: close it.
            response.close()
            if response.connection is not None:
                response.connection.close()
            raise
        finally:
            response.release_conn()
        return data, etag

    def _read(self, response: Any, deadline: float) -> bytes:
        limits = self._state.limits
        self._check_answer(response)
        too_large = f"answered with more than {limits.max_body // 1024} KiB"
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limits.max_body:
            raise self._error(too_large)
        body = bytearray()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise self._error(f"did not answer within {limits.total_timeout:g} seconds")
                chunk = response.read1(_CHUNK)
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > limits.max_body:
                    raise self._error(too_large)
        except urllib3.exceptions.ReadTimeoutError:
            raise self._error(f"did not answer within {limits.total_timeout:g} seconds") from None
        except urllib3.exceptions.HTTPError:
            raise self._error("broke off its answer") from None

    def _check_answer(self, response: Any) -> None:
        """Raises: PeerError: unless the answer is a 200 with an uncompressed body."""
        status = response.status
        if 300 <= status < 400:
            raise self._error("answered with a redirect, which the FORGE does not follow")
        if status in (401, 403):
            raise self._error(f"refused this FORGE's API token (HTTP {status})")
        if status != 200:
            raise self._error(_FAILED_STATUS.get(status, f"failed to answer (HTTP {status})"))
        encoding = (response.headers.get("Content-Encoding") or "identity").lower()
        if encoding != "identity":
            raise self._error("answered with a compressed body, which the FORGE does not accept")


def peer_client(
    app: Flask, forge: KnownForge, environ: Mapping[str, str] | None = None
) -> PeerClient:
    """A client for ``forge`` sharing the app's cache, connection pool and deadlines."""
    return PeerClient(forge, _state(app), os.environ if environ is None else environ)


def fetch_all(app: Flask, calls: Sequence[Callable[[], T]]) -> list[T | PeerError]:
    """Run independent remote reads side by side; each result is its value or its PeerError.

    The caller waits at most about one total deadline, however many calls there are.
    """
    state = _state(app)

    def run(call: Callable[[], T]) -> T | PeerError:
        try:
            return call()
        except PeerError as e:
            return e

    futures = [state.fanout.submit(run, call) for call in calls]
    end = time.monotonic() + state.limits.total_timeout + 0.5
    results: list[T | PeerError] = []
    for future in futures:
        try:
            results.append(future.result(timeout=max(0.0, end - time.monotonic())))
        except FutureTimeout:
            results.append(PeerError("A remote FORGE did not answer in time."))
    return results
