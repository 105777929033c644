"""The client's clock and its schedule: intervals, jitter, backoff (pure arithmetic).

    >>> from anvil_client._timing import backoff_delay
    >>> 30.0 <= backoff_delay(30.0, failures=1) <= 60.0
    True

Everything that decides *when* the background threads act next is a constant or a function here;
``_scheduler`` runs the loop, ``_poller`` asks for the next poll time after each poll.
"""

from __future__ import annotations

import contextlib
import gc
import random
from collections.abc import Iterator
from datetime import UTC, datetime

from anvil_client.errors import AnvilError
from anvil_client.wire import parse_timestamp

#: How often every process looks at the disk cache (a few stat calls) at most.
DISK_CHECK_INTERVAL = 1.0
#: The longest pause between polls after repeated errors.
MAX_BACKOFF = 600.0
#: The poller shares times in ``state.json`` at least this often (and at once when an error
#: appears or clears, or a new pointer or ETag arrives); at most every
#: ``max(2 x poll_interval, STATE_SHARE_MIN)`` when nothing changes.
STATE_SHARE_MIN = 5.0
#: ``pointer.json``/``state.json``/``mode.json`` are re-read in full (beyond the stat
#: signature) at most every ``max(10 x poll_interval, FULL_COMPARE_MIN)`` seconds.
FULL_COMPARE_MIN = 10.0
#: After a new release is applied, heartbeats go every 30 s for 15 minutes (issue 11).
FAST_HEARTBEAT_INTERVAL = 30.0
FAST_HEARTBEAT_WINDOW = 900.0
#: A process that sends no heartbeats hands its usage counts to the one that does this often.
USAGE_HAND_OVER_INTERVAL = 15.0
#: An old FORGE refused ``usage``: it is not sent to it again for this long (counts are kept).
USAGE_RETRY_AFTER = 3600.0
#: A hint makes the leader poll after a random delay up to this (spreads a fleet's requests)...
HINT_JITTER = 0.25
#: ...and at most once per this many seconds, whatever the stream says.
HINT_MIN_SPACING = 1.0


def poll_delay(interval: float) -> float:
    """The pause after a good poll: ``interval`` with +-10 % jitter (a fleet does not align)."""
    return interval * random.uniform(0.9, 1.1)


def backoff_delay(interval: float, *, failures: int) -> float:
    """The pause after ``failures`` failed polls in a row: exponential, jittered, capped."""
    cap = max(interval, min(10 * interval, MAX_BACKOFF))
    base = min(cap, interval * 2.0 ** min(failures, 16))
    return base * random.uniform(0.5, 1.0)


def hint_poll_time(now: float, last_hint_poll: float) -> float:
    """When to poll after a hint: a random delay up to ``HINT_JITTER``, spaced by
    ``HINT_MIN_SPACING`` from the last hint poll."""
    return max(now + random.uniform(0.0, HINT_JITTER), last_hint_poll + HINT_MIN_SPACING)


_VERSION: str | None = None


def client_version() -> str:
    """The installed ``anvil-prompts`` version (looked up once, lazily)."""
    global _VERSION
    if _VERSION is None:
        from importlib import metadata

        try:
            _VERSION = metadata.version("anvil-prompts")
        except metadata.PackageNotFoundError:
            _VERSION = "0+unknown"
    return _VERSION


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Parsing a large bundle allocates tens of thousands of containers that all survive;
    the cyclic collector would scan them again and again (more than halving load time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_timestamp(text)
    except AnvilError:
        return None


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
