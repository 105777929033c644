"""ACCESS_TOKEN parsing, KEK derivation, and Ed25519 key forms."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from anvil_client.errors import ConfigError
from anvil_client.wire import (
    TOKEN_RE,
    AccessToken,
    TrustedKey,
    derive_kek,
    generate_private_key,
    key_id,
    load_private_key,
    load_private_key_file,
    parse_public_key,
    private_key_pem,
    public_key_text,
    write_private_key_file,
)

# -- tokens -------------------------------------------------------------------------------


def test_vector_tokens_have_underscores_and_dashes_in_their_secrets(
    vectors: dict[str, Any],
) -> None:
    keys = vectors["keys"]
    for name, kek in (("token_a", "kek_a_hex"), ("token_b", "kek_b_hex")):
        text = keys[name]
        token = AccessToken.parse(text)
        secret_text = text[len("anvil_") + 13 :]
        assert token.token_id == text[6:18]
        assert token.secret == base64.urlsafe_b64decode(secret_text + "=")
        assert token.kek().hex() == keys[kek]
        assert token.text == text
    assert "_" in keys["token_a"][19:] and "-" in keys["token_b"][19:]


@given(st.binary(min_size=32, max_size=32))
def test_secrets_full_of_separators_parse_back(secret: bytes) -> None:
    token = AccessToken(token_id="abcdefghij12", secret=secret)
    assert AccessToken.parse(token.text) == token


def test_a_secret_that_starts_with_an_underscore() -> None:
    secret = base64.urlsafe_b64decode("__" + "A" * 41 + "=")
    token = AccessToken(token_id="0123456789ab", secret=secret)
    assert token.text == "anvil_0123456789ab___" + "A" * 41
    assert AccessToken.parse(token.text).secret == secret


def test_generate_round_trips_and_is_random() -> None:
    first, second = AccessToken.generate(), AccessToken.generate()
    assert first != second
    for token in (first, second):
        assert TOKEN_RE.match(token.text)
        assert len(token.secret) == 32
        assert AccessToken.parse(token.text) == token
        assert AccessToken.parse(f"  {token.text}\n") == token


@pytest.mark.parametrize(
    "text",
    [
        "",
        "anvil_",
        "anvil_abc_def",
        "anvil_ABCDEFGHIJKL_" + "A" * 43,  # upper-case token id
        "anvil_abcdefghijk_" + "A" * 43,  # 11-char id
        "anvil_abcdefghijklm_" + "A" * 43,  # 13-char id
        "anvil_abcdefghijkl_" + "A" * 42,
        "anvil_abcdefghijkl_" + "A" * 44,
        "anvil_abcdefghijkl_" + "A" * 42 + "=",
        "anvil_abcdefghijkl_" + "A" * 42 + "+",
        "Anvil_abcdefghijkl_" + "A" * 43,
        "xanvil_abcdefghijkl_" + "A" * 43,
        "anvil_abcdefghijkl_" + "A" * 43 + "\nanvil_x",
        "anvil_abcdefghijkl_" + "A" * 42 + "B",  # non-canonical last character
    ],
)
def test_malformed_tokens_raise_without_echoing(text: str) -> None:
    with pytest.raises(ConfigError, match="ACCESS_TOKEN is malformed") as caught:
        AccessToken.parse(text)
    secret_part = text[19:]
    if len(secret_part) > 8:
        assert secret_part not in str(caught.value)


def test_non_text_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        AccessToken.parse(None)  # type: ignore[arg-type]


def test_repr_and_str_hide_the_secret() -> None:
    token = AccessToken.generate()
    encoded = token.text.rsplit("_", 1)[-1][-20:]
    for shown in (repr(token), str(token), f"{token}", repr([token])):
        assert token.token_id in shown
        assert encoded not in shown
        assert repr(token.secret) not in shown


def test_matches_compares_the_full_text() -> None:
    token = AccessToken.generate()
    assert token.matches(token.text)
    assert token.matches(f" {token.text} ")
    assert not token.matches(token.text[:-1] + ("A" if token.text[-1] != "A" else "Q"))
    assert not token.matches(AccessToken.generate().text)
    assert not token.matches("")
    assert not token.matches("ünïcode")
    assert not token.matches(None)  # type: ignore[arg-type]


def test_kek_is_hkdf_sha256_with_the_design_parameters() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    token = AccessToken.generate()
    expected = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"anvil.v1",
        info=b"kek:" + token.token_id.encode(),
    ).derive(token.secret)
    assert token.kek() == derive_kek(token.token_id, token.secret) == expected
    other_id = AccessToken(token_id="zzzzzzzzzzzz", secret=token.secret)
    assert other_id.kek() != token.kek()


# -- keys ---------------------------------------------------------------------------------


def test_key_text_round_trip_and_keyid() -> None:
    key = generate_private_key().public_key()
    text = public_key_text(key)
    assert text.startswith("ed25519:")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(text[8:]) == raw
    import hashlib

    assert key_id(key) == hashlib.sha256(raw).hexdigest()
    trusted = TrustedKey.parse(text)
    assert trusted.keyid == key_id(key)
    assert trusted.text == text
    assert TrustedKey.parse(text.rstrip("=")).keyid == trusted.keyid  # padding optional


def test_pem_public_key_is_accepted() -> None:
    key = generate_private_key().public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert TrustedKey.parse(pem).keyid == key_id(key)
    assert TrustedKey.parse("\n  " + pem + "\n").keyid == key_id(key)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must look like"),
        ("ssh-ed25519 AAAA", "must look like"),
        ("ed25519:", "32 bytes"),
        ("ed25519:!!!!", "base64"),
        ("ed25519:" + base64.b64encode(b"\x01" * 31).decode(), "32 bytes"),
        ("ed25519:" + base64.b64encode(b"\x01" * 33).decode(), "32 bytes"),
        ("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "PEM"),
        ("-----BEGIN PUBLIC KEY-----\nünï\n-----END PUBLIC KEY-----\n", "PEM"),
    ],
)
def test_bad_public_keys(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_public_key(text)


def test_pem_of_another_algorithm_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(ConfigError, match="not an Ed25519"):
        parse_public_key(pem)


def test_private_key_files(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "signing.pem"
    write_private_key_file(key, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = load_private_key_file(path)
    assert public_key_text(loaded.public_key()) == public_key_text(key.public_key())
    assert load_private_key(private_key_pem(key).decode()).public_key() == key.public_key()
    with pytest.raises(ConfigError, match="already exists"):
        write_private_key_file(generate_private_key(), path)
    assert load_private_key_file(path).public_key() == key.public_key()
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key_file(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="unencrypted Ed25519"):
        load_private_key(b"garbage")
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ConfigError):
        load_private_key(encrypted)
