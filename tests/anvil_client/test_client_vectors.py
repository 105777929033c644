"""The independent wire-format vectors, end to end through the client (tests/vectors/README.md).

Step 1 publishes 1.0.0 to production (JWE for token_a and token_b) and development (plain
JSON); step 2 publishes 2.0.0 to production for token_a only.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient
from anvil_client.errors import DecryptionError
from anvil_client.stores import FileStore


@pytest.fixture
def live_store(tmp_path: Path, vectors: dict[str, Any]) -> Path:
    """A writable copy of the step 1 store; ``advance`` turns it into step 2."""
    root = tmp_path / "store"
    shutil.copytree(vectors["step1"], root)
    return root


def advance_to_step2(root: Path, vectors: dict[str, Any]) -> None:
    shutil.copytree(vectors["step2"], root, dirs_exist_ok=True)


def client_for(
    root: Path, vectors: dict[str, Any], cache: Path, *, token: str | None, channel: str
) -> AnvilClient:
    keys = vectors["keys"]
    return AnvilClient(
        store=FileStore(root),
        project_id=keys["project_id"],
        channel=channel,
        access_token=keys[token] if token else None,
        trusted_keys=[keys["trusted_key"]],
        cache_dir=cache,
        start=False,
    )


def check_renders(client: AnvilClient, renders: list[dict[str, Any]]) -> None:
    for case in renders:
        if "messages" in case:
            assert client.messages(case["id"], **case["vars"]) == case["messages"]
        else:
            assert client.prompt(case["id"], **case["vars"]) == case["text"]


@pytest.mark.parametrize("token", ["token_a", "token_b"])
def test_step1_production_applies_1_0_0(
    live_store: Path, vectors: dict[str, Any], tmp_path: Path, token: str
) -> None:
    expected = vectors["expected"]["step1"]
    with client_for(
        live_store, vectors, tmp_path / token, token=token, channel="production"
    ) as client:
        status = client.sync()
        assert status["version"] == expected["production"]["version"]
        assert status["sequence"] == expected["production"]["sequence"]
        assert status["content_sha256"] == expected["production"]["content_sha256"]
        assert status["last_error"] is None
        check_renders(client, expected["renders"])


def test_step1_development_is_plaintext_and_needs_no_token(
    live_store: Path, vectors: dict[str, Any], tmp_path: Path
) -> None:
    expected = vectors["expected"]["step1"]
    with client_for(live_store, vectors, tmp_path / "dev", token=None, channel="development") as c:
        status = c.sync()
        assert status["version"] == expected["development"]["version"]
        assert status["sequence"] == expected["development"]["sequence"]
        check_renders(c, expected["renders"])


def test_step1_cache_holds_the_exact_bundle_bytes(
    live_store: Path, vectors: dict[str, Any], tmp_path: Path
) -> None:
    with client_for(
        live_store, vectors, tmp_path / "a", token="token_a", channel="production"
    ) as c:
        status = c.sync()
    cached = Path(status["cache_dir"], "bundles", f"{status['content_sha256']}.json")
    assert cached.read_bytes() == vectors["bundle_1_0_0"]


def test_step2_token_a_applies_2_0_0_and_token_b_keeps_1_0_0(
    live_store: Path, vectors: dict[str, Any], tmp_path: Path
) -> None:
    expected = vectors["expected"]
    a = client_for(live_store, vectors, tmp_path / "a", token="token_a", channel="production")
    b = client_for(live_store, vectors, tmp_path / "b", token="token_b", channel="production")
    with a, b:
        a.sync()
        b.sync()
        advance_to_step2(live_store, vectors)

        status_a = a.sync()
        assert status_a["version"] == expected["step2"]["production"]["version"]
        assert status_a["sequence"] == expected["step2"]["production"]["sequence"]
        assert status_a["content_sha256"] == expected["step2"]["production"]["content_sha256"]
        check_renders(a, expected["step2"]["renders"])

        with pytest.raises(DecryptionError):
            b.sync()
        status_b = b.status()
        assert status_b["version"] == "1.0.0"
        assert status_b["sequence"] == 1
        assert status_b["last_error"] is not None
        assert "bkhs1m1jajd5" in status_b["last_error"]  # names its token id, never the secret
        assert vectors["keys"]["token_b"] not in status_b["last_error"]
        check_renders(b, expected["step1"]["renders"])


def test_step2_is_picked_up_after_a_restart_from_the_step1_cache(
    live_store: Path, vectors: dict[str, Any], tmp_path: Path
) -> None:
    expected = vectors["expected"]
    with client_for(
        live_store, vectors, tmp_path / "a", token="token_a", channel="production"
    ) as c:
        c.sync()
    advance_to_step2(live_store, vectors)
    with client_for(
        live_store, vectors, tmp_path / "a", token="token_a", channel="production"
    ) as c:
        assert c.status()["version"] == "1.0.0"
        check_renders(c, expected["step1"]["renders"])
        c.sync()
        check_renders(c, expected["step2"]["renders"])
