"""JWE (RFC 7516) general JSON serialization of bundles: A256KW per token, A256GCM, DEF.

>>> from anvil_client.wire import AccessToken, decrypt_bundle, encrypt_bundle
>>> token = AccessToken.generate()
>>> jwe = encrypt_bundle(b"{}", {token.token_id: token.kek()})
>>> decrypt_bundle(jwe, token.token_id, token.kek(), max_plaintext=1024)
b'{}'
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from anvil_client.errors import DecryptionError, FormatError, SizeLimitError
from anvil_client.wire._canonical import (
    b64decode_any,
    b64url_encode,
    canonical_json,
    parse_json_object,
)

BUNDLE_MEDIA_TYPE = "application/vnd.anvil.bundle.v1+json"
PROTECTED_HEADER = {"alg": "A256KW", "cty": BUNDLE_MEDIA_TYPE, "enc": "A256GCM", "zip": "DEF"}


def encrypt_bundle(plaintext: bytes, recipients: Mapping[str, bytes]) -> bytes:
    """Encrypt bundle bytes for each ``token_id -> KEK`` and return the JWE JSON bytes.

    Raises:
        ValueError: if there are no recipients or a KEK is not 32 bytes.
    """
    if not recipients:
        raise ValueError("at least one recipient is required")
    protected = b64url_encode(canonical_json(PROTECTED_HEADER))
    cek = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(12)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    compressed = compressor.compress(plaintext) + compressor.flush()
    sealed = AESGCM(cek).encrypt(iv, compressed, protected.encode("ascii"))
    entries = []
    for token_id, kek in sorted(recipients.items()):
        if len(kek) != 32:
            raise ValueError("a KEK must be 32 bytes")
        entries.append(
            {"encrypted_key": b64url_encode(aes_key_wrap(kek, cek)), "header": {"kid": token_id}}
        )
    jwe = {
        "ciphertext": b64url_encode(sealed[:-16]),
        "iv": b64url_encode(iv),
        "protected": protected,
        "recipients": entries,
        "tag": b64url_encode(sealed[-16:]),
    }
    return canonical_json(jwe)


def recipient_ids(data: bytes) -> list[str]:
    """The ``kid`` of every recipient of a JWE, without decrypting anything.

    Raises:
        FormatError: if the JWE is malformed.
    """
    jwe = parse_json_object(data, "bundle JWE")
    return [kid for _, kid, _ in _recipients(jwe)]


def decrypt_bundle(data: bytes, token_id: str, kek: bytes, *, max_plaintext: int) -> bytes:
    """Decrypt a JWE bundle object with one token's KEK, inflating at most ``max_plaintext``.

    Only ``alg: A256KW``, ``enc: A256GCM`` and an integrity-protected ``zip: DEF`` are
    accepted; header names must not repeat across the protected, shared and recipient
    headers, and ``crit`` is refused (this reader understands no extensions).

    Raises:
        FormatError: if the JWE is malformed or uses other algorithms.
        DecryptionError: if the token is not a recipient or a key or tag does not verify.
        SizeLimitError: if the inflated bundle would exceed ``max_plaintext`` bytes.
    """
    jwe = parse_json_object(data, "bundle JWE")
    protected_b64 = jwe.get("protected")
    if not isinstance(protected_b64, str) or not protected_b64.isascii():
        raise FormatError("bundle JWE has no protected header")
    protected = parse_json_object(
        b64decode_any(protected_b64, "JWE protected header"), "JWE protected header"
    )
    shared = jwe.get("unprotected", {})
    if not isinstance(shared, dict):
        raise FormatError("bundle JWE unprotected header is not an object")
    mine = [(header, key) for header, kid, key in _recipients(jwe) if kid == token_id]
    if not mine:
        raise DecryptionError(
            f"this ACCESS_TOKEN ({token_id}) is not a recipient of the bundle; "
            "it may have been revoked"
        )
    for header, _ in mine:
        _check_header(protected, shared, header)
    iv = b64decode_any(jwe.get("iv"), "JWE iv")
    tag = b64decode_any(jwe.get("tag"), "JWE tag")
    ciphertext = b64decode_any(jwe.get("ciphertext"), "JWE ciphertext")
    if len(iv) != 12 or len(tag) != 16:
        raise FormatError("bundle JWE iv or tag has the wrong length")
    aad = _aad(jwe, protected_b64)
    compressed = _decrypt_any(kek, [wrapped for _, wrapped in mine], iv, ciphertext + tag, aad)
    if compressed is None:
        raise DecryptionError(f"bundle cannot be decrypted with this ACCESS_TOKEN ({token_id})")
    if protected.get("zip") == "DEF":
        return inflate_bounded(compressed, max_plaintext)
    if len(compressed) > max_plaintext:
        raise SizeLimitError(f"bundle is larger than the {max_plaintext}-byte limit")
    return compressed


def _aad(jwe: dict[str, object], protected_b64: str) -> bytes:
    """The AES-GCM additional data: the protected header, then ``.`` and ``aad`` if present."""
    aad = protected_b64.encode("ascii")
    if "aad" in jwe:
        extra = jwe["aad"]
        if not isinstance(extra, str) or not extra.isascii():
            raise FormatError("bundle JWE aad is not a base64url string")
        aad += b"." + extra.encode("ascii")
    return aad


def _decrypt_any(
    kek: bytes, wrapped_keys: list[bytes], iv: bytes, sealed: bytes, aad: bytes
) -> bytes | None:
    """The plaintext under the first wrapped key that unwraps and verifies, else ``None``."""
    for wrapped in wrapped_keys:
        try:
            cek = aes_key_unwrap(kek, wrapped)
            if len(cek) != 32:
                continue  # A256GCM needs a 256-bit key; anything else is not ours
            return AESGCM(cek).decrypt(iv, sealed, aad)
        except (InvalidUnwrap, InvalidTag, ValueError):
            continue
    return None


def inflate_bounded(data: bytes, limit: int) -> bytes:
    """Raw DEFLATE (RFC 1951) decompression that stops past ``limit`` output bytes.

    At most ``limit + 1`` bytes are ever produced, whatever the ratio of the stream.

    Raises:
        SizeLimitError: if the output would exceed ``limit``.
        FormatError: if the stream is corrupt, truncated or followed by extra bytes.
    """
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as e:
        raise FormatError("bundle DEFLATE stream is corrupt") from e
    if len(out) > limit or inflater.unconsumed_tail:
        raise SizeLimitError(f"bundle inflates past the {limit}-byte limit")
    if not inflater.eof:
        raise FormatError("bundle DEFLATE stream is truncated")
    if inflater.unused_data:
        raise FormatError("bundle DEFLATE stream is followed by extra bytes")
    return out


def _recipients(jwe: dict[str, object]) -> list[tuple[dict[str, object], str, bytes]]:
    recipients = jwe.get("recipients")
    if recipients is None and "encrypted_key" in jwe:
        # The flattened JSON serialization (RFC 7516 §7.2.2) of a single recipient.
        recipients = [{"header": jwe.get("header", {}), "encrypted_key": jwe["encrypted_key"]}]
    elif "encrypted_key" in jwe or "header" in jwe:
        raise FormatError("bundle JWE mixes the general and flattened serializations")
    if not isinstance(recipients, list) or not recipients:
        raise FormatError("bundle JWE has no recipients")
    out = []
    for entry in recipients:
        if not isinstance(entry, dict):
            raise FormatError("bundle JWE recipient is not an object")
        header = entry.get("header", {})
        if not isinstance(header, dict):
            raise FormatError("bundle JWE recipient header is not an object")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise FormatError("bundle JWE recipient has no kid")
        out.append((header, kid, b64decode_any(entry.get("encrypted_key"), "JWE encrypted_key")))
    return out


def _check_header(
    protected: dict[str, object], shared: dict[str, object], recipient: dict[str, object]
) -> None:
    names = [*protected, *shared, *recipient]
    if len(names) != len(set(names)):
        raise FormatError("bundle JWE repeats a header parameter across its headers")
    joint = {**shared, **recipient, **protected}
    if joint.get("alg") != "A256KW" or joint.get("enc") != "A256GCM":
        raise FormatError("bundle JWE must use alg A256KW and enc A256GCM")
    if "zip" in shared or "zip" in recipient:
        raise FormatError("bundle JWE zip must be in the protected header")
    if joint.get("zip", "DEF") != "DEF":
        raise FormatError("bundle JWE uses an unsupported zip algorithm")
    if "crit" in joint:
        raise FormatError("bundle JWE has critical header parameters this client does not support")
