"""FORGE settings: ``FORGE_*`` env vars, an optional ``forge.toml``, and dev-mode secrets.

    >>> from forge_app.config import load_settings
    >>> load_settings({"FORGE_INSTANCE_PATH": "/tmp/forge-doc"}).env   # doctest: +SKIP
    'development'

Precedence: the mapping given to ``create_app`` > environment variables > ``forge.toml``
(``$FORGE_CONFIG``, else ``./forge.toml``, else ``<instance>/forge.toml``; keys without the
prefix, top level or under ``[forge]``) > defaults. In development, missing secrets are
generated once into the instance folder (mode 0600); with ``FORGE_ENV=production`` a missing
secret stops the start with a message naming it.

Peers (issue 10) are ``[[known_forges]]`` tables in the same ``forge.toml`` (``name``, ``url``,
``bearer_token_env``), or the JSON list of those tables in ``FORGE_KNOWN_FORGES``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from anvil_client.errors import ConfigError
from anvil_client.wire import generate_private_key, write_private_key_file

__all__ = ["SECRET_NAMES", "ForgeSettings", "KnownForge", "load_settings"]

#: The settings that must be given explicitly in production.
SECRET_NAMES = ("FORGE_SECRET_KEY", "FORGE_SIGNING_KEY", "FORGE_DATA_KEY")

_NAMES = (
    "FORGE_ENV",
    "FORGE_INSTANCE_PATH",
    "FORGE_DATABASE_URL",
    "FORGE_SECRET_KEY",
    "FORGE_STORE_URL",
    "FORGE_SIGNING_KEY",
    "FORGE_DATA_KEY",
    "FORGE_COOKIE_SECURE",
    "FORGE_TRUSTED_PROXIES",
    "FORGE_SESSION_IDLE_MINUTES",
    "FORGE_SESSION_MAX_HOURS",
    "FORGE_PREVIEW_LIMIT",
    "FORGE_PREVIEW_WINDOW",
    "FORGE_PREVIEW_CONCURRENCY",
)
# Whole-number settings: (default, smallest, largest).
_NUMBERS = {
    "FORGE_TRUSTED_PROXIES": (0, 0, 10),
    "FORGE_SESSION_IDLE_MINUTES": (60, 1, 7 * 24 * 60),
    "FORGE_SESSION_MAX_HOURS": (12, 1, 30 * 24),
    # Template previews: per user, at most LIMIT per WINDOW seconds; CONCURRENCY forked
    # previews at once per server process (see forge_app.blueprints.prompts).
    "FORGE_PREVIEW_LIMIT": (120, 1, 100_000),
    "FORGE_PREVIEW_WINDOW": (60, 1, 24 * 60 * 60),
    "FORGE_PREVIEW_CONCURRENCY": (4, 1, 64),
}
# Files that hold generated development secrets, relative to the instance folder.
_GENERATED_FILES = {
    "FORGE_SECRET_KEY": "secret_key",
    "FORGE_DATA_KEY": "data_key",
    "FORGE_SIGNING_KEY": "signing-key.pem",
}


@dataclass(frozen=True)
class KnownForge:
    """Another FORGE this one peers with (``[[known_forges]]`` in ``forge.toml``).

    ``bearer_token_env`` names the environment variable that holds the API token used at that
    FORGE; the token itself is read only when a request is made, and never stored or shown.
    ``slug`` is the name as it appears in this FORGE's URLs.
    """

    name: str
    url: str
    bearer_token_env: str

    @property
    def slug(self) -> str:
        return _slug(self.name)


@dataclass(frozen=True)
class ForgeSettings:
    """Resolved FORGE settings.

    ``signing_key`` is PEM text or the path of a PEM file (in development: the generated
    ``<instance>/signing-key.pem``). ``data_key`` is the key that encrypts secrets at rest
    (base64url of 32 random bytes when generated); it is never the ``secret_key``.

    ``trusted_proxies`` is how many reverse proxies in front of the FORGE set
    ``X-Forwarded-For``/``X-Forwarded-Proto`` (0: none; the headers are ignored).
    ``session_idle_minutes`` and ``session_max_hours`` bound a signed-in session: without a
    request for that long, and at most that long after signing in.
    """

    env: str
    instance_path: Path
    database_url: str
    secret_key: str
    store_url: str
    signing_key: str
    data_key: str
    cookie_secure: bool
    generated: tuple[str, ...] = ()
    trusted_proxies: int = 0
    session_idle_minutes: int = 60
    session_max_hours: int = 12
    known_forges: tuple[KnownForge, ...] = ()
    preview_limit: int = 120
    preview_window: int = 60
    preview_concurrency: int = 4

    @property
    def production(self) -> bool:
        return self.env == "production"


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> ForgeSettings:
    """Resolve the settings from ``overrides``, the environment and ``forge.toml``.

    Raises:
        ConfigError: naming every missing secret in production, or an unreadable forge.toml.
    """
    env_vars = os.environ if environ is None else environ
    given = _given(overrides or {}, env_vars)
    instance_path = Path(str(given.get("FORGE_INSTANCE_PATH", "instance"))).resolve()
    from_file = _read_toml(_toml_path(env_vars, instance_path))
    for name in (*_NAMES, "FORGE_KNOWN_FORGES"):
        if name not in given and from_file.get(name) not in (None, ""):
            given[name] = from_file[name]
    if "FORGE_INSTANCE_PATH" in given:
        instance_path = Path(str(given["FORGE_INSTANCE_PATH"])).resolve()

    env = str(given.get("FORGE_ENV", "development")).lower()
    if env not in ("development", "production"):
        raise ConfigError(f"FORGE_ENV must be 'development' or 'production', not {env!r}")
    production = env == "production"
    missing = [name for name in SECRET_NAMES if not given.get(name)]
    if production:
        _check_production_secrets(given, missing)

    generated: list[str] = []
    for name in missing:
        given[name] = _dev_secret(name, instance_path)
        generated.append(name)

    database_url = str(given.get("FORGE_DATABASE_URL") or f"sqlite:///{instance_path / 'anvil.db'}")
    store_url = str(given.get("FORGE_STORE_URL") or (instance_path / "store").as_uri())
    return ForgeSettings(
        env=env,
        instance_path=instance_path,
        database_url=database_url,
        secret_key=str(given["FORGE_SECRET_KEY"]),
        store_url=store_url,
        signing_key=str(given["FORGE_SIGNING_KEY"]),
        data_key=str(given["FORGE_DATA_KEY"]),
        cookie_secure=_flag(given.get("FORGE_COOKIE_SECURE"), default=production),
        generated=tuple(generated),
        trusted_proxies=_number(given, "FORGE_TRUSTED_PROXIES"),
        session_idle_minutes=_number(given, "FORGE_SESSION_IDLE_MINUTES"),
        session_max_hours=_number(given, "FORGE_SESSION_MAX_HOURS"),
        preview_limit=_number(given, "FORGE_PREVIEW_LIMIT"),
        preview_window=_number(given, "FORGE_PREVIEW_WINDOW"),
        preview_concurrency=_number(given, "FORGE_PREVIEW_CONCURRENCY"),
        known_forges=parse_known_forges(given.get("FORGE_KNOWN_FORGES")),
    )


def _given(overrides: Mapping[str, Any], env_vars: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as ``overrides`` or, failing that, in the environment."""
    given: dict[str, Any] = {}
    for name in (*_NAMES, "FORGE_KNOWN_FORGES"):
        if overrides.get(name) not in (None, ""):
            given[name] = overrides[name]
        elif env_vars.get(name):
            given[name] = env_vars[name]
    return given


