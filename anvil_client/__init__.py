"""Anvil's LIVE client: signed, encrypted prompts pulled from object storage, rendered locally.

    >>> import anvil_client
    >>> anvil_client.prompt("welcome.message", name="Ada")  # doctest: +SKIP

The module-level functions use a default client configured from ``ANVIL_*`` environment
variables and ``./anvil.toml`` on first use (or by :func:`configure`); :class:`AnvilClient`
makes explicit instances. Errors are in :mod:`anvil_client.errors`, the wire format in
:mod:`anvil_client.wire`, stores in :mod:`anvil_client.stores`.

``import anvil_client`` itself loads almost nothing: the client, its configuration and the
wire format (pydantic, cryptography, Jinja2) are imported on first use of a name below
(PEP 562), so an application pays for them when it builds its client, not when it imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anvil_client.errors import AnvilError, PromptNotFound

if TYPE_CHECKING:
    from anvil_client._client import AnvilClient, Status
    from anvil_client._config import ClientConfig
    from anvil_client._default import configure, messages, prompt, record, status, template

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
    "record",
    "status",
    "template",
]

_LAZY = {
    "AnvilClient": "anvil_client._client",
    "Status": "anvil_client._client",
    "configure": "anvil_client._default",
    "messages": "anvil_client._default",
    "prompt": "anvil_client._default",
    "record": "anvil_client._default",
    "status": "anvil_client._default",
    "template": "anvil_client._default",
    "ClientConfig": "anvil_client._config",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from anvil_client._timing import client_version

        return client_version()
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'anvil_client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
