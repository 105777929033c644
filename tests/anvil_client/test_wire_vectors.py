"""The independent wire-format vectors verify, decrypt and render exactly as expected.json says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from anvil_client.errors import DecryptionError, SignatureError
from anvil_client.wire import (
    AccessToken,
    Pointer,
    TrustedKey,
    compile_prompt,
    decrypt_bundle,
    derive_kek,
    key_id,
    parse_bundle,
    parse_public_key,
    recipient_ids,
    select_release,
    sha256_hex,
    verify_envelope,
)

MAX = 64 * 1024 * 1024


def _project_root(vectors: dict[str, Any], step: str) -> Path:
    root: Path = vectors[step]
    project: str = vectors["keys"]["project_id"]
    return root / "projects" / project


def _pointer(vectors: dict[str, Any], step: str, channel: str, key: str = "trusted_key") -> Pointer:
    envelope = (_project_root(vectors, step) / "channels" / f"{channel}.json").read_bytes()
    trusted = TrustedKey.parse(vectors["keys"][key])
    return Pointer.parse(verify_envelope(envelope, [trusted]))


def _bundle_bytes(vectors: dict[str, Any], step: str, channel: str, token: str) -> bytes:
    pointer = _pointer(vectors, step, channel)
    release = pointer.release
    release.object.check_location(vectors["keys"]["project_id"])
    stored: bytes = (vectors[step] / release.object.path).read_bytes()
    assert len(stored) == release.object.size
    assert sha256_hex(stored) == release.object.sha256
    if release.object.encoding == "json":
        return stored
    access = AccessToken.parse(vectors["keys"][token])
    return decrypt_bundle(stored, access.token_id, access.kek(), max_plaintext=MAX)


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
    assert pointer.release.version == expected["version"]
    assert pointer.channel == channel
    assert pointer.project_id == vectors["keys"]["project_id"]
    assert select_release(pointer, "any-instance") == pointer.release


def test_history_copies_verify_and_match(vectors: dict[str, Any]) -> None:
    trusted = [TrustedKey.parse(vectors["keys"]["trusted_key"])]
    history = sorted((_project_root(vectors, "step2") / "channels").rglob("history/*.json"))
    assert len(history) == 3
    for path in history:
        pointer = Pointer.parse(verify_envelope(path.read_bytes(), trusted))
        assert path.name == f"{pointer.sequence:012d}.json"


def test_untrusted_key_rejects_every_pointer(vectors: dict[str, Any]) -> None:
    untrusted = [TrustedKey.parse(vectors["keys"]["untrusted_key"])]
    for envelope in (_project_root(vectors, "step2") / "channels").glob("*.json"):
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
    assert pointer.release.object.encoding == "json"
    assert _bundle_bytes(vectors, "step1", "development", "token_a") == vectors["bundle_1_0_0"]


def test_step2_decrypts_for_token_a_only(vectors: dict[str, Any]) -> None:
    keys = vectors["keys"]
    plaintext = _bundle_bytes(vectors, "step2", "production", "token_a")
    expected = vectors["expected"]["step2"]["production"]
    assert sha256_hex(plaintext) == expected["content_sha256"]
    assert parse_bundle(plaintext, content_sha256=expected["content_sha256"]).version == "2.0.0"

    pointer = _pointer(vectors, "step2", "production")
    stored = (vectors["step2"] / pointer.release.object.path).read_bytes()
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
