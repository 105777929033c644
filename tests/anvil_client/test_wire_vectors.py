"""The independent wire-format vectors verify, decrypt and render exactly as expected.json says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from anvil_client.errors import DecryptionError, SignatureError
from anvil_client.stores import FileStore
from anvil_client.wire import (
    BUNDLE_MAX_SIZE,
    AccessToken,
    Pointer,
    Release,
    TrustedKey,
    check_bundle_matches,
    check_disjoint,
    compile_prompt,
    decrypt_bundle,
    derive_kek,
    fetch_object,
    key_id,
    open_object,
    parse_bundle,
    parse_public_key,
    recipient_ids,
    select_releases,
    served_version,
    sha256_hex,
    verify_envelope,
    verify_pointer,
)
from tests.conftest import VECTORS

MAX = BUNDLE_MAX_SIZE


def store_root(vectors: dict[str, Any], step: str) -> Path:
    """A step's store root (the shared fixture may predate step 3)."""
    root: Path = vectors.get(step) or VECTORS / step / "store"
    return root


def _project_root(vectors: dict[str, Any], step: str) -> Path:
    project: str = vectors["keys"]["project_id"]
    return store_root(vectors, step) / "projects" / project


def _pointer(vectors: dict[str, Any], step: str, channel: str, key: str = "trusted_key") -> Pointer:
    envelope = (_project_root(vectors, step) / "channels" / f"{channel}.json").read_bytes()
    trusted = TrustedKey.parse(vectors["keys"][key])
    return Pointer.parse(verify_envelope(envelope, [trusted]))


def _entry_bytes(vectors: dict[str, Any], step: str, release: Release, token: str) -> bytes:
    release.object.check_location(vectors["keys"]["project_id"])
    stored: bytes = (store_root(vectors, step) / release.object.path).read_bytes()
    assert len(stored) == release.object.size
    assert sha256_hex(stored) == release.object.sha256
    if release.object.encoding == "json":
        return stored
    access = AccessToken.parse(vectors["keys"][token])
    return decrypt_bundle(stored, access.token_id, access.kek(), max_plaintext=MAX)


def _bundle_bytes(vectors: dict[str, Any], step: str, channel: str, token: str) -> bytes:
    (release,) = _pointer(vectors, step, channel).releases
    return _entry_bytes(vectors, step, release, token)


def test_key_forms_and_keyid(vectors: dict[str, Any]) -> None:
    keys = vectors["keys"]
    from_text = TrustedKey.parse(keys["trusted_key"])
    from_pem = TrustedKey.parse(keys["trusted_key_pem"])
    assert from_text.keyid == from_pem.keyid == keys["keyid"]
    assert key_id(parse_public_key(keys["trusted_key_pem"])) == keys["keyid"]
    assert from_pem.text == keys["trusted_key"]


@pytest.mark.parametrize("key", ["trusted_key", "trusted_key_pem"])
@pytest.mark.parametrize(
    ("step", "channel"),
    [("step1", "production"), ("step1", "development"), ("step2", "production")],
)
def test_pointers_verify_with_both_key_forms(
    vectors: dict[str, Any], step: str, channel: str, key: str
) -> None:
    pointer = _pointer(vectors, step, channel, key)
    expected = vectors["expected"][step][channel]
    assert pointer.sequence == expected["sequence"]
    assert [r.version for r in pointer.releases] == [expected["version"]]
    assert served_version(pointer.releases) == expected["version"]
    assert pointer.channel == channel
    assert pointer.project_id == vectors["keys"]["project_id"]
    assert select_releases(pointer, "any-instance") == pointer.releases


@pytest.mark.parametrize("key", ["trusted_key", "trusted_key_pem"])
def test_step3_has_one_entry_per_set_sorted(vectors: dict[str, Any], key: str) -> None:
    pointer = _pointer(vectors, "step3", "production", key)
    expected = vectors["expected"]["step3"]["production"]
    keys = vectors["keys"]
    assert pointer.sequence == expected["sequence"] == 3
    assert [(r.prompt_set_id, r.version) for r in pointer.releases] == [
        (e["prompt_set_id"], e["version"]) for e in expected["releases"]
    ]
    assert [r.prompt_set_id for r in pointer.releases] == sorted(
        [keys["prompt_set_id"], keys["prompt_set_id_b"]]
    )
    assert served_version(pointer.releases) == expected["version"]
    assert expected["version"] == "Support bot@2.0.0, Checkout helper@1.0.0"
    assert select_releases(pointer, "any-instance") == pointer.releases


def test_step3_carries_step2s_entry_over_unchanged(vectors: dict[str, Any]) -> None:
    (before,) = _pointer(vectors, "step2", "production").releases
    after = _pointer(vectors, "step3", "production").entry(before.prompt_set_id)
    assert after == before


