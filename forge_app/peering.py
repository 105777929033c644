"""Peering: read other FORGEs through their REST API, safely, and keep local references.

    >>> client = peer_client(app, forge)                       # doctest: +SKIP
    >>> orgs = client.get("/orgs", OrgList)                    # doctest: +SKIP

Remote calls go only to the URLs configured in ``[[known_forges]]`` (paths are built here from
quoted segments, redirects are never followed), with a connect deadline and a total deadline
that the caller never waits past, a cap on the response size (no compressed encodings), and
every answer validated by the same pydantic models that this FORGE's API answers with. Answers
are cached for a short TTL and then revalidated with ``If-None-Match``. Whatever goes wrong
(down, slow, hostile, malformed) becomes one :class:`PeerError` sentence for the page.

The bearer token is read from the environment variable named by ``bearer_token_env`` for each
request; it is never stored, logged, shown or put in an error message.
"""

from __future__ import annotations

import hashlib
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
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from forge_app.audit import record_event
from forge_app.config import KnownForge
from forge_app.errors import ForgeError, Kind
from forge_app.models import Organisation, Project, PromptSet, Role, SetStatus, User
from forge_app.models.peering import RemoteProject
from forge_app.rest._schemas import VersionDetail

__all__ = [
    "PeerClient",
    "PeerError",
    "PeerLimits",
    "PeeringError",
    "add_known_forge",
    "connect_project",
    "copy_version",
    "disconnect_project",
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


class PeerError(ForgeError):
    """A remote FORGE could not be read; ``str()`` is one sentence for the page."""

    default_kind = Kind.REMOTE


class PeeringError(ForgeError):
    """A local peering action (connect, disconnect, copy) that did not happen."""

    default_kind = Kind.INVALID


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
            response = self._state.pool.request(
                "GET",
                f"{self.forge.url}/api/v1{path}",
                headers=headers,
                redirect=False,
                retries=False,
                timeout=timeout,
                preload_content=False,
                decode_content=False,
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
        status = response.status
        if 300 <= status < 400:
            raise self._error("answered with a redirect, which the FORGE does not follow")
        if status in (401, 403):
            raise self._error(f"refused this FORGE's API token (HTTP {status})")
        if status == 404:
            raise self._error("has no such object, or its token may not see it")
        if status == 429:
            raise self._error("is rate-limiting this FORGE; try again in a minute")
        if status != 200:
            raise self._error(f"failed to answer (HTTP {status})")
        encoding = (response.headers.get("Content-Encoding") or "identity").lower()
        if encoding != "identity":
            raise self._error("answered with a compressed body, which the FORGE does not accept")
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


# ------------------------------------------------------------------ local references


def _require_role(session: Session, user: User, org_id: int, minimum: Role, action: str) -> None:
    from forge_app.authz import member_role

    role = member_role(user, org_id)
    if role is None:
        raise PeeringError(
            "There is no such organisation, or you are not a member.", kind=Kind.NOT_FOUND
        )
    if role < minimum:
        raise PeeringError(
            f"Only members with the {minimum.label} role or higher can {action}.",
            kind=Kind.FORBIDDEN,
        )


def connect_project(
    session: Session,
    user: User,
    *,
    forge: KnownForge,
    client: PeerClient,
    remote_project_id: str,
    org: Organisation,
) -> RemoteProject:
    """Create a local reference to a remote project in ``org`` (no data is copied); audited.

    Raises:
        PeeringError: for a role below editor, an already connected project, or a remote
            project that cannot be read (with the remote's one sentence).
    """
    from forge_app.rest._schemas import ProjectSummary

    _require_role(session, user, org.id, Role.EDITOR, "connect remote projects")
    try:
        remote = client.get(f"/projects/{segment(remote_project_id)}", ProjectSummary)
    except PeerError as e:
        raise PeeringError(str(e), kind=Kind.REMOTE) from e
    exists = select(RemoteProject.id).where(
        RemoteProject.org_id == org.id,
        RemoteProject.forge_name == forge.name,
        RemoteProject.remote_project_id == str(remote.id),
    )
    already = f"{remote.name[:120]} of {forge.name} is already connected to {org.name}."
    if session.scalar(exists):
        raise PeeringError(already, kind=Kind.CONFLICT)
    reference = RemoteProject(
        org_id=org.id,
        forge_name=forge.name,
        remote_project_id=str(remote.id),
        remote_org_name=remote.org_name[:200],
        name=remote.name[:200],
        created_by_id=user.id,
    )
    session.add(reference)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise PeeringError(already, kind=Kind.CONFLICT) from None
    record_event(
        "remote_project.connect",
        reference,
        org_id=org.id,
        actor=user,
        details={"forge": forge.name, "remote_project_id": str(remote.id), "name": remote.name},
        session=session,
    )
    return reference


def disconnect_project(session: Session, user: User, reference: RemoteProject) -> None:
    """Remove the reference (nothing remote changes); audited.

    Raises:
        PeeringError: for a role below editor.
    """
    _require_role(session, user, reference.org_id, Role.EDITOR, "disconnect remote projects")
    record_event(
        "remote_project.disconnect",
        reference,
        org_id=reference.org_id,
        actor=user,
        details={
            "forge": reference.forge_name,
            "remote_project_id": reference.remote_project_id,
            "name": reference.name,
        },
        session=session,
    )
    session.delete(reference)


def copy_version(
    session: Session,
    user: User,
    *,
    reference: RemoteProject,
    client: PeerClient,
    remote_set_id: str,
    version: str,
    target: Project,
    name: str,
) -> PromptSet:
    """Copy a remote version into ``target`` as a new LIVE set, with its provenance.

    The remote answer's ``bundle`` must hash to its ``content_sha256`` and name the requested
    set and version; the prompts copied are those of that checked bundle. The new set's history
    (audit log) records the source FORGE, project, set, version and content hash.

    Raises:
        PeeringError: for a role below editor in ``target``, a name already taken, a remote
            that cannot be read, a hash that does not match, or prompts that do not validate.
    """
    from forge_app.services.workflow import replace_prompts

    _require_role(session, user, target.org_id, Role.EDITOR, "create prompt sets")
    name = name.strip()
    if not name or len(name) > 120:
        raise PeeringError("Give the new prompt set a name of 1 to 120 characters.")
    if session.scalar(
        select(PromptSet.id).where(PromptSet.project_id == target.id, PromptSet.name == name)
    ):
        raise PeeringError(
            f"{target.name} already has a prompt set named {name!r}.", kind=Kind.CONFLICT
        )
    path = (
        f"/projects/{segment(reference.remote_project_id)}/sets/{segment(remote_set_id)}"
        f"/versions/{segment(version)}"
    )
    try:
        detail = client.get(path, VersionDetail)
    except PeerError as e:
        raise PeeringError(str(e), kind=Kind.REMOTE) from e
    snapshot = checked_snapshot(detail, remote_set_id=remote_set_id, version=version)
    prompt_set = PromptSet(
        project_id=target.id,
        name=name,
        description=(
            f"Copied from {reference.forge_name}: {reference.name} / version {detail.version}."
        )[:2000],
        status=SetStatus.LIVE.value,
        revision=1,
        updated_by_id=user.id,
    )
    session.add(prompt_set)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise PeeringError(
            f"{target.name} already has a prompt set named {name!r}.", kind=Kind.CONFLICT
        ) from None
    session.refresh(prompt_set)

    try:
        replace_prompts(session, prompt_set, snapshot, user, remove_missing=False)
    except ForgeError as e:
        session.rollback()
        raise PeeringError(f"The remote version's prompts do not validate here: {e}") from e
    provenance = {
        "forge": reference.forge_name,
        "project": reference.name,
        "remote_project_id": reference.remote_project_id,
        "remote_set_id": str(detail.prompt_set_id),
        "version": detail.version,
        "content_sha256": detail.content_sha256,
    }
    record_event("prompt_set.create", prompt_set, project=target, actor=user, session=session)
    record_event(
        "prompt_set.copy",
        prompt_set,
        project=target,
        actor=user,
        details=provenance,
        session=session,
    )
    return prompt_set


def checked_snapshot(
    detail: VersionDetail, *, remote_set_id: str, version: str
) -> dict[str, dict[str, Any]]:
    """The prompts (prompt-file shape) of a remote version's bundle, after checking that the
    bundle hashes to ``content_sha256`` and is the requested set and version.

    Raises:
        PeeringError: if any of that does not hold.
    """
    data = detail.bundle.encode("utf-8")
    if hashlib.sha256(data).hexdigest() != detail.content_sha256:
        raise PeeringError(
            "The remote version's content does not match its content hash, so nothing was copied.",
            kind=Kind.REMOTE,
        )
    try:
        bundle = json.loads(data)
        snapshot = bundle["snapshot"]
        if not isinstance(snapshot, dict):
            raise TypeError("snapshot")
        same = bundle.get("version") == version == detail.version and str(
            bundle.get("prompt_set_id")
        ) == str(remote_set_id)
    except (ValueError, KeyError, TypeError):
        raise PeeringError(
            "The remote version's bundle is not readable.", kind=Kind.REMOTE
        ) from None
    if not same:
        raise PeeringError(
            "The remote answered with another set or version than asked for, so nothing was "
            "copied.",
            kind=Kind.REMOTE,
        )
    prompts: dict[str, dict[str, Any]] = {}
    for key, prompt in snapshot.items():
        if not isinstance(prompt, dict):
            raise PeeringError("The remote version's bundle is not readable.", kind=Kind.REMOTE)
        entry = {k: v for k, v in prompt.items() if k in ("template", "messages", "metadata")}
        entry.setdefault("metadata", {})
        prompts[str(key)] = entry
    return prompts
