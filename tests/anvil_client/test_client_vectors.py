"""The independent wire-format vectors, end to end through the client (tests/vectors/README.md).

Step 1 publishes 1.0.0 to production (JWE for token_a and token_b) and development (plain
JSON); step 2 publishes 2.0.0 to production for token_a only; step 3 adds a second prompt set
("Checkout helper" 1.0.0) beside 2.0.0: the client serves the union and downloads only the new
set's object.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient
from anvil_client.errors import DecryptionError
from anvil_client.stores import FileStore, ObjectStore
from anvil_client.wire import served_version
from tests.anvil_client.spy_stores import SpyStore
from tests.conftest import VECTORS


@pytest.fixture
def live_store(tmp_path: Path, vectors: dict[str, Any]) -> Path:
    """A writable copy of the step 1 store; ``advance`` turns it into step 2."""
    root = tmp_path / "store"
    shutil.copytree(vectors["step1"], root)
    return root


def advance_to_step2(root: Path, vectors: dict[str, Any]) -> None:
    shutil.copytree(vectors["step2"], root, dirs_exist_ok=True)


def advance_to_step3(root: Path, vectors: dict[str, Any]) -> None:
    shutil.copytree(vectors.get("step3") or VECTORS / "step3" / "store", root, dirs_exist_ok=True)


def client_for(
    root: Path,
    vectors: dict[str, Any],
    cache: Path,
    *,
    token: str | None,
    channel: str,
    store: ObjectStore | None = None,
) -> AnvilClient:
    keys = vectors["keys"]
    return AnvilClient(
        store=store or FileStore(root),
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


def test_step3_token_a_serves_both_sets_and_downloads_only_set_bs_object(
    live_store: Path, vectors: dict[str, Any], tmp_path: Path
) -> None:
    expected = vectors["expected"]
    keys = vectors["keys"]
    spy = SpyStore(FileStore(live_store))
    advance_to_step2(live_store, vectors)
    with client_for(
        live_store, vectors, tmp_path / "a", token="token_a", channel="production", store=spy
    ) as client:
        client.sync()
        assert client.status()["version"] == "2.0.0"
        advance_to_step3(live_store, vectors)
        before = len(spy.bundle_gets())

        status = client.sync()
        step3 = expected["step3"]["production"]
        assert status["version"] == step3["version"] == "Support bot@2.0.0, Checkout helper@1.0.0"
        assert status["sequence"] == step3["sequence"]
        assert status["last_error"] is None
        assert status["content_sha256"] is None  # several entries: see status()["releases"]
        assert status["prompt_set_id"] is None
        served = [(r["prompt_set_id"], r["version"]) for r in status["releases"]]
        assert served == [(e["prompt_set_id"], e["version"]) for e in step3["releases"]]
        assert [r["name"] for r in status["releases"]] == ["Support bot", "Checkout helper"]
        assert sum(r["prompts"] for r in status["releases"]) == status["prompts"]
        check_renders(client, expected["step3"]["renders"])

        # Set A (2.0.0) was already verified in the cache: only set B's object is fetched.
        fetched = spy.bundle_gets()[before:]
        (set_b,) = [r for r in status["releases"] if r["prompt_set_id"] == keys["prompt_set_id_b"]]
        pointer = client._snapshot.pointer if client._snapshot else None
        assert pointer is not None
        entry_b = pointer.entry(keys["prompt_set_id_b"])
        assert entry_b is not None and entry_b.content_sha256 == set_b["content_sha256"]
        assert [c.key for c in fetched] == [entry_b.object.path]
        assert served_version(pointer.releases) == step3["version"]

        cached = sorted(p.stem for p in Path(status["cache_dir"], "bundles").glob("*.json"))
        assert cached == sorted(r["content_sha256"] for r in status["releases"])


def test_step3_from_scratch_downloads_both_and_survives_a_restart_without_the_store(
    live_store: Path, vectors: dict[str, Any], tmp_path: Path
) -> None:
    expected = vectors["expected"]
    advance_to_step2(live_store, vectors)
    advance_to_step3(live_store, vectors)
    spy = SpyStore(FileStore(live_store))
    with client_for(
        live_store, vectors, tmp_path / "a", token="token_a", channel="production", store=spy
    ) as client:
        client.sync()
        assert len(spy.bundle_gets()) == 2
        check_renders(client, expected["step3"]["renders"])
    spy.down = True
    with client_for(
        live_store, vectors, tmp_path / "a", token="token_a", channel="production", store=spy
    ) as restarted:
        assert restarted.status()["version"] == expected["step3"]["production"]["version"]
        assert restarted.status()["source"] == "disk"
        check_renders(restarted, expected["step3"]["renders"])


def test_step3_token_b_keeps_serving_1_0_0_and_applies_nothing(
    live_store: Path, vectors: dict[str, Any], tmp_path: Path
) -> None:
    # token_b can read neither 2.0.0 nor (at step 3) set B: all or nothing, 1.0.0 stays.
    with client_for(
        live_store, vectors, tmp_path / "b", token="token_b", channel="production"
    ) as client:
        client.sync()
        advance_to_step2(live_store, vectors)
        advance_to_step3(live_store, vectors)
        with pytest.raises(DecryptionError):
            client.sync()
        status = client.status()
        assert status["version"] == "1.0.0"
        assert status["sequence"] == 1
        assert [r["version"] for r in status["releases"]] == ["1.0.0"]
        check_renders(client, vectors["expected"]["step1"]["renders"])
