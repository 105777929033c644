"""DSSE envelopes: PAE, signing, verification order, errors; cross-checked with securesystemslib."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import FormatError, SignatureError
from anvil_client.wire import (
    POINTER_PAYLOAD_TYPE,
    TrustedKey,
    find_signing_key,
    generate_private_key,
    key_id,
    pae,
    sign_envelope,
    verify_envelope,
)

BODY = b'{"type":"anvil.pointer/v2","sequence":1}'


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def trusted(key: Ed25519PrivateKey) -> list[TrustedKey]:
    return [TrustedKey.from_key(key.public_key())]


def _envelope(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(data)
    return value


def _dump(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope).encode()


def test_pae_bytes_are_the_dsse_v1_encoding() -> None:
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    assert pae(POINTER_PAYLOAD_TYPE, b"hi") == (
        b"DSSEv1 37 application/vnd.anvil.pointer.v2+json 2 hi"
    )
    # LEN counts bytes, not characters.
    assert pae("é", b"\xff\x00") == b"DSSEv1 2 \xc3\xa9 2 \xff\x00"


def test_round_trip_and_envelope_shape(key: Ed25519PrivateKey, trusted: list[TrustedKey]) -> None:
    data = sign_envelope(BODY, key)
    envelope = _envelope(data)
    assert envelope["payloadType"] == POINTER_PAYLOAD_TYPE
    assert base64.b64decode(envelope["payload"], validate=True) == BODY
    [signature] = envelope["signatures"]
    assert signature["keyid"] == key_id(key.public_key())
    assert len(base64.b64decode(signature["sig"], validate=True)) == 64
    assert verify_envelope(data, trusted) == BODY


def test_url_safe_unpadded_base64_is_accepted(
    key: Ed25519PrivateKey, trusted: list[TrustedKey]
) -> None:
    # A body whose standard base64 contains '+' and '/' so the URL-safe spelling differs.
    body = b'{"x":"\xfb\xff\xbe"}'
    envelope = _envelope(sign_envelope(body, key))
    for field in ("payload",):
        envelope[field] = base64.urlsafe_b64encode(base64.b64decode(envelope[field])).decode()
        envelope[field] = envelope[field].rstrip("=")
    sig = envelope["signatures"][0]
    sig["sig"] = base64.urlsafe_b64encode(base64.b64decode(sig["sig"])).decode().rstrip("=")
    assert "-" in envelope["payload"] or "_" in envelope["payload"]
    assert verify_envelope(_dump(envelope), trusted) == body


def test_no_keyid_tries_every_trusted_key(key: Ed25519PrivateKey) -> None:
    others = [TrustedKey.from_key(generate_private_key().public_key()) for _ in range(3)]
    envelope = _envelope(sign_envelope(BODY, key))
    del envelope["signatures"][0]["keyid"]
    trusted = [*others, TrustedKey.from_key(key.public_key())]
    assert verify_envelope(_dump(envelope), trusted) == BODY
    envelope["signatures"][0]["keyid"] = ""
    assert verify_envelope(_dump(envelope), trusted) == BODY
    with pytest.raises(SignatureError):
        verify_envelope(_dump(envelope), others)


def test_unknown_keyid_is_not_tried(key: Ed25519PrivateKey, trusted: list[TrustedKey]) -> None:
    envelope = _envelope(sign_envelope(BODY, key))
    envelope["signatures"][0]["keyid"] = "ab" * 32
    with pytest.raises(SignatureError):
        verify_envelope(_dump(envelope), trusted)


def test_keyid_in_upper_case_still_selects_the_key(
    key: Ed25519PrivateKey, trusted: list[TrustedKey]
) -> None:
    envelope = _envelope(sign_envelope(BODY, key))
    envelope["signatures"][0]["keyid"] = envelope["signatures"][0]["keyid"].upper()
    assert verify_envelope(_dump(envelope), trusted) == BODY


def test_one_good_signature_among_bad_ones_is_enough(
    key: Ed25519PrivateKey, trusted: list[TrustedKey]
) -> None:
    stranger = generate_private_key()
    good = _envelope(sign_envelope(BODY, key))["signatures"][0]
    bad = _envelope(sign_envelope(BODY, stranger))["signatures"][0]
    envelope = _envelope(sign_envelope(BODY, key))
    envelope["signatures"] = [bad, "junk", {"sig": 5}, {"keyid": good["keyid"], "sig": "!!"}, good]
    assert verify_envelope(_dump(envelope), trusted) == BODY


def test_find_signing_key_names_the_key_that_verifies(key: Ed25519PrivateKey) -> None:
    mine = TrustedKey.from_key(key.public_key())
    others = [TrustedKey.from_key(generate_private_key().public_key()) for _ in range(2)]
    data = sign_envelope(BODY, key, payload_type="application/vnd.other+json")
    assert find_signing_key(data, [others[0], mine, others[1]]) is mine
    assert find_signing_key(data, others) is None


def test_tampered_payload_fails(key: Ed25519PrivateKey, trusted: list[TrustedKey]) -> None:
    envelope = _envelope(sign_envelope(BODY, key))
    envelope["payload"] = base64.b64encode(BODY.replace(b"1", b"2")).decode()
    with pytest.raises(SignatureError):
        verify_envelope(_dump(envelope), trusted)


def test_tampered_payload_type_is_a_signature_error_not_a_type_error(
    key: Ed25519PrivateKey, trusted: list[TrustedKey]
) -> None:
    # The signature covers the type through PAE, and it is checked first: an attacker who
    # swaps the type learns nothing from a different error.
    envelope = _envelope(sign_envelope(BODY, key))
    envelope["payloadType"] = "application/json"
    with pytest.raises(SignatureError):
        verify_envelope(_dump(envelope), trusted)


def test_validly_signed_other_type_is_refused_after_the_signature(
    key: Ed25519PrivateKey, trusted: list[TrustedKey]
) -> None:
    data = sign_envelope(BODY, key, payload_type="application/vnd.other+json")
    with pytest.raises(FormatError, match="payloadType"):
        verify_envelope(data, trusted)
    assert verify_envelope(data, trusted, payload_type="application/vnd.other+json") == BODY


def test_untrusted_key_fails(key: Ed25519PrivateKey) -> None:
    stranger = [TrustedKey.from_key(generate_private_key().public_key())]
    with pytest.raises(SignatureError):
        verify_envelope(sign_envelope(BODY, key), stranger)
    with pytest.raises(SignatureError):
        verify_envelope(sign_envelope(BODY, key), [])


def test_empty_signatures(key: Ed25519PrivateKey, trusted: list[TrustedKey]) -> None:
    envelope = _envelope(sign_envelope(BODY, key))
    envelope["signatures"] = []
    with pytest.raises(SignatureError, match="no signatures"):
        verify_envelope(_dump(envelope), trusted)


def test_signature_of_wrong_length_fails(key: Ed25519PrivateKey, trusted: list[TrustedKey]) -> None:
    envelope = _envelope(sign_envelope(BODY, key))
    envelope["signatures"][0]["sig"] = base64.b64encode(b"\x00" * 63).decode()
    with pytest.raises(SignatureError):
        verify_envelope(_dump(envelope), trusted)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[]", "not a JSON object"),
        (b'{"payloadType": 1, "payload": "", "signatures": []}', "payloadType"),
        (b'{"payload": "", "signatures": []}', "payloadType"),
        (b'{"payloadType": "t", "payload": "", "signatures": {}}', "signatures"),
        (b'{"payloadType": "t", "payload": "", "signatures": null}', "signatures"),
        (b'{"payloadType": "t", "signatures": [{"sig": "AA=="}]}', "payload"),
        (b'{"payloadType": "t", "payload": "%%%", "signatures": [{"sig": "AA=="}]}', "base64"),
        (b'{"payloadType": "t", "payload": 7, "signatures": [{"sig": "AA=="}]}', "base64"),
        (b'{"payloadType": "t", "payloadType": "u", "payload": "", "signatures": []}', "repeats"),
        (b'{"payloadType": NaN}', "UTF-8 JSON"),
    ],
)
def test_malformed_envelopes_are_format_errors(
    trusted: list[TrustedKey], data: bytes, message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        verify_envelope(data, trusted)


def test_deeply_nested_json_is_a_format_error(trusted: list[TrustedKey]) -> None:
    with pytest.raises(FormatError):
        verify_envelope(b"[" * 100_000 + b"]" * 100_000, trusted)


# -- securesystemslib: an independent DSSE implementation ---------------------------------


def _sslib_key(key: Ed25519PrivateKey) -> Any:
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    return SSlibKey.from_crypto(key.public_key(), keyid=key_id(key.public_key()))


def test_our_envelopes_verify_with_securesystemslib(key: Ed25519PrivateKey) -> None:
    from securesystemslib.dsse import Envelope

    envelope = Envelope.from_dict(json.loads(sign_envelope(BODY, key)))
    assert envelope.pae() == pae(POINTER_PAYLOAD_TYPE, BODY)
    accepted = envelope.verify([_sslib_key(key)], threshold=1)
    assert list(accepted) == [key_id(key.public_key())]


def test_securesystemslib_envelopes_verify_with_us(
    key: Ed25519PrivateKey, trusted: list[TrustedKey]
) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

    envelope = Envelope(payload=BODY, payload_type=POINTER_PAYLOAD_TYPE, signatures={})
    envelope.sign(CryptoSigner(key, public_key=_sslib_key(key)))
    data = json.dumps(envelope.to_dict()).encode()
    assert verify_envelope(data, trusted) == BODY


def test_securesystemslib_rejects_our_tampered_envelope(key: Ed25519PrivateKey) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    envelope = _envelope(sign_envelope(BODY, key))
    envelope["payloadType"] = "application/json"
    with pytest.raises(VerificationError):
        Envelope.from_dict(envelope).verify([_sslib_key(key)], threshold=1)
