"""The client's public API: rendering, lookups, fallbacks, status and the module-level functions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import anvil_client
import anvil_client._default as client_module
from anvil_client import AnvilClient, ClientConfig, PromptNotFound
from anvil_client.errors import ConfigError, MissingVariable, RenderError
from tests.anvil_client.spy_stores import SpyStore
from tests.anvil_client.wire_publisher import WirePublisher

MakeClient = Callable[..., AnvilClient]
PROMPTS = {
    "welcome.message": "Welcome {{ name }}!",
    "fancy": {
        "template": "{% if vip %}Dear {{ name | upper }}{% else %}Hi {{ name }}{% endif %}",
        "variables": ["name", "vip"],
        "metadata": {"model": "gpt-x", "temperature": 0.2},
    },
    "support.chat": [("system", "You help {{ product }} users."), ("user", "{{ question }}")],
}


@pytest.fixture
def client(publisher: WirePublisher, make_client: MakeClient) -> AnvilClient:
    publisher.publish(PROMPTS, version="1.0.0")
    c = make_client()
    c.sync()
    return c


def test_prompt_renders_text_prompts(client: AnvilClient) -> None:
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    assert client.prompt("fancy", name="zoë", vip=True) == "Dear ZOË"
    assert client.prompt("fancy", name="Al", vip=False) == "Hi Al"


def test_prompt_of_a_chat_prompt_joins_its_messages(client: AnvilClient) -> None:
    text = client.prompt("support.chat", product="Anvil", question="Why?")
    assert text == "You help Anvil users.\n\nWhy?"


def test_messages_renders_roles_and_contents(client: AnvilClient) -> None:
    assert client.messages("support.chat", product="Anvil", question="Why?") == [
        {"role": "system", "content": "You help Anvil users."},
        {"role": "user", "content": "Why?"},
    ]
    assert client.messages("welcome.message", name="Ada") == [
        {"role": "user", "content": "Welcome Ada!"}
    ]


def test_template_returns_the_source(client: AnvilClient) -> None:
    assert client.template("welcome.message") == "Welcome {{ name }}!"
    with pytest.raises(RenderError, match="chat prompt"):
        client.template("support.chat")


def test_metadata_and_ids(client: AnvilClient) -> None:
    assert client.metadata("fancy")["model"] == "gpt-x"
    assert client.prompt_ids() == ["fancy", "support.chat", "welcome.message"]


def test_a_missing_variable_names_the_prompt_and_the_variable(client: AnvilClient) -> None:
    with pytest.raises(MissingVariable) as raised:
        client.prompt("support.chat", product="Anvil")
    assert "'support.chat'" in str(raised.value)
    assert "'question'" in str(raised.value)


def test_an_unknown_id_raises_prompt_not_found_unless_a_fallback_is_given(
    client: AnvilClient,
) -> None:
    with pytest.raises(PromptNotFound, match=r"'nope' is not in version 1\.0\.0"):
        client.prompt("nope")
    for call in (client.messages, client.template, client.metadata):
        with pytest.raises(PromptNotFound):
            call("nope")
    assert client.prompt("nope", fallback="Default for {{ name }}", name="Ada") == "Default for Ada"
    # A served prompt wins over its fallback.
    assert client.prompt("welcome.message", fallback="unused", name="Ada") == "Welcome Ada!"


def test_a_fallback_is_sandboxed_and_checked_like_any_template(
    make_client: MakeClient,
) -> None:
    empty = make_client()
    with pytest.raises(PromptNotFound, match="no prompts are served yet"):
        empty.prompt("x")
    with pytest.raises(MissingVariable, match="'name'"):
        empty.prompt("x", fallback="Hi {{ name }}")
    with pytest.raises(RenderError, match="broken"):
        empty.prompt("x", fallback="Hi {{ name ")
    with pytest.raises(RenderError):
        empty.prompt("x", fallback="{{ ''.__class__.__mro__ }}")


def test_status_reports_what_is_served(client: AnvilClient, publisher: WirePublisher) -> None:
    status = client.status()
    assert set(status) == set(anvil_client.Status.__annotations__)
    assert status["version"] == "1.0.0"
    assert status["sequence"] == 1
    assert status["prompts"] == 3
    assert status["mode"] == "accepting"
    assert status["mode_source"] == "default"
    assert status["source"] == "store"
    assert status["last_error"] is None
    assert status["stale"] is False
    assert status["project_id"] == publisher.project_id
    assert len(status["content_sha256"] or "") == 64
    json.dumps(status)  # JSON-serialisable as it is
    assert status["instance_id"] == client.instance_id


def test_status_before_anything_is_served(make_client: MakeClient) -> None:
    status = make_client(mode="frozen").status()
    assert status["version"] is None
    assert status["prompts"] == 0
    assert status["stale"] is True
    assert status["mode"] == "frozen"
    assert status["mode_source"] == "config"


def test_the_token_never_shows_in_repr_or_status(
    client: AnvilClient, publisher: WirePublisher
) -> None:
    secret_part = publisher.token.split("_", 2)[2]
    assert secret_part not in repr(client)
    assert secret_part not in repr(client.config)
    assert secret_part not in json.dumps(client.status())


def test_a_client_is_a_context_manager_and_serves_after_close(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    with make_client(start=True) as c:
        c.sync()
        assert c._thread is not None
    assert c._thread is not None and not c._thread.is_alive()
    assert c.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    c.close()  # idempotent


def test_config_and_settings_are_exclusive(publisher: WirePublisher, tmp_path: Path) -> None:
    config = ClientConfig(**publisher.client_settings(tmp_path / "c"))
    with pytest.raises(ConfigError, match="not both"):
        AnvilClient(config=config, store="file:///x", start=False)
    with AnvilClient(config=config, start=False) as c:
        assert c.config is config


# --- the module-level default client --------------------------------------------------------


@pytest.fixture
def no_default_client() -> Iterator[None]:
    client_module._default = None
    yield
    if client_module._default is not None:
        client_module._default.close()
    client_module._default = None


@pytest.mark.usefixtures("no_default_client")
def test_configure_sets_up_the_module_functions(
    publisher: WirePublisher, store: SpyStore, tmp_path: Path
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    configured = anvil_client.configure(
        **publisher.client_settings(tmp_path / "cache", store=store), start=False
    )
    with pytest.raises(PromptNotFound):  # the disk cache is empty and nothing was synced
        anvil_client.prompt("welcome.message", name="Ada")
    configured.sync()
    assert anvil_client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    assert anvil_client.messages("support.chat", product="A", question="Q")[1]["content"] == "Q"
    assert anvil_client.template("welcome.message") == "Welcome {{ name }}!"
    assert anvil_client.status()["version"] == "1.0.0"
    assert anvil_client.prompt("nope", fallback="F") == "F"
    # Reconfiguring replaces (and closes) the previous default client.
    second = anvil_client.configure(
        **publisher.client_settings(tmp_path / "cache", store=store), start=False
    )
    assert second is not configured and configured._closed.is_set()
    assert anvil_client.prompt("welcome.message", name="Bo") == "Welcome Bo!"  # from disk


@pytest.mark.usefixtures("no_default_client")
def test_the_default_client_comes_from_the_environment_on_first_use(
    publisher: WirePublisher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    cache = tmp_path / "cache"
    settings = publisher.client_settings(cache)
    with AnvilClient(**settings, start=False) as c:
        c.sync()  # as `anvil sync` would, before the app starts
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANVIL_STORE", publisher.store.url)
    monkeypatch.setenv("ANVIL_PROJECT_ID", publisher.project_id)
    monkeypatch.setenv("ANVIL_ACCESS_TOKEN", publisher.token)
    monkeypatch.setenv("ANVIL_TRUSTED_KEYS", publisher.trusted_key)
    monkeypatch.setenv("ANVIL_CACHE_DIR", str(cache))
    monkeypatch.setenv("ANVIL_MODE", "frozen")
    assert anvil_client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    assert anvil_client.status()["mode"] == "frozen"
    assert anvil_client.status()["mode_source"] == "config"
    assert client_module._default is not None


@pytest.mark.usefixtures("no_default_client")
def test_the_default_client_without_configuration_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("ANVIL_STORE", "ANVIL_PROJECT_ID", "ANVIL_TRUSTED_KEYS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=r"no store configured: .*ANVIL_STORE"):
        anvil_client.prompt("welcome.message")
