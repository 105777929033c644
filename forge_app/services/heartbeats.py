"""Heartbeats in: the body of ``POST /api/v1/live/heartbeat`` (DESIGN §7), the limits every
FORGE process shares through the database, and the upsert of a
:class:`~forge_app.models.instances.LiveInstance`.

    >>> unsafe_character("web-1\\u202e")
    'U+202E'

The API validates a body with :class:`HeartbeatBody`, counts it against the limits shared by
every FORGE process (:func:`count_heartbeat`: per token and per (token, instance)), and upserts
the instance (:func:`record_heartbeat`, which refuses a new instance beyond the per-token cap).
What the instances then serve, and whether they should, is :mod:`forge_app.services.instances`.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import unicodedata
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Table, bindparam, delete, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from anvil_client.wire import (
    HEARTBEAT_MAX_SIZE,
    RELEASES_MAX,
    SEMVER_RE,
)
from forge_app.models import UTCDateTime, utcnow
from forge_app.models.instances import HeartbeatCounter, LiveInstance
from forge_app.usage import UsageReport

__all__ = [
    "DEFAULT_HEARTBEAT_LIMIT",
    "DEFAULT_HEARTBEAT_WINDOW",
    "DEFAULT_MAX_INSTANCES_PER_TOKEN",
    "DEFAULT_TOKEN_HEARTBEAT_LIMIT",
    "HeartbeatBody",
    "HeartbeatError",
    "HeartbeatLimits",
    "SlidingWindowLimiter",
    "TooManyHeartbeats",
    "TooManyInstances",
    "count_and_update_known",
    "count_heartbeat",
    "number_setting",
    "parse_heartbeat",
    "record_heartbeat",
    "record_rejected_heartbeat",
    "unsafe_character",
    "update_known_instance",
]

#: Heartbeats accepted per (token, instance) and window. A client sends one at start, one per
#: apply or error change and one every 300 s, so 12 a minute leaves room for bursts.
DEFAULT_HEARTBEAT_LIMIT = 12
#: Heartbeats accepted per token and window, all its instances together
#: (``FORGE_HEARTBEAT_TOKEN_LIMIT``): 10,000 instances reporting every 300 s send 2,000 a
#: minute; a publication makes them all report within one poll interval.
DEFAULT_TOKEN_HEARTBEAT_LIMIT = 10_000
DEFAULT_HEARTBEAT_WINDOW = 60.0
#: Distinct instances (not archived) one ACCESS_TOKEN may report
#: (``FORGE_MAX_INSTANCES_PER_TOKEN``).
DEFAULT_MAX_INSTANCES_PER_TOKEN = 10_000

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_SHA256 = r"^[0-9a-f]{64}$"
# pydantic's (Rust) regex engine: "$" is the very end of the text, "\\Z" does not exist.
_CHANNEL = r"^[a-z0-9][a-z0-9-]{0,31}$"
#: Control (Cc), format (Cf: bidi overrides and isolates, zero-width characters), surrogate
#: and line/paragraph separator characters: none of them belongs in a host name or a version,
#: and each can make one row of the Instances page look like another.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
LAST_ERROR_MAX = 4096


def unsafe_character(text: str) -> str | None:
    """The first control, bidi or other invisible formatting character (as ``U+XXXX``)."""
    for char in text:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def _refuse_unsafe(value: str) -> str:
    found = unsafe_character(value)
    if found is not None:
        raise ValueError(f"it contains a control or bidirectional character ({found})")
    return value


def _clean_error(text: str) -> str:
    """An error message is kept, made harmless: line breaks and other controls become one
    space, invisible formatting (bidi) characters go."""
    out: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            if out and out[-1] != " ":
                out.append(" ")
        elif category not in ("Cf", "Cs"):
            out.append(char)
    return "".join(out).strip()


class HeartbeatError(ValueError):
    """A heartbeat body that is not exactly DESIGN §7's; the message is one sentence."""


