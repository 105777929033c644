"""ClientConfig: DESIGN §9 names and precedence, validation with one clear sentence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from anvil_client import ClientConfig
from anvil_client.errors import ConfigError
from anvil_client.stores import FileStore
from anvil_client.wire import AccessToken, generate_private_key, public_key_text

KEY = public_key_text(generate_private_key().public_key())
KEY2 = public_key_text(generate_private_key().public_key())
TOKEN = AccessToken.generate().text
PROJECT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def toml(**values: object) -> str:
    lines = []
    for key, value in values.items():
        if isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


BASE_FILE = toml(store="file:///srv/store", project_id=PROJECT, trusted_keys=[KEY])


def test_defaults() -> None:
    config = ClientConfig(store="file:///s", project_id=PROJECT, trusted_keys=(KEY,))
    assert config.channel == "production"
    assert config.cache_dir == Path(".anvil_cache")
    assert config.mode == "accepting"
    assert config.mode_source == "default"
    assert config.poll_interval == 30.0
    assert config.heartbeat_interval == 300.0
    assert config.max_bundle_size == 64 * 1024 * 1024
    assert config.forge_url is None and config.bootstrap is None and config.token is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.channel = "staging"  # type: ignore[misc]


def test_from_file_reads_anvil_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path / "anvil.toml",
        toml(
            store="file:///srv/store",
            project_id=PROJECT,
            channel="staging",
            trusted_keys=[KEY, KEY2],
            cache_dir="cache",
            mode="frozen",
            poll_interval=5,
            forge_url="https://forge.example/",
            bootstrap="boot.json",
            heartbeat_interval=60,
        ),
    )
    config = ClientConfig.from_file(path, environ={})
    assert config.store == "file:///srv/store"
    assert config.channel == "staging"
    assert config.trusted_keys == (KEY, KEY2)
    assert len(config.keys) == 2
    assert config.cache_dir == tmp_path / "cache"  # relative to the file
    assert config.bootstrap == tmp_path / "boot.json"
    assert config.mode == "frozen" and config.mode_source == "config"
    assert config.poll_interval == 5.0
    assert config.forge_url == "https://forge.example"
    assert config.heartbeat_interval == 60.0
    assert config.source_file == path


def test_the_file_names_the_token_variable_and_never_holds_the_token(tmp_path: Path) -> None:
    path = write(tmp_path / "anvil.toml", BASE_FILE + 'access_token_env = "MY_APP_TOKEN"\n')
    config = ClientConfig.from_file(path, environ={"MY_APP_TOKEN": TOKEN})
    assert config.access_token == TOKEN
    assert config.access_token_env == "MY_APP_TOKEN"
    # Unset: no token (fine for plaintext channels); errors later name MY_APP_TOKEN.
    assert ClientConfig.from_file(path, environ={}).access_token is None
    leaked = write(tmp_path / "leak.toml", BASE_FILE + f'access_token = "{TOKEN}"\n')
    with pytest.raises(ConfigError, match="must not contain the ACCESS_TOKEN") as raised:
        ClientConfig.from_file(leaked, environ={})
    assert TOKEN not in str(raised.value)


def test_precedence_arguments_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path / "anvil.toml",
        BASE_FILE + 'channel = "from-file"\nmode = "frozen"\npoll_interval = 7\n',
    )
    env = {"ANVIL_CHANNEL": "from-env", "ANVIL_POLL_INTERVAL": "9"}
    config = ClientConfig.from_file(path, environ=env)
    assert config.channel == "from-env"  # env > file
    assert config.mode == "frozen"  # file > default
    assert config.poll_interval == 9.0
    config = ClientConfig.from_file(path, environ=env, channel="from-arg", poll_interval=1)
    assert config.channel == "from-arg"  # argument > env
    assert config.poll_interval == 1.0
    assert config.cache_dir == Path(".anvil_cache")  # default


def test_env_token_beats_the_files_variable(tmp_path: Path) -> None:
    other = AccessToken.generate().text
    path = write(tmp_path / "anvil.toml", BASE_FILE + 'access_token_env = "MY_APP_TOKEN"\n')
    config = ClientConfig.from_file(
        path, environ={"MY_APP_TOKEN": TOKEN, "ANVIL_ACCESS_TOKEN": other}
    )
    assert config.access_token == other


def test_from_env_uses_env_vars_and_comma_separated_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "ANVIL_STORE": "s3://bucket/prefix",
        "ANVIL_PROJECT_ID": PROJECT,
        "ANVIL_TRUSTED_KEYS": f"{KEY}, {KEY2}",
        "ANVIL_ACCESS_TOKEN": TOKEN,
        "ANVIL_CACHE_DIR": "/var/cache/anvil",
        "ANVIL_MODE": "FROZEN",
        "ANVIL_FORGE_URL": "http://127.0.0.1:5000",
        "ANVIL_BOOTSTRAP": "/app/boot.json",
    }
    config = ClientConfig.from_env(environ=env)
    assert config.store == "s3://bucket/prefix"
    assert config.trusted_keys == (KEY, KEY2)
    assert config.token is not None and config.token.text == TOKEN
    assert config.cache_dir == Path("/var/cache/anvil")
    assert config.mode == "frozen"
    assert config.bootstrap == Path("/app/boot.json")
    assert config.source_file is None


def test_from_env_discovers_anvil_toml_then_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "app"\n\n[tool.anvil]\n' + BASE_FILE.replace("/srv/", "/py/"),
    )
    assert ClientConfig.from_env(environ={}).store == "file:///py/store"
    write(tmp_path / "anvil.toml", BASE_FILE)
    assert ClientConfig.from_env(environ={}).store == "file:///srv/store"


def test_an_object_store_can_be_passed_directly(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    config = ClientConfig(store=store, project_id=PROJECT, trusted_keys=[KEY])  # type: ignore[arg-type]
    assert config.store is store
    assert config.store_url == store.url


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"store": ""}, "no store configured: pass store=, set ANVIL_STORE"),
        ({"project_id": ""}, "no project_id configured"),
        ({"project_id": "../etc"}, "is not a project id"),
        ({"project_id": "abc\n"}, "is not a project id"),
        ({"trusted_keys": ()}, "no trusted_keys configured"),
        ({"trusted_keys": ("ed25519:nope",)}, "trusted key"),
        ({"channel": "Prod"}, "channel 'Prod' is invalid"),
        ({"access_token": "anvil_short"}, "ACCESS_TOKEN is malformed"),
        ({"mode": "sometimes"}, "mode must be 'accepting' or 'frozen'"),
        ({"poll_interval": 0}, "poll_interval must be a positive number"),
        ({"poll_interval": float("nan")}, "poll_interval must be a positive number"),
        ({"heartbeat_interval": -1}, "heartbeat_interval must be a positive"),
        ({"max_bundle_size": 0}, "max_bundle_size must be a positive"),
        ({"forge_url": "ftp://x"}, "forge_url must be an http"),
    ],
)
def test_invalid_settings_are_one_clear_sentence(settings: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"store": "file:///s", "project_id": PROJECT, "trusted_keys": [KEY]}
    values.update(settings)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as raised:
        ClientConfig(**values)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_the_token_is_never_echoed_in_errors() -> None:
    broken = TOKEN + "x"
    with pytest.raises(ConfigError) as raised:
        ClientConfig(store="file:///s", project_id=PROJECT, trusted_keys=[KEY], access_token=broken)
    assert broken not in str(raised.value)
    assert TOKEN[-20:] not in repr(
        ClientConfig(store="file:///s", project_id=PROJECT, trusted_keys=[KEY], access_token=TOKEN)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("store = ", "is not valid TOML"),
        ('stor = "x"\n', "unknown setting 'stor'"),
        ("poll_interval = 'soon'\n", "poll_interval in .* must be a number"),
        ("trusted_keys = 5\n", "trusted_keys in .* must be a list of strings"),
        ("channel = 5\n", "channel in .* must be a string"),
    ],
)
def test_malformed_files_name_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "anvil.toml", text)
    with pytest.raises(ConfigError, match=message):
        ClientConfig.from_file(path, environ={})


def test_a_missing_file_and_bad_env_numbers_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ClientConfig.from_file(tmp_path / "nope.toml", environ={})
    path = write(tmp_path / "anvil.toml", BASE_FILE)
    with pytest.raises(ConfigError, match="ANVIL_POLL_INTERVAL must be a number of seconds"):
        ClientConfig.from_file(path, environ={"ANVIL_POLL_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match="unknown client setting 'chanel'"):
        ClientConfig.from_file(path, environ={}, chanel="x")


def test_empty_env_vars_count_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path / "anvil.toml", BASE_FILE + 'channel = "staging"\n')
    assert ClientConfig.from_file(path, environ={"ANVIL_CHANNEL": ""}).channel == "staging"
