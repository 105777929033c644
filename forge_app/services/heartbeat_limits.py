"""The heartbeat limits every FORGE process shares through the database (issue 14 §2).

    >>> HeartbeatLimits().per_instance
    12

:func:`count_heartbeat` counts one heartbeat against its token's and its (token, instance)'s
fixed windows with one atomic upsert (SQLite and PostgreSQL); the PostgreSQL fast path of the
API does the same inside one statement (:mod:`forge_app.services.heartbeat_ingest`).
:class:`SlidingWindowLimiter` is the in-process limiter other endpoints use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from forge_app.models.instances import HeartbeatCounter

__all__ = [
    "DEFAULT_HEARTBEAT_LIMIT",
    "DEFAULT_HEARTBEAT_WINDOW",
    "DEFAULT_MAX_INSTANCES_PER_TOKEN",
    "DEFAULT_TOKEN_HEARTBEAT_LIMIT",
    "HeartbeatLimits",
    "SlidingWindowLimiter",
    "TooManyHeartbeats",
    "check_hits",
    "count_heartbeat",
    "counter_keys",
    "limits_from",
    "number_setting",
    "setting_or_default",
]

log = logging.getLogger("forge.heartbeats")

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


class TooManyHeartbeats(Exception):
    """Beyond a heartbeat rate limit; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


def setting_or_default(config: Mapping[str, Any], name: str, default: float) -> float:
    """:func:`number_setting` from ``config``, else the environment; an invalid value is
    logged (one line naming it) and ``default`` used."""

    try:
        return number_setting(config, os.environ, name, default)
    except ValueError as e:
        log.warning("%s; using %g", e, default)
        return default


def limits_from(config: Mapping[str, Any]) -> HeartbeatLimits:
    """The heartbeat limits from the app's settings (app config, else environment)."""
    return HeartbeatLimits(
        per_instance=int(
            setting_or_default(config, "FORGE_HEARTBEAT_LIMIT", DEFAULT_HEARTBEAT_LIMIT)
        ),
        per_token=int(
            setting_or_default(config, "FORGE_HEARTBEAT_TOKEN_LIMIT", DEFAULT_TOKEN_HEARTBEAT_LIMIT)
        ),
        window=setting_or_default(config, "FORGE_HEARTBEAT_WINDOW", DEFAULT_HEARTBEAT_WINDOW),
        max_instances=int(
            setting_or_default(
                config, "FORGE_MAX_INSTANCES_PER_TOKEN", DEFAULT_MAX_INSTANCES_PER_TOKEN
            )
        ),
    )


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


def counter_keys(token_id: str, instance_id: str) -> tuple[str, str]:
    """The counter rows of a token and of one of its instances."""
    return f"t:{token_id}", f"i:{token_id}:{instance_id}"


def check_hits(
    session: Session | Connection,
    token_hits: int,
    instance_hits: int,
    window_index: int,
    limits: HeartbeatLimits,
    now: float,
) -> None:
    """Raise :class:`TooManyHeartbeats` beyond either limit (counts include this hit); the
    token's first hit of a window also clears every counter of older windows."""
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
    token_key, instance_key = counter_keys(token_id, instance_id)
    hits = _hits(session, token_key, instance_key, window_index)
    check_hits(session, hits[token_key], hits[instance_key], window_index, limits, now)
