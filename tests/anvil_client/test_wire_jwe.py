"""JWE bundles: round trips, interop with jwcrypto, tampering, algorithm and zip-bomb defences."""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
import zlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from anvil_client.errors import DecryptionError, FormatError, SizeLimitError
from anvil_client.wire import (
    BUNDLE_MEDIA_TYPE,
    AccessToken,
    b64url_encode,
    decrypt_bundle,
    encrypt_bundle,
    inflate_bounded,
    recipient_ids,
)

PLAINTEXT = json.dumps({"type": "anvil.bundle/v1", "text": "Grüße " * 200}).encode()
MAX = 1024 * 1024
HEADER = {"alg": "A256KW", "cty": BUNDLE_MEDIA_TYPE, "enc": "A256GCM", "zip": "DEF"}


@pytest.fixture(scope="module")
def tokens() -> list[AccessToken]:
    return [AccessToken.generate() for _ in range(3)]


def _recipients(tokens: list[AccessToken]) -> dict[str, bytes]:
    return {t.token_id: t.kek() for t in tokens}


def _build(
    compressed: bytes,
    token: AccessToken,
    *,
    protected: dict[str, Any] | None = None,
    header: dict[str, Any] | None = None,
    cek: bytes | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """A JWE assembled by hand, so tests can vary what encrypt_bundle never would."""
    cek = cek or AESGCM.generate_key(bit_length=256)
    protected_b64 = b64url_encode(json.dumps(protected or HEADER).encode())
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, compressed, protected_b64.encode())
    recipient = {
        "header": {"kid": token.token_id, **(header or {})},
        "encrypted_key": b64url_encode(aes_key_wrap(token.kek(), cek)),
    }
    jwe = {
        "protected": protected_b64,
        "recipients": [recipient],
        "iv": b64url_encode(iv),
        "ciphertext": b64url_encode(sealed[:-16]),
        "tag": b64url_encode(sealed[-16:]),
        **(extra or {}),
    }
    return json.dumps(jwe).encode()


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _jwk(token: AccessToken) -> Any:
    from jwcrypto import jwk

    return jwk.JWK(kty="oct", k=b64url_encode(token.kek()))


def _edit(data: bytes, **changes: Any) -> bytes:
    jwe = json.loads(data)
    jwe.update(changes)
    return json.dumps(jwe).encode()


def _flip(b64: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
    raw[0] ^= 1
    return b64url_encode(bytes(raw))


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3])
def test_round_trip_for_each_recipient(tokens: list[AccessToken], count: int) -> None:
    chosen = tokens[:count]
    data = encrypt_bundle(PLAINTEXT, _recipients(chosen))
    assert sorted(recipient_ids(data)) == sorted(t.token_id for t in chosen)
    for token in chosen:
        assert decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=MAX) == PLAINTEXT


def test_shape_is_the_general_serialization_of_design_5(tokens: list[AccessToken]) -> None:
    jwe = json.loads(encrypt_bundle(PLAINTEXT, _recipients(tokens[:2])))
    assert set(jwe) == {"protected", "recipients", "iv", "ciphertext", "tag"}
    protected = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    assert protected == HEADER
    assert len(base64.urlsafe_b64decode(jwe["iv"] + "==")) == 12
    assert len(base64.urlsafe_b64decode(jwe["tag"] + "==")) == 16
    for recipient in jwe["recipients"]:
        assert set(recipient) == {"header", "encrypted_key"}
        assert set(recipient["header"]) == {"kid"}
    # The content is compressed: far smaller than the repetitive plaintext.
    assert len(jwe["ciphertext"]) < len(PLAINTEXT) / 4


def test_each_encryption_uses_a_fresh_cek_and_iv(tokens: list[AccessToken]) -> None:
    first = json.loads(encrypt_bundle(PLAINTEXT, _recipients(tokens[:1])))
    second = json.loads(encrypt_bundle(PLAINTEXT, _recipients(tokens[:1])))
    assert first["iv"] != second["iv"]
    assert first["recipients"][0]["encrypted_key"] != second["recipients"][0]["encrypted_key"]


def test_encrypt_refuses_no_recipients_and_bad_keks() -> None:
    with pytest.raises(ValueError, match="recipient"):
        encrypt_bundle(PLAINTEXT, {})
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_bundle(PLAINTEXT, {"abc": b"short"})


# -- interop with jwcrypto ----------------------------------------------------------------


def test_jwcrypto_decrypts_ours_with_each_token(tokens: list[AccessToken]) -> None:
    from jwcrypto import jwe

    data = encrypt_bundle(PLAINTEXT, _recipients(tokens)).decode()
    for token in tokens:
        reader = jwe.JWE()
        reader.deserialize(data, key=_jwk(token))
        assert reader.payload == PLAINTEXT
        assert all(h["cty"] == BUNDLE_MEDIA_TYPE for h in reader.jose_header)


