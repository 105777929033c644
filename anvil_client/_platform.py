"""The one place that touches ``fcntl``: the client runs on Linux, macOS and other POSIX systems.

On a platform without ``fcntl`` (Windows) ``import anvil_client`` still works; configuring a
client raises one :class:`~anvil_client.errors.ConfigError` that says why.
"""

from __future__ import annotations

from types import ModuleType

from anvil_client.errors import ConfigError

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - exercised by a test that hides the module
    _fcntl = None  # type: ignore[assignment]

_fcntl_module: ModuleType | None = _fcntl

UNSUPPORTED = (
    "Anvil's LIVE client needs file locks (fcntl), which this platform does not have: "
    "it runs on Linux, macOS and other POSIX systems"
)


def check_platform() -> None:
    """Raise :class:`ConfigError` on a platform the client does not support."""
    _require()


def lock(fd: int, *, blocking: bool = True) -> None:
    """Take an exclusive ``flock`` on ``fd``; without ``blocking``, ``OSError`` if it is held."""
    fcntl = _require()
    fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)


def unlock(fd: int) -> None:
    """Release a lock taken by :func:`lock`."""
    fcntl = _require()
    fcntl.flock(fd, fcntl.LOCK_UN)


def _require() -> ModuleType:
    if _fcntl_module is None:
        raise ConfigError(UNSUPPORTED)
    return _fcntl_module
