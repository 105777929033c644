"""The module-level default client behind ``anvil_client.prompt()`` and friends.

>>> import anvil_client
>>> callable(anvil_client.prompt)
True
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from anvil_client._client import AnvilClient, Status
from anvil_client._config import ClientConfig

P = ParamSpec("P")
R = TypeVar("R")

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


def _on_default_client(
    method: Callable[Concatenate[AnvilClient, P], R], doc: str
) -> Callable[P, R]:
    """``method`` called on the default client: its parameters (less ``self``), for
    ``help()``, :func:`inspect.signature` and type checkers alike, are written once."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(_default or default_client(), *args, **kwargs)

    signature = inspect.signature(method)
    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = doc
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    return call


record = _on_default_client(
    AnvilClient.record,
    """:meth:`AnvilClient.record` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        TypeError: for an argument of the wrong type.
        ValueError: for a negative or non-finite number, or an empty prompt id.
    """,
)


def status() -> Status:
    """:meth:`AnvilClient.status` of the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
    """
    return (_default or default_client()).status()