def test_jwcrypto_rejects_ours_with_an_outsiders_key(tokens: list[AccessToken]) -> None:
    from jwcrypto import jwe
    from jwcrypto.common import JWException

    data = encrypt_bundle(PLAINTEXT, _recipients(tokens[:2])).decode()
    with pytest.raises(JWException):
        jwe.JWE().deserialize(data, key=_jwk(AccessToken.generate()))


@pytest.mark.parametrize("count", [1, 2, 3])
def test_we_decrypt_jwcrypto_output(tokens: list[AccessToken], count: int) -> None:
    from jwcrypto import jwe

    writer = jwe.JWE(PLAINTEXT, protected=json.dumps(HEADER))
    for token in tokens[:count]:
        writer.add_recipient(_jwk(token), header=json.dumps({"kid": token.token_id}))
    data = writer.serialize(compact=False).encode()
    # jwcrypto writes one recipient in the flattened form, several in the general form.
    assert ("recipients" in json.loads(data)) == (count > 1)
    for token in tokens[:count]:
        assert decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=MAX) == PLAINTEXT
    outsider = tokens[count] if count < 3 else AccessToken.generate()
    with pytest.raises(DecryptionError):
        decrypt_bundle(data, outsider.token_id, outsider.kek(), max_plaintext=MAX)


# -- who may decrypt ----------------------------------------------------------------------


def test_non_recipient_token_is_a_decryption_error_without_secrets(
    tokens: list[AccessToken],
) -> None:
    data = encrypt_bundle(PLAINTEXT, _recipients(tokens[:2]))
    outsider = tokens[2]
    with pytest.raises(DecryptionError, match="not a recipient") as caught:
        decrypt_bundle(data, outsider.token_id, outsider.kek(), max_plaintext=MAX)
    assert outsider.text not in str(caught.value)
    assert outsider.kek().hex() not in str(caught.value)


def test_wrong_kek_for_a_listed_kid_fails(tokens: list[AccessToken]) -> None:
    data = encrypt_bundle(PLAINTEXT, _recipients(tokens[:1]))
    with pytest.raises(DecryptionError, match="cannot be decrypted"):
        decrypt_bundle(data, tokens[0].token_id, tokens[1].kek(), max_plaintext=MAX)
    with pytest.raises(DecryptionError):
        decrypt_bundle(data, tokens[0].token_id, b"\x00" * 16, max_plaintext=MAX)


@pytest.mark.parametrize("field", ["ciphertext", "tag", "iv"])
def test_tampered_fields_fail_authentication(tokens: list[AccessToken], field: str) -> None:
    data = encrypt_bundle(PLAINTEXT, _recipients(tokens[:1]))
    tampered = _edit(data, **{field: _flip(json.loads(data)[field])})
    with pytest.raises(DecryptionError):
        decrypt_bundle(tampered, tokens[0].token_id, tokens[0].kek(), max_plaintext=MAX)


def test_tampered_encrypted_key_fails(tokens: list[AccessToken]) -> None:
    jwe = json.loads(encrypt_bundle(PLAINTEXT, _recipients(tokens[:1])))
    jwe["recipients"][0]["encrypted_key"] = _flip(jwe["recipients"][0]["encrypted_key"])
    with pytest.raises(DecryptionError):
        decrypt_bundle(
            json.dumps(jwe).encode(), tokens[0].token_id, tokens[0].kek(), max_plaintext=MAX
        )


def test_tampered_protected_header_fails(tokens: list[AccessToken]) -> None:
    data = encrypt_bundle(PLAINTEXT, _recipients(tokens[:1]))
    # Same meaning, other bytes: the AAD differs, so the tag cannot verify.
    respelled = b64url_encode(json.dumps(HEADER, indent=1).encode())
    with pytest.raises(DecryptionError):
        decrypt_bundle(
            _edit(data, protected=respelled), tokens[0].token_id, tokens[0].kek(), max_plaintext=MAX
        )
    # Dropping zip from the header is noticed too.
    no_zip = b64url_encode(json.dumps({k: v for k, v in HEADER.items() if k != "zip"}).encode())
    with pytest.raises(DecryptionError):
        decrypt_bundle(
            _edit(data, protected=no_zip), tokens[0].token_id, tokens[0].kek(), max_plaintext=MAX
        )


def test_extra_aad_is_authenticated(tokens: list[AccessToken]) -> None:
    token = tokens[0]
    data = encrypt_bundle(PLAINTEXT, _recipients([token]))
    with pytest.raises(DecryptionError):
        decrypt_bundle(_edit(data, aad="eHl6"), token.token_id, token.kek(), max_plaintext=MAX)


def test_a_short_cek_under_a256kw_is_refused(tokens: list[AccessToken]) -> None:
    token = tokens[0]
    data = _build(_deflate(PLAINTEXT), token, cek=os.urandom(16))
    with pytest.raises(DecryptionError):
        decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=MAX)