def test_step3_verifies_fetches_and_renders_the_union(vectors: dict[str, Any]) -> None:
    keys = vectors["keys"]
    root = _project_root(vectors, "step3")
    pointer = verify_pointer(
        (root / "channels" / "production.json").read_bytes(),
        [TrustedKey.parse(keys["trusted_key"])],
        project_id=keys["project_id"],
        channel="production",
    )
    token = AccessToken.parse(keys["token_a"])
    store = FileStore(store_root(vectors, "step3"))
    pairs = []
    for release in pointer.releases:
        plaintext = open_object(release, fetch_object(store, release), token)
        bundle = parse_bundle(plaintext, content_sha256=release.content_sha256)
        check_bundle_matches(bundle, pointer.project_id, release)
        pairs.append((release, bundle))
    check_disjoint(pairs)
    union = {pid: spec for _, bundle in pairs for pid, spec in bundle.prompts.items()}
    for case in vectors["expected"]["step3"]["renders"]:
        assert compile_prompt(case["id"], union[case["id"]]).render(case["vars"]) == case["text"]


def test_history_copies_verify_and_match(vectors: dict[str, Any]) -> None:
    trusted = [TrustedKey.parse(vectors["keys"]["trusted_key"])]
    history = sorted((_project_root(vectors, "step3") / "channels").rglob("history/*.json"))
    assert len(history) == 4
    for path in history:
        pointer = Pointer.parse(verify_envelope(path.read_bytes(), trusted))
        assert path.name == f"{pointer.sequence:012d}.json"


def test_untrusted_key_rejects_every_pointer(vectors: dict[str, Any]) -> None:
    untrusted = [TrustedKey.parse(vectors["keys"]["untrusted_key"])]
    for envelope in (_project_root(vectors, "step3") / "channels").glob("*.json"):
        with pytest.raises(SignatureError):
            verify_envelope(envelope.read_bytes(), untrusted)


def test_kek_derivation_matches_vectors(vectors: dict[str, Any]) -> None:
    keys = vectors["keys"]
    a, b = AccessToken.parse(keys["token_a"]), AccessToken.parse(keys["token_b"])
    assert a.kek().hex() == keys["kek_a_hex"]
    assert b.kek().hex() == keys["kek_b_hex"]
    assert derive_kek(a.token_id, a.secret).hex() == keys["kek_a_hex"]


@pytest.mark.parametrize("token", ["token_a", "token_b"])
def test_step1_decrypts_for_both_tokens(vectors: dict[str, Any], token: str) -> None:
    plaintext = _bundle_bytes(vectors, "step1", "production", token)
    assert plaintext == vectors["bundle_1_0_0"]
    assert sha256_hex(plaintext) == vectors["expected"]["step1"]["production"]["content_sha256"]


def test_development_is_plain_json_with_the_same_content(vectors: dict[str, Any]) -> None:
    pointer = _pointer(vectors, "step1", "development")
    assert pointer.releases[0].object.encoding == "json"
    assert _bundle_bytes(vectors, "step1", "development", "token_a") == vectors["bundle_1_0_0"]


def test_step2_decrypts_for_token_a_only(vectors: dict[str, Any]) -> None:
    keys = vectors["keys"]
    plaintext = _bundle_bytes(vectors, "step2", "production", "token_a")
    expected = vectors["expected"]["step2"]["production"]
    assert sha256_hex(plaintext) == expected["content_sha256"]
    assert parse_bundle(plaintext, content_sha256=expected["content_sha256"]).version == "2.0.0"

    pointer = _pointer(vectors, "step2", "production")
    stored = (store_root(vectors, "step2") / pointer.releases[0].object.path).read_bytes()
    token_b = AccessToken.parse(keys["token_b"])
    assert recipient_ids(stored) == [AccessToken.parse(keys["token_a"]).token_id]
    with pytest.raises(DecryptionError):
        decrypt_bundle(stored, token_b.token_id, token_b.kek(), max_plaintext=MAX)


def _render_all(vectors: dict[str, Any], step: str, plaintext: bytes) -> None:
    bundle = parse_bundle(plaintext, content_sha256=sha256_hex(plaintext))
    renders = vectors["expected"][step]["renders"]
    assert renders
    for case in renders:
        compiled = compile_prompt(case["id"], bundle.prompts[case["id"]])
        if "text" in case:
            assert compiled.render(case["vars"]) == case["text"], case["id"]
        else:
            assert compiled.render_messages(case["vars"]) == case["messages"], case["id"]


def test_step1_renders_exactly(vectors: dict[str, Any]) -> None:
    _render_all(vectors, "step1", _bundle_bytes(vectors, "step1", "production", "token_a"))


def test_step2_renders_exactly(vectors: dict[str, Any]) -> None:
    _render_all(vectors, "step2", _bundle_bytes(vectors, "step2", "production", "token_a"))


def test_bundle_variables_are_what_jinja_finds(vectors: dict[str, Any]) -> None:
    from anvil_client.wire import spec_variables

    bundle = parse_bundle(vectors["bundle_1_0_0"], content_sha256="0" * 64)
    for prompt_id, spec in bundle.prompts.items():
        messages = [(m.role, m.template) for m in spec.messages] if spec.messages else None
        assert list(spec.variables) == spec_variables(spec.template, messages), prompt_id
