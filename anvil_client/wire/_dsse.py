"""DSSE v1 envelopes signed with Ed25519 (DESIGN §4).

>>> from anvil_client.wire import TrustedKey, generate_private_key, sign_envelope, verify_envelope
>>> key = generate_private_key()
>>> verify_envelope(sign_envelope(b"{}", key), [TrustedKey.from_key(key.public_key())])
b'{}'
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import FormatError, SignatureError
from anvil_client.wire._canonical import (
    b64decode_any,
    b64encode_std,
    canonical_json,
    parse_json_object,
)
from anvil_client.wire._keys import TrustedKey, key_id

POINTER_PAYLOAD_TYPE = "application/vnd.anvil.pointer.v2+json"


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(body), body)


def sign_envelope(
    body: bytes, key: Ed25519PrivateKey, payload_type: str = POINTER_PAYLOAD_TYPE
) -> bytes:
    """Return the canonical JSON bytes of a DSSE envelope over ``body``.

    The payload and signature are standard base64 with padding; ``keyid`` is the key's id.
    """
    sig = key.sign(pae(payload_type, body))
    envelope = {
        "payload": b64encode_std(body),
        "payloadType": payload_type,
        "signatures": [{"keyid": key_id(key.public_key()), "sig": b64encode_std(sig)}],
    }
    return canonical_json(envelope)


def verify_envelope(
    data: bytes,
    trusted_keys: Sequence[TrustedKey],
    payload_type: str = POINTER_PAYLOAD_TYPE,
) -> bytes:
    """Verify a DSSE envelope and return its payload bytes.

    The order is the one DESIGN §4 prescribes: a trusted signature first, then the payload
    type; the caller parses the returned body only afterwards.

    A signature's ``keyid`` only selects which trusted key to try; a signature without one
    is tried against every trusted key.

    Raises:
        FormatError: if the envelope is malformed, or (after a signature verified) of
            another payload type.
        SignatureError: if no signature verifies with a trusted key.
    """
    envelope_type, body, signatures = _parse_envelope(data)
    if _signing_key(signatures, pae(envelope_type, body), trusted_keys) is None:
        raise SignatureError("pointer signature does not verify with any trusted key")
    if envelope_type != payload_type:
        raise FormatError(f"envelope payloadType is {envelope_type!r}, expected {payload_type!r}")
    return body


def find_signing_key(data: bytes, trusted_keys: Sequence[TrustedKey]) -> TrustedKey | None:
    """The trusted key whose signature on a DSSE envelope verifies, or None if none does.

    Signatures are tried as ``verify_envelope`` tries them (a ``keyid`` selects the key);
    the payload type is not checked.

    Raises:
        FormatError: if the envelope is malformed.
        SignatureError: if it carries no signatures.
    """
    envelope_type, body, signatures = _parse_envelope(data)
    return _signing_key(signatures, pae(envelope_type, body), trusted_keys)


def _parse_envelope(data: bytes) -> tuple[str, bytes, list[object]]:
    """The payload type, payload bytes and signatures of an envelope, in DESIGN §4's checks."""
    envelope = parse_json_object(data, "pointer envelope")
    envelope_type = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if not isinstance(envelope_type, str):
        raise FormatError("pointer envelope has no payloadType string")
    if not isinstance(signatures, list):
        raise FormatError("pointer envelope has no signatures list")
    if not signatures:
        raise SignatureError("pointer envelope carries no signatures")
    return envelope_type, b64decode_any(envelope.get("payload"), "pointer payload"), signatures


def _signing_key(
    signatures: list[object], message: bytes, trusted_keys: Sequence[TrustedKey]
) -> TrustedKey | None:
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        try:
            sig = b64decode_any(entry.get("sig"), "signature")
        except FormatError:
            continue
        keyid = entry.get("keyid")
        if isinstance(keyid, str) and keyid:
            candidates = [k for k in trusted_keys if k.keyid == keyid.lower()]
        else:
            candidates = list(trusted_keys)
        for trusted in candidates:
            try:
                trusted.key.verify(sig, message)
            except InvalidSignature:
                continue
            return trusted
    return None
