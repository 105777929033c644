"""The times a publisher is given: a pointer's expiry and durations like ``30d``.

>>> from publisher._time import parse_duration
>>> parse_duration("12h").total_seconds()
43200.0
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from anvil_client.errors import ConfigError
from anvil_client.wire import format_timestamp, parse_timestamp

__all__ = ["Expiry", "expiry_of", "parse_duration"]

Expiry = datetime | timedelta | str | None
"""An absolute time (aware datetime or RFC 3339 text), a lifetime from now, or no expiry."""

_DURATION_RE = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def expiry_of(expires_at: Expiry, now: datetime) -> str | None:
    """RFC 3339 text of an absolute or relative expiry, which must lie in the future.

    Raises:
        ConfigError: if it is malformed, naive or not in the future.
    """
    if expires_at is None:
        return None
    if isinstance(expires_at, timedelta):
        moment = now + expires_at
    elif isinstance(expires_at, datetime):
        if expires_at.tzinfo is None:
            raise ConfigError("expires_at must be a time-zone-aware datetime")
        moment = expires_at
    else:
        try:
            moment = parse_timestamp(expires_at)
        except Exception as e:
            raise ConfigError(f"expires_at {str(expires_at)[:64]!r} is not a timestamp") from e
    if moment <= now:
        raise ConfigError(f"expires_at {format_timestamp(moment)} is not in the future")
    return format_timestamp(moment.astimezone(UTC))


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m``, ``90s`` or ``2w``.

    Raises:
        ConfigError: for anything else, or zero.
    """
    match = _DURATION_RE.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(
            f"duration {text[:32]!r} is invalid: use a positive number and a unit s, m, h, d or w "
            "(like 30d or 12h)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
