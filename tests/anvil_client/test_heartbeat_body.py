"""Heartbeats: DESIGN §7's body (with ``releases``) under 16 KiB, and the token only over TLS
(or to loopback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient, ClientConfig
from anvil_client._heartbeat import HeartbeatSender, heartbeat_body
from anvil_client.errors import ConfigError
from anvil_client.wire import HEARTBEAT_MAX_SIZE, AccessToken, generate_private_key, public_key_text

PROJECT = "0b7f4c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5b"
KEY = public_key_text(generate_private_key().public_key())
FIELDS = {
    "instance_id",
    "hostname",
    "project_id",
    "channel",
    "mode",
    "sequence",
    "releases",
    "last_error",
    "client_version",
}


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "instance_id": "3f0f8a8e-2b55-4c3e-9d0a-2f6f3e1f4b11",
        "hostname": "web-1",
        "project_id": PROJECT,
        "channel": "production",
        "mode": "accepting",
        "sequence": 7,
        "releases": [{"prompt_set_id": "s", "version": "1.0.0", "content_sha256": "a" * 64}],
        "last_error": None,
        "client_version": "1.0",
        "version": "legacy field, never sent",
    }
    base.update(changes)
    return base


def entries(count: int, *, id_length: int = 36, version_length: int = 5) -> list[dict[str, str]]:
    return [
        {
            "prompt_set_id": f"{i:04d}".ljust(id_length, "x"),
            "version": "1.0.0-" + "r" * (version_length - 6) if version_length > 5 else "1.0.0",
            "content_sha256": f"{i:064x}",
        }
        for i in range(count)
    ]


def test_the_body_has_exactly_the_design_fields() -> None:
    body = json.loads(heartbeat_body(fields()))
    assert set(body) == FIELDS
    assert body["releases"] == fields()["releases"]


def test_no_snapshot_reports_an_empty_list() -> None:
    body = json.loads(heartbeat_body(fields(releases=None, sequence=None)))
    assert body["releases"] == [] and body["sequence"] is None


def test_a_hundred_ordinary_entries_are_all_sent_within_16_kib() -> None:
    listed = entries(100)
    data = heartbeat_body(fields(releases=listed, last_error="e" * 5000))
    assert len(data) <= HEARTBEAT_MAX_SIZE
    body = json.loads(data)
    assert body["releases"] == listed  # the error is shortened first, never the entries
    assert len(body["last_error"]) <= 1000


def test_a_body_still_too_large_keeps_a_prefix_of_the_entries() -> None:
    listed = entries(100, id_length=128, version_length=256)
    data = heartbeat_body(fields(releases=listed, last_error="e" * 5000, hostname="h" * 300))
    assert len(data) <= HEARTBEAT_MAX_SIZE
    body = json.loads(data)
    assert set(body) == FIELDS
    assert 0 < len(body["releases"]) < 100
    assert body["releases"] == listed[: len(body["releases"])]
    # As many as fit: one more entry would cross the limit.
    one_more = {**body, "releases": listed[: len(body["releases"]) + 1]}
    assert len(json.dumps(one_more, separators=(",", ":")).encode()) > HEARTBEAT_MAX_SIZE


# --- the bearer token never travels in clear text -------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://forge.example",
        "http://forge.example:80/base",
        "http://10.0.0.5:8080",
        "http://192.168.1.10",
        "http://[2001:db8::1]:5000",
        "http://0.0.0.0:5000",
        "http://127.0.0.1.evil.example",
        "http://localhost.evil.example",
        "http://evil.example#@127.0.0.1",
    ],
)
def test_plain_http_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="use https://") as raised:
        ClientConfig(store="file:///s", project_id=PROJECT, trusted_keys=(KEY,), forge_url=url)
    message = str(raised.value)
    assert "\n" not in message and "loopback" in message
    with pytest.raises(ConfigError):
        HeartbeatSender(url, AccessToken.generate().text)


@pytest.mark.parametrize(
    "url",
    [
        "https://forge.example",
        "https://10.0.0.5:8443/base",
        "http://127.0.0.1:5000",
        "http://127.10.20.30",
        "http://localhost:8000/forge",
        "http://LOCALHOST",
        "http://[::1]:5000",
    ],
)
def test_https_or_loopback_is_accepted(url: str) -> None:
    config = ClientConfig(store="file:///s", project_id=PROJECT, trusted_keys=(KEY,), forge_url=url)
    assert config.forge_url == url.rstrip("/")
    HeartbeatSender(url, AccessToken.generate().text)


def test_the_refusal_applies_to_env_vars_and_files_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANVIL_STORE", "file:///s")
    monkeypatch.setenv("ANVIL_PROJECT_ID", PROJECT)
    monkeypatch.setenv("ANVIL_TRUSTED_KEYS", KEY)
    monkeypatch.setenv("ANVIL_FORGE_URL", "http://forge.example")
    with pytest.raises(ConfigError, match="plain http://"):
        ClientConfig.from_env()
    monkeypatch.delenv("ANVIL_FORGE_URL")
    (tmp_path / "anvil.toml").write_text('forge_url = "http://forge.example"\n')
    with pytest.raises(ConfigError, match="plain http://"):
        ClientConfig.from_env()


def test_a_client_with_such_a_forge_url_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="heartbeats carry the ACCESS_TOKEN"):
        AnvilClient(
            store=f"file://{tmp_path}/store",
            project_id=PROJECT,
            trusted_keys=[KEY],
            access_token=AccessToken.generate().text,
            cache_dir=tmp_path / "cache",
            forge_url="http://forge.example",
            start=False,
        )
    assert not (tmp_path / "cache").exists()
