"""The ``anvil.toml`` that ``anvil init`` and ``anvil connect`` write (DESIGN §9).

    >>> print(toml_string('say "hi"'))
    "say \\"hi\\""

Values are written as TOML basic strings by :func:`toml_string` (quotes, backslashes, control
characters and DEL escaped), so any text reads back unchanged with ``tomllib``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anvil_client._config import WRITTEN_KEYS
from anvil_client.errors import ConfigError
from anvil_client.stores import write_atomically


def write_config(path: Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` (the keys ``anvil connect`` knows) to ``path``, atomically."""
    lines = [
        "# Anvil LIVE client settings (DESIGN §9). Environment variables ANVIL_* override them.",
        "# The ACCESS_TOKEN is never stored here: it is read from the variable access_token_env.",
    ]
    placeholders = {
        "store": '"s3://bucket/prefix"',
        "project_id": '"00000000-0000-0000-0000-000000000000"',
        "trusted_keys": '["ed25519:…"]',
    }
    for key in WRITTEN_KEYS:
        value = settings.get(key)
        if value:
            lines.append(f"{key} = {_toml_value(value)}")
        elif key in placeholders:
            lines.append(f"# {key} = {placeholders[key]}")
    try:
        data = ("\n".join(lines) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: undecodable bytes in a command-line argument
        raise ConfigError(
            f"a setting is not valid Unicode text; {path.name} was not written"
        ) from None
    write_atomically(path, data)


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return toml_string(str(value))


_TOML_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """Return ``text`` as a TOML basic string: quotes, backslashes, controls and DEL escaped."""
    out = []
    for char in text:
        if char in _TOML_SHORT_ESCAPES:
            out.append(_TOML_SHORT_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