def _check_production_secrets(given: Mapping[str, Any], missing: list[str]) -> None:
    """Raises: ConfigError: naming every missing secret, or for a short secret key."""
    if missing:
        raise ConfigError(
            "the FORGE refuses to start in production without its secrets; set "
            + ", ".join(missing)
        )
    if len(str(given["FORGE_SECRET_KEY"])) < 32:
        raise ConfigError("FORGE_SECRET_KEY must be at least 32 characters in production")


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def parse_known_forges(value: Any) -> tuple[KnownForge, ...]:
    """``[[known_forges]]`` entries (a list of tables, or its JSON text from the environment
    variable ``FORGE_KNOWN_FORGES``) as :class:`KnownForge` values.

    Raises:
        ConfigError: naming the first entry that is not ``{name, url, bearer_token_env}`` with
            an ``http(s)://`` URL, or a name given twice.
    """
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ConfigError(f"FORGE_KNOWN_FORGES is not a JSON list: {e}") from e
    if not isinstance(value, list | tuple):
        raise ConfigError("known_forges must be a list of {name, url, bearer_token_env} tables")
    forges: list[KnownForge] = []
    for index, entry in enumerate(value, 1):
        forge = _known_forge(entry, f"known_forges entry {index}")
        if any(f.slug == forge.slug for f in forges):
            raise ConfigError(
                f"known_forges entry {index}: a FORGE named {forge.name!r} is configured twice"
            )
        forges.append(forge)
    return tuple(forges)


