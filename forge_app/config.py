"""FORGE settings: ``FORGE_*`` env vars, an optional ``forge.toml``, and dev-mode secrets.

    >>> from forge_app.config import load_settings
    >>> load_settings({"FORGE_INSTANCE_PATH": "/tmp/forge-doc"}).env   # doctest: +SKIP
    'development'

Precedence: the mapping given to ``create_app`` > environment variables > ``forge.toml``
(``$FORGE_CONFIG``, else ``./forge.toml``, else ``<instance>/forge.toml``; keys without the
prefix, top level or under ``[forge]``) > defaults. In development, missing secrets are
generated once into the instance folder (mode 0600); with ``FORGE_ENV=production`` a missing
secret stops the start with a message naming it.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anvil_client.errors import ConfigError
from anvil_client.wire import generate_private_key, write_private_key_file

__all__ = ["SECRET_NAMES", "ForgeSettings", "load_settings"]

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
)
# Files that hold generated development secrets, relative to the instance folder.
_GENERATED_FILES = {
    "FORGE_SECRET_KEY": "secret_key",
    "FORGE_DATA_KEY": "data_key",
    "FORGE_SIGNING_KEY": "signing-key.pem",
}


@dataclass(frozen=True)
class ForgeSettings:
    """Resolved FORGE settings.

    ``signing_key`` is PEM text or the path of a PEM file (in development: the generated
    ``<instance>/signing-key.pem``). ``data_key`` is the key that encrypts secrets at rest
    (base64url of 32 random bytes when generated); it is never the ``secret_key``.
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
    given: dict[str, Any] = {}
    for name in _NAMES:
        if overrides is not None and overrides.get(name) not in (None, ""):
            given[name] = overrides[name]
        elif env_vars.get(name):
            given[name] = env_vars[name]
    instance_path = Path(str(given.get("FORGE_INSTANCE_PATH", "instance"))).resolve()
    from_file = _read_toml(_toml_path(env_vars, instance_path))
    for name in _NAMES:
        if name not in given and from_file.get(name) not in (None, ""):
            given[name] = from_file[name]
    if "FORGE_INSTANCE_PATH" in given:
        instance_path = Path(str(given["FORGE_INSTANCE_PATH"])).resolve()

    env = str(given.get("FORGE_ENV", "development")).lower()
    if env not in ("development", "production"):
        raise ConfigError(f"FORGE_ENV must be 'development' or 'production', not {env!r}")
    production = env == "production"
    missing = [name for name in SECRET_NAMES if not given.get(name)]
    if production and missing:
        raise ConfigError(
            "the FORGE refuses to start in production without its secrets; set "
            + ", ".join(missing)
        )
    if production and len(str(given["FORGE_SECRET_KEY"])) < 32:
        raise ConfigError("FORGE_SECRET_KEY must be at least 32 characters in production")

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
    )


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
    return {f"FORGE_{key.upper()}": value for key, value in table.items()}


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
