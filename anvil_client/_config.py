"""Client configuration: one frozen dataclass and the one place that resolves its sources.

    >>> from anvil_client import ClientConfig
    >>> key = "ed25519:uhIT/MMJEKl24xuQ440NefwCbt8ZIJmSkGXOsN/iI/k="
    >>> ClientConfig(store="file:///tmp/s", project_id="p1", trusted_keys=(key,)).channel
    'production'

Precedence (DESIGN §9): keyword arguments > ``ANVIL_*`` environment variables > ``anvil.toml``
(or ``[tool.anvil]`` in ``pyproject.toml``) > defaults. The file never holds the ACCESS_TOKEN: its
``access_token_env`` names the environment variable that does.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from anvil_client._heartbeat import check_token_transport
from anvil_client._platform import check_platform
from anvil_client.errors import ConfigError
from anvil_client.stores import DEFAULT_MAX_SIZE, ObjectStore
from anvil_client.wire import CHANNEL_RE, DEFAULT_MAX_OUTPUT, AccessToken, TrustedKey

Mode = Literal["accepting", "frozen"]
MODES: tuple[Mode, ...] = ("accepting", "frozen")
CONFIG_FILE = "anvil.toml"
DEFAULT_CACHE_DIR = ".anvil_cache"
DEFAULT_TOKEN_ENV = "ANVIL_ACCESS_TOKEN"  # noqa: S105 - the name of a variable
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_HEARTBEAT_INTERVAL = 300.0
PROJECT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")

ENV_VARS: Mapping[str, str] = {
    "store": "ANVIL_STORE",
    "project_id": "ANVIL_PROJECT_ID",
    "channel": "ANVIL_CHANNEL",
    "access_token": DEFAULT_TOKEN_ENV,
    "trusted_keys": "ANVIL_TRUSTED_KEYS",
    "cache_dir": "ANVIL_CACHE_DIR",
    "mode": "ANVIL_MODE",
    "poll_interval": "ANVIL_POLL_INTERVAL",
    "forge_url": "ANVIL_FORGE_URL",
    "bootstrap": "ANVIL_BOOTSTRAP",
    "hints": "ANVIL_HINTS",
    "usage": "ANVIL_USAGE",
}
#: The keys ``anvil init`` and ``anvil connect`` write to ``anvil.toml``, in that order.
WRITTEN_KEYS = (
    "store",
    "project_id",
    "channel",
    "access_token_env",
    "trusted_keys",
    "cache_dir",
    "mode",
    "forge_url",
)
FILE_KEYS = frozenset(
    {
        *WRITTEN_KEYS,
        "poll_interval",
        "bootstrap",
        "heartbeat_interval",
        "max_bundle_size",
        "hints",
        "usage",
    }
)
_PATH_KEYS = ("cache_dir", "bootstrap")
_NUMBER_KEYS = ("poll_interval", "heartbeat_interval")
_BOOL_KEYS = ("hints", "usage")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Everything an :class:`~anvil_client.AnvilClient` needs, validated on construction.

    Raises:
        ConfigError: for a missing store, project id or trusted key, or any invalid value.
    """

    store: str | ObjectStore
    project_id: str
    channel: str = "production"
    access_token: str | None = field(default=None, repr=False)
    trusted_keys: tuple[str, ...] = ()
    cache_dir: Path = Path(DEFAULT_CACHE_DIR)
    mode: Mode = "accepting"
    poll_interval: float = DEFAULT_POLL_INTERVAL
    forge_url: str | None = None
    bootstrap: Path | None = None
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    max_bundle_size: int = DEFAULT_MAX_SIZE
    max_output: int = DEFAULT_MAX_OUTPUT
    access_token_env: str = DEFAULT_TOKEN_ENV
    #: Hold the FORGE's hint stream (needs ``forge_url``; only the leader, only ACCEPTING).
    hints: bool = False
    #: Count renders, errors and ``record()`` outcomes and report them on heartbeats.
    usage: bool = True
    #: Names of the settings that came from an argument, the environment or a file.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)
    #: The file the settings were read from, if any.
    source_file: Path | None = field(default=None, compare=False)
    _keys: tuple[TrustedKey, ...] = field(init=False, repr=False, compare=False)
    _token: AccessToken | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_platform()
        # Every value is checked and normalised first (in field order: the first problem is
        # the one reported), then set once.
        resolved: dict[str, Any] = {}
        for name, check in _CHECKS.items():
            resolved[name] = value = check(getattr(self, name))
            if name == "trusted_keys":  # parsed here: a bad key is reported before later fields
                resolved["_keys"] = tuple(TrustedKey.parse(text) for text in value)
            elif name == "access_token":
                resolved["_token"] = AccessToken.parse(value) if value else None
        for name, value in resolved.items():
            object.__setattr__(self, name, value)  # frozen: the one place values are set

    @property
    def keys(self) -> tuple[TrustedKey, ...]:
        """The parsed trusted keys."""
        return self._keys

    @property
    def token(self) -> AccessToken | None:
        """The parsed ACCESS_TOKEN, if one is configured."""
        return self._token

    @property
    def store_url(self) -> str:
        return self.store if isinstance(self.store, str) else self.store.url

    @property
    def mode_source(self) -> Literal["config", "default"]:
        return "config" if "mode" in self.explicit or self.mode != "accepting" else "default"

    @classmethod
    def from_env(
        cls, *, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ClientConfig:
        """Resolve arguments > ``ANVIL_*`` > ``./anvil.toml`` or ``./pyproject.toml`` > defaults.

        Raises:
            ConfigError: if the result is incomplete or invalid, or the file is malformed.
        """
        return cls.load(None, environ=environ, **overrides)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ClientConfig:
        """Resolve arguments > ``ANVIL_*`` > the given TOML file > defaults.

        ``path`` is an ``anvil.toml`` or a ``pyproject.toml`` with a ``[tool.anvil]`` table;
        relative paths inside it are relative to the file.

        Raises:
            ConfigError: if the file is missing or malformed, or the result is invalid.
        """
        return cls.load(Path(path), environ=environ, **overrides)

    @classmethod
    def load(
        cls,
        path: Path | None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ClientConfig:
        """``from_file`` when ``path`` is given, else ``from_env`` with file discovery in ``.``.

        Raises:
            ConfigError: as :meth:`from_file`.
        """
        env = os.environ if environ is None else environ
        unknown = set(overrides) - _FIELD_NAMES
        if unknown:
            raise ConfigError(f"unknown client setting {sorted(unknown)[0]!r}")
        if path is None:
            path = discover_config_file(Path.cwd())
        values: dict[str, Any] = {}
        if path is not None:
            values.update(read_config_file(path))
        token_env = str(
            overrides.get("access_token_env") or values.pop("access_token_env", DEFAULT_TOKEN_ENV)
        )
        values.pop("access_token_env", None)
        if token_env and env.get(token_env):
            values["access_token"] = env[token_env]
        for name, var in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if raw:
                values[name] = _from_env_text(name, var, raw)
        values.update(
            {k: v for k, v in overrides.items() if v is not None and k != "access_token_env"}
        )
        explicit = frozenset(values)
        values["access_token_env"] = token_env or DEFAULT_TOKEN_ENV
        for required in ("store", "project_id"):
            values.setdefault(required, "")
        return cls(**values, explicit=explicit, source_file=path)


_FIELD_NAMES = frozenset(ClientConfig.__dataclass_fields__) - {
    "_keys",
    "_token",
    "explicit",
    "source_file",
}


def _check_store(store: object) -> str | ObjectStore:
    if isinstance(store, str):
        if not store.strip():
            raise ConfigError(_missing("store"))
        return store.strip()
    if not isinstance(store, ObjectStore):
        raise ConfigError("store must be a store URL or an ObjectStore")
    return store


def _check_project_id(project_id: str) -> str:
    if not project_id:
        raise ConfigError(_missing("project_id"))
    if not PROJECT_ID_RE.match(project_id):
        raise ConfigError(f"project_id {project_id[:140]!r} is not a project id (a UUID)")
    return project_id


def _check_channel(channel: str) -> str:
    if not CHANNEL_RE.match(channel):
        raise ConfigError(f"channel {channel[:40]!r} is invalid: use 1-32 of a-z, 0-9 and '-'")
    return channel


def _check_trusted_keys(value: object) -> tuple[str, ...]:
    keys = _as_key_texts(value)
    if not keys:
        raise ConfigError(_missing("trusted_keys"))
    return keys


def _check_token(token: str | None) -> str | None:
    return (token.strip() if token else None) or None


def _positive_bytes(name: str) -> Callable[[object], int]:
    def check(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive number of bytes")
        return value

    return check


def _boolean(name: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false")
        return value

    return check


#: How each field is checked and normalised, in the order the checks run.
_CHECKS: Mapping[str, Callable[[Any], Any]] = {
    "store": _check_store,
    "project_id": _check_project_id,
    "channel": _check_channel,
    "trusted_keys": _check_trusted_keys,
    "access_token": _check_token,
    "cache_dir": Path,
    "bootstrap": lambda value: None if value is None else Path(value),
    "mode": lambda value: parse_mode(str(value)),
    "poll_interval": lambda value: _positive_seconds("poll_interval", value),
    "heartbeat_interval": lambda value: _positive_seconds("heartbeat_interval", value),
    "max_bundle_size": _positive_bytes("max_bundle_size"),
    "max_output": _positive_bytes("max_output"),
    "forge_url": lambda value: None if value is None else _check_forge_url(value),
    "hints": _boolean("hints"),
    "usage": _boolean("usage"),
}


def discover_config_file(directory: Path) -> Path | None:
    """``anvil.toml`` in ``directory``, else its ``pyproject.toml`` if it has ``[tool.anvil]``."""
    candidate = directory / CONFIG_FILE
    if candidate.is_file():
        return candidate
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        import tomllib  # only when there is a file to read

        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
        if isinstance(data.get("tool"), dict) and "anvil" in data["tool"]:
            return pyproject
    return None


def _load_toml(path: Path) -> dict[str, Any]:
    """Raises: ConfigError: if the file cannot be read or is not UTF-8 TOML."""
    import tomllib  # only when there is a file to read

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of an ``anvil.toml`` (or ``[tool.anvil]``), relative paths resolved.

    Raises:
        ConfigError: if the file cannot be read, is not TOML, holds an unknown key or a token.
    """
    data = _load_toml(path)
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        data = tool.get("anvil", {}) if isinstance(tool, dict) else {}
        if not isinstance(data, dict):
            raise ConfigError(f"[tool.anvil] in {path} must be a table")
    if "access_token" in data:
        raise ConfigError(
            f"{path} must not contain the ACCESS_TOKEN; set access_token_env to the name of "
            "the environment variable that holds it"
        )
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in {path}")
    for key, value in data.items():
        _check_file_value(path, key, value)
    for key in _PATH_KEYS:
        if key in data:
            data[key] = path.parent / Path(data[key]).expanduser()
    return data


def _check_file_value(path: Path, key: str, value: object) -> None:
    if key == "trusted_keys":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"trusted_keys in {path} must be a list of strings")
    elif key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} in {path} must be true or false")
    elif key in _NUMBER_KEYS or key == "max_bundle_size":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} in {path} must be a number")
    elif not isinstance(value, str):
        raise ConfigError(f"{key} in {path} must be a string")


def _from_env_text(name: str, var: str, raw: str) -> Any:
    if name == "trusted_keys":
        return [part.strip() for part in raw.split(",") if part.strip()]
    if name in _NUMBER_KEYS:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{var} must be a number of seconds, got {raw[:40]!r}") from None
    if name in _BOOL_KEYS:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{var} must be true or false, got {raw[:40]!r}")
    return raw


def _as_key_texts(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value] if value.lstrip().startswith("-----BEGIN") else value.split(",")
    if not isinstance(value, Iterable):
        raise ConfigError("trusted_keys must be a list of 'ed25519:...' or PEM strings")
    texts: list[str] = []
    for item in value:
        if isinstance(item, TrustedKey):
            texts.append(item.text)
        elif isinstance(item, str):
            if item.strip():
                texts.append(item.strip())
        else:
            raise ConfigError("trusted_keys must be a list of 'ed25519:...' or PEM strings")
    return tuple(texts)


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def _check_forge_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"forge_url must be an http:// or https:// URL, got {url[:200]!r}")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as e:
        raise ConfigError(f"forge_url has an invalid port: {url[:200]!r}") from e
    check_token_transport(url.strip())
    return url.strip().rstrip("/")


def _missing(name: str) -> str:
    return f"no {name} configured: pass {name}=, set {ENV_VARS[name]} or add {name} to anvil.toml"


def parse_mode(text: str) -> Mode:
    """Validate a mode name.

    Raises:
        ConfigError: if it is neither ``accepting`` nor ``frozen``.
    """
    mode = text.strip().lower()
    if mode not in MODES:
        raise ConfigError(f"mode must be 'accepting' or 'frozen', got {text[:40]!r}")
    return mode