# -- algorithms and headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("protected", "header", "message"),
    [
        ({**HEADER, "alg": "A128KW"}, {}, "A256KW"),
        ({**HEADER, "alg": "dir"}, {}, "A256KW"),
        ({**HEADER, "alg": "RSA-OAEP"}, {}, "A256KW"),
        ({**HEADER, "enc": "A128GCM"}, {}, "A256GCM"),
        ({**HEADER, "enc": "A256CBC-HS512"}, {}, "A256GCM"),
        ({k: v for k, v in HEADER.items() if k != "alg"}, {}, "A256KW"),
        ({**HEADER, "zip": "GZIP"}, {}, "zip"),
        ({**HEADER, "crit": ["exp"], "exp": 1}, {}, "critical"),
        ({**HEADER, "crit": ["zip"]}, {}, "critical"),
        (HEADER, {"alg": "A256KW"}, "repeats"),
        ({k: v for k, v in HEADER.items() if k != "zip"}, {"zip": "DEF"}, "protected header"),
    ],
)
def test_headers_other_than_design_5_are_refused(
    tokens: list[AccessToken], protected: dict[str, Any], header: dict[str, Any], message: str
) -> None:
    token = tokens[0]
    data = _build(_deflate(PLAINTEXT), token, protected=protected, header=header)
    with pytest.raises(FormatError, match=message):
        decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=MAX)


def test_alg_in_the_recipient_header_is_standard_and_accepted(tokens: list[AccessToken]) -> None:
    token = tokens[0]
    protected = {"enc": "A256GCM", "zip": "DEF"}
    data = _build(_deflate(PLAINTEXT), token, protected=protected, header={"alg": "A256KW"})
    assert decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=MAX) == PLAINTEXT


def test_uncompressed_content_is_accepted_and_capped(tokens: list[AccessToken]) -> None:
    token = tokens[0]
    protected = {k: v for k, v in HEADER.items() if k != "zip"}
    data = _build(PLAINTEXT, token, protected=protected)
    assert decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=MAX) == PLAINTEXT
    with pytest.raises(SizeLimitError):
        decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=len(PLAINTEXT) - 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "UTF-8 JSON"),
        (b"{}", "protected header"),
        (b'{"protected": "e30", "iv": "", "tag": "", "ciphertext": ""}', "recipients"),
        (b'{"protected": "e30", "recipients": []}', "recipients"),
        (b'{"protected": "e30", "recipients": ["x"]}', "not an object"),
        (b'{"protected": "e30", "recipients": [{"header": []}]}', "header is not an object"),
        (b'{"protected": "e30", "recipients": [{"header": {}}]}', "kid"),
        (b'{"protected": "e30", "recipients": [{"header": {"kid": "a"}}]}', "encrypted_key"),
        (b'{"protected": "%%", "recipients": []}', "base64"),
        (b'{"protected": "W10", "recipients": []}', "not a JSON object"),
        (b'{"protected": "e30", "unprotected": 1, "recipients": []}', "unprotected"),
        (
            b'{"protected": "e30", "encrypted_key": "AA", "recipients": [{"header": {}}]}',
            "mixes",
        ),
    ],
)
def test_malformed_jwe_is_a_format_error(
    tokens: list[AccessToken], data: bytes, message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        decrypt_bundle(data, tokens[0].token_id, tokens[0].kek(), max_plaintext=MAX)


def test_wrong_iv_length_is_a_format_error(tokens: list[AccessToken]) -> None:
    token = tokens[0]
    data = encrypt_bundle(PLAINTEXT, _recipients([token]))
    with pytest.raises(FormatError, match="iv or tag"):
        decrypt_bundle(
            _edit(data, iv=b64url_encode(b"\x00" * 16)),
            token.token_id,
            token.kek(),
            max_plaintext=MAX,
        )


# -- bounded inflate ----------------------------------------------------------------------


def _bomb(total: int) -> bytes:
    """A raw DEFLATE stream of ``total`` zero bytes, built without holding them in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(4 * 1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(total // len(chunk))]
    parts.append(compressor.flush())
    return b"".join(parts)


def test_zip_bomb_stops_at_the_cap_without_inflating_it_all(tokens: list[AccessToken]) -> None:
    token = tokens[0]
    bomb = _bomb(256 * 1024 * 1024)  # 256 MiB of zeros in about 250 KiB
    assert len(bomb) < 1024 * 1024
    data = _build(bomb, token)
    tracemalloc.start()
    try:
        with pytest.raises(SizeLimitError, match="1048576-byte limit"):
            decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=MAX)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The reader holds the JWE, the ciphertext and at most the cap plus one byte of output.
    assert peak < 8 * 1024 * 1024, peak


def test_inflate_bounded_edges() -> None:
    data = os.urandom(1000)
    stream = _deflate(data)
    assert inflate_bounded(stream, 1000) == data
    with pytest.raises(SizeLimitError):
        inflate_bounded(stream, 999)
    with pytest.raises(FormatError, match="truncated"):
        inflate_bounded(stream[:-5], 10_000)
    with pytest.raises(FormatError, match="extra bytes"):
        inflate_bounded(stream + b"trailing", 10_000)
    with pytest.raises(FormatError, match="corrupt"):
        inflate_bounded(b"\xff" * 20, 10_000)
    assert inflate_bounded(_deflate(b""), 0) == b""
