"""Anvil's LIVE client: signed, encrypted prompts pulled from object storage, rendered locally.

    >>> import anvil_client
    >>> anvil_client.prompt("welcome.message", name="Ada")  # doctest: +SKIP

The module-level functions use a default client configured from ``ANVIL_*`` environment
variables and ``./anvil.toml`` on first use (or by :func:`configure`); :class:`AnvilClient`
makes explicit instances. Errors are in :mod:`anvil_client.errors`, the wire format in
:mod:`anvil_client.wire`, stores in :mod:`anvil_client.stores`.
"""

from __future__ import annotations

from typing import Any

from anvil_client._client import (
    AnvilClient,
    Status,
    configure,
    messages,
    prompt,
    status,
    template,
)
from anvil_client._config import ClientConfig
from anvil_client.errors import AnvilError, PromptNotFound

__all__ = [
    "AnvilClient",
    "AnvilError",
    "ClientConfig",
    "PromptNotFound",
    "Status",
    "__version__",
    "configure",
    "messages",
    "prompt",
    "status",
    "template",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from anvil_client._client import client_version

        return client_version()
    raise AttributeError(f"module 'anvil_client' has no attribute {name!r}")