class TooManyHeartbeats(Exception):
    """Beyond a heartbeat rate limit; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyInstances(Exception):
    """The token already reports the most distinct instances allowed."""


class ServedRelease(BaseModel):
    """One entry an instance serves, as it reports it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt_set_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    version: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    content_sha256: Annotated[str, StringConstraints(pattern=_SHA256)]

    @field_validator("prompt_set_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return _refuse_unsafe(value)

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        _refuse_unsafe(value)
        if not SEMVER_RE.match(value):
            raise ValueError("it is not a semantic version")
        return value


class HeartbeatBody(BaseModel):
    """DESIGN §7's heartbeat: every field present (``null`` where allowed), nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    instance_id: Annotated[str, StringConstraints(pattern=_UUID)]
    hostname: Annotated[str, StringConstraints(max_length=255)]
    project_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    channel: Annotated[str, StringConstraints(pattern=_CHANNEL)]
    mode: Literal["accepting", "frozen"]
    sequence: Annotated[int, Field(ge=0, le=2**62)] | None
    releases: Annotated[list[ServedRelease], Field(max_length=RELEASES_MAX)]
    last_error: Annotated[str, StringConstraints(max_length=LAST_ERROR_MAX)] | None
    client_version: Annotated[str, StringConstraints(max_length=64)]
    #: Optional prompt usage since the last accepted report (issue 11, forge_app.usage).
    usage: UsageReport | None = None

    @field_validator("hostname", "client_version")
    @classmethod
    def _safe_text(cls, value: str) -> str:
        return _refuse_unsafe(value)

    @field_validator("last_error")
    @classmethod
    def _harmless_error(cls, value: str | None) -> str | None:
        return None if value is None else _clean_error(value)

    @field_validator("releases")
    @classmethod
    def _each_set_once(cls, value: list[ServedRelease]) -> list[ServedRelease]:
        seen: set[str] = set()
        for entry in value:
            if entry.prompt_set_id in seen:
                raise ValueError(f"it names prompt set {entry.prompt_set_id[:128]!r} twice")
            seen.add(entry.prompt_set_id)
        return sorted(value, key=lambda e: e.prompt_set_id)


def parse_heartbeat(data: bytes) -> HeartbeatBody:
    """Validate a heartbeat body.

    Raises:
        HeartbeatError: naming the first problem (too large, not JSON, a missing, unknown or
            mistyped field, a control or bidi character).
    """
    if len(data) > HEARTBEAT_MAX_SIZE:
        raise HeartbeatError(f"the heartbeat body is larger than {HEARTBEAT_MAX_SIZE} bytes")
    try:
        return HeartbeatBody.model_validate_json(data)
    except PydanticValidationError as e:
        raise HeartbeatError(_first_problem(e)) from None


def _first_problem(error: PydanticValidationError) -> str:
    problems = error.errors(include_url=False, include_input=False)
    if not problems:
        return "the heartbeat body is invalid"
    problem = problems[0]
    kind = problem.get("type", "")
    location = ".".join(str(part) for part in problem.get("loc", ()) if not isinstance(part, int))
    if kind == "json_invalid":
        return "the heartbeat body is not valid JSON"
    if not location:
        return "the heartbeat body must be a JSON object"
    if kind == "missing":
        return f"the heartbeat has no field {location!r}"
    if kind == "extra_forbidden":
        return f"the heartbeat has an unknown field {location!r}"
    message = str(problem.get("msg", "is invalid")).rstrip(".").removeprefix("Value error, ")
    return f"field {location!r} of the heartbeat is invalid: {message}"


# --- limits shared through the database ----------------------------------------------------


@dataclass(frozen=True)
class HeartbeatLimits:
    """The heartbeat limits (FORGE settings ``FORGE_HEARTBEAT_LIMIT``,
    ``FORGE_HEARTBEAT_TOKEN_LIMIT``, ``FORGE_HEARTBEAT_WINDOW``,
    ``FORGE_MAX_INSTANCES_PER_TOKEN``)."""

    per_instance: int = DEFAULT_HEARTBEAT_LIMIT
    per_token: int = DEFAULT_TOKEN_HEARTBEAT_LIMIT
    window: float = DEFAULT_HEARTBEAT_WINDOW
    max_instances: int = DEFAULT_MAX_INSTANCES_PER_TOKEN


class SlidingWindowLimiter:
    """At most ``limit`` events per key within any ``window`` seconds (in this process; the
    heartbeat API uses the database-shared :func:`count_heartbeat` instead).

    Thread-safe; remembers at most ``max_keys`` keys (the least recently used go first), so an
    endless stream of made-up keys cannot exhaust memory. With several server processes each
    has its own window, so the effective limit is ``limit`` times the number of processes.
    """

    def __init__(
        self,
        limit: int = DEFAULT_HEARTBEAT_LIMIT,
        window: float = DEFAULT_HEARTBEAT_WINDOW,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._clock = clock
        self._events: OrderedDict[Any, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: Any) -> float:
        """Count one event for ``key``; 0 if allowed, else the seconds until one would be."""
        now = self._clock()
        with self._lock:
            events = self._events.get(key)
            if events is None:
                events = self._events[key] = deque()
                while len(self._events) > self._max_keys:
                    self._events.popitem(last=False)
            else:
                self._events.move_to_end(key)
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return max(events[0] + self.window - now, 0.001)
            events.append(now)
            return 0.0


def number_setting(
    config: Mapping[str, Any], environ: Mapping[str, str], name: str, default: float
) -> float:
    """A positive number from the app config, else the environment, else ``default`` (an
    invalid value is reported by :class:`ValueError` naming the setting)."""
    raw = config.get(name)
    if raw is None or raw == "":
        raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}={str(raw)[:40]!r} is not a positive number")
    return value


#: The counters' upsert, the same SQL on PostgreSQL and SQLite (>= 3.35). Plain text: a
#: multi-row INSERT built with SQLAlchemy is compiled anew for every execution. Two rows, the
#: token's then the instance's; a row of an older window starts again at 1.
_HITS_SQL = text(
    "INSERT INTO heartbeat_counters (key, window_index, hits) "
    "VALUES (:token_key, :window, 1), (:instance_key, :window, 1) "
    "ON CONFLICT (key) DO UPDATE SET "
    "hits = CASE WHEN heartbeat_counters.window_index = excluded.window_index "
    "THEN heartbeat_counters.hits + 1 ELSE 1 END, "
    "window_index = excluded.window_index "
    "RETURNING key, hits"
)


def _hits(
    session: Session | Connection, token_key: str, instance_key: str, window_index: int
) -> dict[str, int]:
    """One atomic multi-row upsert (SQLite and PostgreSQL): each key's count in this window,
    this hit included. A key from an older window starts again at 1. Rows are locked in the
    same order (token, then instance) by every heartbeat, so concurrent ones cannot
    deadlock."""
    result = session.execute(
        _HITS_SQL,
        {"token_key": token_key, "instance_key": instance_key, "window": window_index},
    )
    return {str(key): int(hits) for key, hits in result}


def _check_hits(
    session: Session | Connection,
    token_hits: int,
    instance_hits: int,
    window_index: int,
    limits: HeartbeatLimits,
    now: float,
) -> None:
    retry_after = (window_index + 1) * limits.window - now
    if token_hits == 1:
        # The token's first heartbeat in a new window: clear every key of older windows.
        session.execute(
            delete(HeartbeatCounter).where(HeartbeatCounter.window_index < window_index)
        )
    if token_hits > limits.per_token:
        raise TooManyHeartbeats(
            f"too many heartbeats with this ACCESS_TOKEN (more than {limits.per_token} in "
            f"{limits.window:g} s); send fewer",
            retry_after,
        )
    if instance_hits > limits.per_instance:
        raise TooManyHeartbeats("too many heartbeats from this instance; send fewer", retry_after)


def count_heartbeat(
    session: Session | Connection,
    *,
    token_id: str,
    instance_id: str,
    limits: HeartbeatLimits,
    now: float,
) -> None:
    """Count one heartbeat against its token's and its (token, instance)'s fixed windows.

    The counters live in the database, so every FORGE process shares them; both are counted
    by one statement. The caller commits (also when this raises: a refused heartbeat counts
    too).

    Raises:
        TooManyHeartbeats: beyond either limit, with the seconds until the next window.
    """
    window_index = int(now // limits.window)
    token_key, instance_key = f"t:{token_id}", f"i:{token_id}:{instance_id}"
    hits = _hits(session, token_key, instance_key, window_index)
    _check_hits(session, hits[token_key], hits[instance_key], window_index, limits, now)


#: PostgreSQL: the counters' upsert and the known instance's update in one statement (one
#: round trip). The update happens only within both limits; the counts come back either way.
_COUNT_AND_UPDATE_SQL = text(
    "WITH hits AS ("
    "INSERT INTO heartbeat_counters (key, window_index, hits) "
    "VALUES (:token_key, :window, 1), (:instance_key, :window, 1) "
    "ON CONFLICT (key) DO UPDATE SET "
    "hits = CASE WHEN heartbeat_counters.window_index = excluded.window_index "
    "THEN heartbeat_counters.hits + 1 ELSE 1 END, "
    "window_index = excluded.window_index "
    "RETURNING key, hits), "
    "updated AS ("
    "UPDATE live_instances SET hostname = :hostname, channel = :channel, mode = :mode, "
    "sequence = :sequence, releases_json = CAST(:releases_json AS jsonb), "
    "last_error = :last_error, client_version = :client_version, last_seen_at = :now, "
    "token_rejected_at = NULL, archived_at = NULL "
    "WHERE project_id = :project_id AND instance_id = :instance_id AND token_id = :token_id "
    "AND (SELECT hits FROM hits WHERE key = :token_key) <= :per_token "
    "AND (SELECT hits FROM hits WHERE key = :instance_key) <= :per_instance "
    "RETURNING id) "
    "SELECT (SELECT hits FROM hits WHERE key = :token_key), "
    "(SELECT hits FROM hits WHERE key = :instance_key), (SELECT id FROM updated)"
).bindparams(bindparam("now", type_=UTCDateTime()))


def count_and_update_known(
    connection: Connection,
    *,
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    limits: HeartbeatLimits,
    clock: float,
    now: datetime,
) -> int | None:
    """PostgreSQL, in autocommit: :func:`count_heartbeat` and :func:`update_known_instance`
    as one statement. Returns the instance's row id, or None when it has no row with this
    token yet (then :func:`record_heartbeat` decides; the heartbeat is already counted).

    Raises:
        TooManyHeartbeats: as :func:`count_heartbeat` (the row is then left alone).
    """
    window_index = int(clock // limits.window)
    row = connection.execute(
        _COUNT_AND_UPDATE_SQL,
        {
            "token_key": f"t:{token_id}",
            "instance_key": f"i:{token_id}:{body.instance_id}",
            "window": window_index,
            "per_token": limits.per_token,
            "per_instance": limits.per_instance,
            "project_id": project_id,
            "instance_id": body.instance_id,
            "token_id": token_id,
            "hostname": body.hostname,
            "channel": body.channel,
            "mode": body.mode,
            "sequence": body.sequence,
            "releases_json": json.dumps([entry.model_dump() for entry in body.releases]),
            "last_error": body.last_error,
            "client_version": body.client_version,
            "now": now,
        },
    ).one()
    _check_hits(connection, int(row[0]), int(row[1]), window_index, limits, clock)
    return None if row[2] is None else int(row[2])


# --- recording ----------------------------------------------------------------------------


@functools.cache
def _known_instance_statement() -> Any:
    table: Table = LiveInstance.__table__  # type: ignore[assignment]
    return (
        update(table)
        .where(
            table.c.project_id == bindparam("w_project_id"),
            table.c.instance_id == bindparam("w_instance_id"),
            table.c.token_id == bindparam("w_token_id"),
        )
        .values(
            hostname=bindparam("hostname"),
            channel=bindparam("channel"),
            mode=bindparam("mode"),
            sequence=bindparam("sequence"),
            releases_json=bindparam("releases_json"),
            last_error=bindparam("last_error"),
            client_version=bindparam("client_version"),
            last_seen_at=bindparam("last_seen_at"),
            token_rejected_at=None,
            archived_at=None,
        )
        .returning(table.c.id)
    )


def update_known_instance(
    connection: Connection,
    *,
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    now: datetime,
) -> int | None:
    """The common case in one statement: the instance already reported with this very token,
    so no cap applies; update its row as :func:`record_heartbeat` would. Returns the row's id,
    or None when there is no such row (then :func:`record_heartbeat` decides)."""
    found = connection.execute(
        _known_instance_statement(),
        {
            "w_project_id": project_id,
            "w_instance_id": body.instance_id,
            "w_token_id": token_id,
            "hostname": body.hostname,
            "channel": body.channel,
            "mode": body.mode,
            "sequence": body.sequence,
            "releases_json": [entry.model_dump() for entry in body.releases],
            "last_error": body.last_error,
            "client_version": body.client_version,
            "last_seen_at": now,
        },
    ).scalar()
    return None if found is None else int(found)


def record_heartbeat(
    session: Session,
    *,
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    now: datetime | None = None,
    max_instances: int | None = None,
) -> LiveInstance:
    """Create or update the instance's row from an accepted heartbeat (the caller commits).

    Raises:
        TooManyInstances: if this token would report more than ``max_instances`` distinct
            instances that are not archived.
    """
    now = now or utcnow()
    instance = _find(session, project_id, body.instance_id)
    if max_instances is not None and (instance is None or instance.token_id != token_id):
        _check_cap(session, token_id, max_instances)
    if instance is None:
        instance = LiveInstance(
            project_id=project_id, instance_id=body.instance_id, first_seen_at=now
        )
        try:
            with session.begin_nested():
                _apply(instance, token_id, body, now)
                session.add(instance)
        except IntegrityError:
            # Two first heartbeats of one instance raced; the other created the row.
            instance = _find(session, project_id, body.instance_id)
            if instance is None:  # pragma: no cover - the row that conflicted is gone again
                raise
            _apply(instance, token_id, body, now)
    else:
        _apply(instance, token_id, body, now)
    instance.token_rejected_at = None
    instance.archived_at = None
    return instance


def _check_cap(session: Session, token_id: str, max_instances: int) -> None:
    count = session.scalar(
        select(func.count(LiveInstance.id)).where(
            LiveInstance.token_id == token_id, LiveInstance.archived_at.is_(None)
        )
    )
    if (count or 0) >= max_instances:
        raise TooManyInstances(
            f"this ACCESS_TOKEN already reports {max_instances} instances, the most allowed "
            "(FORGE_MAX_INSTANCES_PER_TOKEN); an owner can forget silent ones"
        )


def record_rejected_heartbeat(
    session: Session,
    *,
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    now: datetime | None = None,
) -> LiveInstance | None:
    """A heartbeat signed with a *revoked* token: update the instance that used that token, so
    the FORGE shows it as revoked with the error it reports. Never creates a row."""
    now = now or utcnow()
    instance = _find(session, project_id, body.instance_id)
    if instance is None or instance.token_id != token_id:
        return None
    _apply(instance, token_id, body, now)
    instance.token_rejected_at = now
    instance.archived_at = None
    return instance


def _find(session: Session, project_id: uuid.UUID, instance_id: str) -> LiveInstance | None:
    return session.scalar(
        select(LiveInstance).where(
            LiveInstance.project_id == project_id, LiveInstance.instance_id == instance_id
        )
    )


def _apply(instance: LiveInstance, token_id: str, body: HeartbeatBody, now: datetime) -> None:
    instance.token_id = token_id
    instance.hostname = body.hostname
    instance.channel = body.channel
    instance.mode = body.mode
    instance.sequence = body.sequence
    instance.releases = [entry.model_dump() for entry in body.releases]
    instance.last_error = body.last_error
    instance.client_version = body.client_version
    instance.last_seen_at = now