def _known_forge(entry: object, where: str) -> KnownForge:
    """Raises: ConfigError: naming ``where`` if ``entry`` is not a valid peer."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table with name, url and bearer_token_env")
    name = str(entry.get("name") or "").strip()
    url = str(entry.get("url") or "").strip().rstrip("/")
    env_name = str(entry.get("bearer_token_env") or "").strip()
    parts = urlsplit(url)
    if not name or len(name) > 80 or not _slug(name):
        raise ConfigError(f"{where} needs a name of 1 to 80 characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} ({name}) needs an http:// or https:// url")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{where} ({name}): the url takes no query, fragment or password")
    if not _ENV_NAME_RE.match(env_name):
        raise ConfigError(
            f"{where} ({name}) needs bearer_token_env, the name of the environment variable "
            "that holds its API token"
        )
    return KnownForge(name=name, url=url, bearer_token_env=env_name)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64]


def _toml_path(env_vars: Mapping[str, str], instance_path: Path) -> Path | None:
    explicit = env_vars.get("FORGE_CONFIG")
    if explicit:
        return Path(explicit)
    for candidate in (Path("forge.toml"), instance_path / "forge.toml"):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    table = data.get("forge", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [forge] must be a table")
    settings = {f"FORGE_{key.upper()}": value for key, value in table.items()}
    # [[known_forges]] is a top-level array of tables even when the rest is under [forge].
    if "known_forges" in data and "FORGE_KNOWN_FORGES" not in settings:
        settings["FORGE_KNOWN_FORGES"] = data["known_forges"]
    return settings


def _flag(value: Any, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"FORGE_COOKIE_SECURE must be true or false, not {value!r}")


def _number(given: Mapping[str, Any], name: str) -> int:
    default, low, high = _NUMBERS[name]
    value = given.get(name)
    if value is None or value == "":
        return default
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    number = int(text)
    if not low <= number <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return number


def _dev_secret(name: str, instance_path: Path) -> str:
    """Read a generated development secret, creating it (mode 0600) on first use."""
    path = instance_path / _GENERATED_FILES[name]
    try:
        instance_path.mkdir(parents=True, exist_ok=True)
        if name == "FORGE_SIGNING_KEY":
            if not path.exists():
                try:
                    write_private_key_file(generate_private_key(), path)
                except ConfigError:
                    if not path.exists():  # lost a race with another process: theirs is fine
                        raise
            return str(path)
        if not path.exists():
            value = secrets.token_hex(32) if name == "FORGE_SECRET_KEY" else _data_key()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path.read_text().strip()
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
        return path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror}") from e


def _data_key() -> str:
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
