"""Canonical JSON and hashing shared by every wire object."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from anvil_client.errors import FormatError


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` the way publishers must (DESIGN §3): sorted keys, no spaces, UTF-8.

    Raises:
        ValueError: for NaN or infinite floats, which JSON cannot carry.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def b64encode_std(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode_any(text: object, what: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding.

    Raises:
        FormatError: if ``text`` is not a base64 string.
    """
    if not isinstance(text, str):
        raise FormatError(f"{what} is not a base64 string")
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as e:
        raise FormatError(f"{what} is not valid base64") from e


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object.

    Duplicate member names, ``NaN`` and ``Infinity`` are refused: two parsers must never
    read different values out of the same signed or hashed bytes.

    Raises:
        FormatError: if the bytes are not UTF-8 JSON, not an object, or repeat a member name.
    """
    try:
        value = json.loads(
            data.decode("utf-8"),
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_members,
        )
    except _DuplicateMember as e:
        raise FormatError(f"{what} repeats the member {e.name[:100]!r}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"{what} is not valid UTF-8 JSON") from e
    if not isinstance(value, dict):
        raise FormatError(f"{what} is not a JSON object")
    return value


class _DuplicateMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateMember(name)
            seen.add(name)
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
