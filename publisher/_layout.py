"""The small argument checks every publisher operation shares (channel, keys, recipients, expiry).

    >>> from publisher._layout import parse_duration
    >>> parse_duration("12h").total_seconds()
    43200.0

Object paths and size caps are not here: they live once, in ``anvil_client.wire``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from anvil_client.errors import ConfigError
from anvil_client.wire import (
    CHANNEL_RE,
    AccessToken,
    TrustedKey,
    format_timestamp,
    key_id,
    parse_timestamp,
)

_TOKEN_ID_RE = re.compile(r"^[a-z0-9]{12}$")

KeyLike = TrustedKey | Ed25519PublicKey | str
Recipients = Mapping[str, bytes] | Sequence[str] | Sequence[AccessToken]


def check_channel(channel: str) -> None:
    """Raises: ConfigError: if ``channel`` is not a valid channel name (DESIGN §1)."""
    if not isinstance(channel, str) or not CHANNEL_RE.match(channel):
        raise ConfigError(
            f"channel {str(channel)[:40]!r} is invalid: use 1-32 lowercase letters, digits and "
            "'-', starting with a letter or digit"
        )


def trusted_keys_of(keys: Iterable[KeyLike]) -> list[TrustedKey]:
    """Normalize ``ed25519:…``/PEM texts, public keys and TrustedKeys.

    Raises:
        ConfigError: if a text is not a public key.
    """
    out: list[TrustedKey] = []
    for key in keys:
        if isinstance(key, TrustedKey):
            out.append(key)
        elif isinstance(key, Ed25519PublicKey):
            out.append(TrustedKey(keyid=key_id(key), key=key))
        else:
            out.append(TrustedKey.parse(key))
    return out


def resolve_recipients(
    recipients: Recipients | None, *, plaintext: bool
) -> dict[str, bytes] | None:
    """``token_id -> KEK`` for encryption, or None for a plaintext publish.

    Accepts a mapping of token id to 32-byte KEK, ACCESS_TOKEN texts, or AccessTokens.

    Raises:
        ConfigError: no recipients without ``plaintext``, both, a malformed token or KEK,
            or one token id given with two different secrets.
    """
    if plaintext:
        if recipients:
            raise ConfigError("give either recipients or plaintext, not both")
        return None
    if not recipients:
        raise ConfigError(
            "refusing to publish without recipients: give at least one ACCESS_TOKEN "
            "(or publish unencrypted on purpose with plaintext)"
        )
    keks: dict[str, bytes] = {}
    if isinstance(recipients, Mapping):
        pairs = list(recipients.items())
    else:
        if isinstance(recipients, str):
            raise ConfigError("recipients must be a list of ACCESS_TOKENs, not one string")
        pairs = []
        for item in recipients:
            token = item if isinstance(item, AccessToken) else AccessToken.parse(item)
            pairs.append((token.token_id, token.kek()))
    for token_id, kek in pairs:
        if not isinstance(token_id, str) or not _TOKEN_ID_RE.match(token_id):
            raise ConfigError(f"recipient id {str(token_id)[:20]!r} is not a 12-character token id")
        if not isinstance(kek, bytes) or len(kek) != 32:
            raise ConfigError(f"the key for recipient {token_id} must be 32 bytes")
        if keks.get(token_id, kek) != kek:
            raise ConfigError(f"recipient {token_id} is given twice with different secrets")
        keks[token_id] = kek
    return keks


def expiry_of(expires_at: datetime | timedelta | str | None, now: datetime) -> str | None:
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


_DURATION_RE = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


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
