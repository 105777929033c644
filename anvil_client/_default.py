"""The module-level default client behind ``anvil_client.prompt()`` and friends.

>>> import anvil_client
>>> callable(anvil_client.prompt)
True
"""

from __future__ import annotations

import os
import threading
from typing import Any

from anvil_client._client import AnvilClient, Status
from anvil_client._config import ClientConfig

_default: AnvilClient | None = None
_default_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def configure(*, config: ClientConfig | None = None, **settings: Any) -> AnvilClient:
    """(Re)configure the default client behind ``anvil_client.prompt()`` and friends.

    Settings are keyword arguments of :class:`AnvilClient`; anything not given comes from
    ``ANVIL_*`` env vars and ``./anvil.toml``. The disk cache is read here, once.

    Raises:
        ConfigError: if the configuration is incomplete or invalid.
    """
    global _default
    client = AnvilClient(config=config) if config is not None else AnvilClient.from_env(**settings)
    with _default_lock:
        old, _default = _default, client
    if old is not None:
        old.close()
    return client


def default_client() -> AnvilClient:
    """The default client, configured from the environment on first use.

    Raises:
        ConfigError: if the environment does not configure a client.
    """
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                _default = AnvilClient.from_env()
            client = _default
    return client


def prompt(prompt_id: str, /, *, fallback: str | None = None, **variables: Any) -> str:
    """:meth:`AnvilClient.prompt` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        PromptNotFound: if the prompt is not served and no fallback is given.
        RenderError: if rendering fails (MissingVariable names the variable).
    """
    return (_default or default_client()).prompt(prompt_id, fallback=fallback, **variables)


def messages(prompt_id: str, /, **variables: Any) -> list[dict[str, str]]:
    """:meth:`AnvilClient.messages` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        PromptNotFound: if the prompt is not served.
        RenderError: if rendering fails.
    """
    return (_default or default_client()).messages(prompt_id, **variables)


def template(prompt_id: str, /) -> str:
    """:meth:`AnvilClient.template` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        PromptNotFound: if the prompt is not served.
    """
    return (_default or default_client()).template(prompt_id)


def record(
    prompt_id: str,
    /,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    latency_ms: float | None = None,
    error: object = None,
) -> None:
    """:meth:`AnvilClient.record` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        TypeError: for an argument of the wrong type.
        ValueError: for a negative or non-finite number, or an empty prompt id.
    """
    (_default or default_client()).record(
        prompt_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        error=error,
    )


def status() -> Status:
    """:meth:`AnvilClient.status` of the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
    """
    return (_default or default_client()).status()
