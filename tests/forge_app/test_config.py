"""Settings: env vars, forge.toml, generated development secrets, production refusal."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import forge_app
from anvil_client.errors import ConfigError
from anvil_client.wire import load_private_key_file
from forge_app.config import load_settings


def test_public_names() -> None:
    assert forge_app.__all__ == ["create_app"]


def test_development_generates_missing_secrets_once(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    first = load_settings({"FORGE_INSTANCE_PATH": str(instance)}, environ={})
    assert first.env == "development" and not first.production
    assert set(first.generated) == {"FORGE_SECRET_KEY", "FORGE_SIGNING_KEY", "FORGE_DATA_KEY"}
    for name in ("secret_key", "data_key", "signing-key.pem"):
        mode = stat.S_IMODE((instance / name).stat().st_mode)
        assert mode == 0o600, name
    load_private_key_file(first.signing_key)
    assert first.secret_key != first.data_key
    second = load_settings({"FORGE_INSTANCE_PATH": str(instance)}, environ={})
    assert (second.secret_key, second.data_key, second.signing_key) == (
        first.secret_key,
        first.data_key,
        first.signing_key,
    )
    assert first.database_url == f"sqlite:///{instance / 'anvil.db'}"
    assert first.store_url == (instance / "store").as_uri()
    assert first.cookie_secure is False


def test_production_refuses_to_start_naming_missing_secrets(tmp_path: Path) -> None:
    environ = {
        "FORGE_ENV": "production",
        "FORGE_SECRET_KEY": "s" * 40,
        "FORGE_INSTANCE_PATH": str(tmp_path),
    }
    with pytest.raises(ConfigError) as error:
        load_settings(environ=environ)
    assert "FORGE_SIGNING_KEY" in str(error.value) and "FORGE_DATA_KEY" in str(error.value)
    assert "FORGE_SECRET_KEY" not in str(error.value)
    assert not (tmp_path / "signing-key.pem").exists()  # nothing generated in production
    with pytest.raises(ConfigError, match="at least 32"):
        load_settings(
            environ={
                **environ,
                "FORGE_SECRET_KEY": "short",
                "FORGE_SIGNING_KEY": "k",
                "FORGE_DATA_KEY": "d",
            }
        )
    settings = load_settings(environ={**environ, "FORGE_SIGNING_KEY": "k", "FORGE_DATA_KEY": "d"})
    assert settings.production and settings.cookie_secure and settings.generated == ()


def test_precedence_overrides_env_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "forge.toml"
    toml.write_text(
        '[forge]\ndatabase_url = "sqlite:///from-toml.db"\nstore_url = "file:///toml-store"\n'
        'secret_key = "toml-secret"\ncookie_secure = true\n'
    )
    environ = {
        "FORGE_CONFIG": str(toml),
        "FORGE_STORE_URL": "s3://env-bucket/p",
        "FORGE_INSTANCE_PATH": str(tmp_path / "i"),
    }
    settings = load_settings({"FORGE_DATABASE_URL": "sqlite:///given.db"}, environ=environ)
    assert settings.database_url == "sqlite:///given.db"  # mapping wins
    assert settings.store_url == "s3://env-bucket/p"  # env beats the file
    assert settings.secret_key == "toml-secret"  # the file beats generation
    assert settings.cookie_secure is True


def test_bad_values_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FORGE_ENV"):
        load_settings(environ={"FORGE_ENV": "staging", "FORGE_INSTANCE_PATH": str(tmp_path)})
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(environ={"FORGE_CONFIG": str(bad), "FORGE_INSTANCE_PATH": str(tmp_path)})
    with pytest.raises(ConfigError, match="true or false"):
        load_settings(
            {"FORGE_COOKIE_SECURE": "maybe", "FORGE_INSTANCE_PATH": str(tmp_path)}, environ={}
        )


def test_session_and_proxy_settings(tmp_path: Path) -> None:
    base = {"FORGE_INSTANCE_PATH": str(tmp_path / "instance")}
    defaults = load_settings(base, environ={})
    assert (defaults.session_idle_minutes, defaults.session_max_hours) == (60, 12)
    assert defaults.trusted_proxies == 0
    (tmp_path / "forge.toml").write_text("session_idle_minutes = 20\ntrusted_proxies = 2\n")
    settings = load_settings(
        base,
        environ={"FORGE_CONFIG": str(tmp_path / "forge.toml"), "FORGE_SESSION_MAX_HOURS": "8"},
    )
    assert (settings.session_idle_minutes, settings.session_max_hours) == (20, 8)
    assert settings.trusted_proxies == 2


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "FORGE_SESSION_IDLE_MINUTES",
            "0",
            "FORGE_SESSION_IDLE_MINUTES must be a whole number from 1",
        ),
        ("FORGE_SESSION_MAX_HOURS", "12h", "FORGE_SESSION_MAX_HOURS must be a whole number from 1"),
        (
            "FORGE_TRUSTED_PROXIES",
            "-1",
            "FORGE_TRUSTED_PROXIES must be a whole number from 0 to 10",
        ),
        ("FORGE_TRUSTED_PROXIES", "yes", "not 'yes'"),
    ],
)
def test_bad_session_and_proxy_settings(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"FORGE_INSTANCE_PATH": str(tmp_path / "instance"), name: value}, environ={})
