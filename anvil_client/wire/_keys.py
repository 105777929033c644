"""Ed25519 keys: the ``ed25519:<base64>`` text form, PEM, and key ids.

>>> from anvil_client.wire import TrustedKey
>>> TrustedKey.parse("ed25519:uhIT/MMJEKl24xuQ440NefwCbt8ZIJmSkGXOsN/iI/k=").keyid[:8]
'08c189d1'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from anvil_client.errors import ConfigError

_PREFIX = "ed25519:"


@dataclass(frozen=True)
class TrustedKey:
    """A public key the client trusts to sign pointers."""

    keyid: str
    key: Ed25519PublicKey

    @classmethod
    def parse(cls, text: str) -> TrustedKey:
        """Parse ``ed25519:<base64>`` or PEM text.

        Raises:
            ConfigError: if the text is not an Ed25519 public key.
        """
        return cls.from_key(parse_public_key(text))

    @classmethod
    def from_key(cls, key: Ed25519PublicKey) -> TrustedKey:
        return cls(keyid=key_id(key), key=key)

    @property
    def text(self) -> str:
        return public_key_text(self.key)


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def key_id(key: Ed25519PublicKey) -> str:
    """Lowercase hex SHA-256 of the raw 32-byte public key (DESIGN §4)."""
    return hashlib.sha256(raw_public_bytes(key)).hexdigest()


def public_key_text(key: Ed25519PublicKey) -> str:
    """``ed25519:<standard base64 of the raw 32 bytes>``, the form users paste into config."""
    return _PREFIX + base64.b64encode(raw_public_bytes(key)).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Parse ``ed25519:<standard base64 of 32 bytes>`` or a PEM SubjectPublicKeyInfo.

    Raises:
        ConfigError: if the text is neither form or not an Ed25519 key.
    """
    if not isinstance(text, str):
        raise ConfigError("trusted key must be text")
    stripped = text.strip()
    if stripped.startswith(_PREFIX):
        body = stripped[len(_PREFIX) :].strip()
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ConfigError("trusted key is not valid base64 after 'ed25519:'") from e
        if len(raw) != 32:
            raise ConfigError(f"trusted key must be 32 bytes, got {len(raw)}")
        try:
            return Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as e:
            raise ConfigError("trusted key is not a valid Ed25519 public key") from e
    if stripped.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization  # 20 ms: only for PEM

        try:
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
        except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as e:
            raise ConfigError("trusted key PEM could not be read") from e
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("trusted key PEM is not an Ed25519 public key")
        return key
    raise ConfigError("trusted key must look like 'ed25519:<base64>' or be a PEM public key")


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM; keep it out of logs and repositories."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes | str) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 private key.

    Raises:
        ConfigError: if the PEM cannot be read or is not Ed25519.
    """
    from cryptography.hazmat.primitives import serialization

    try:
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm) as e:
        raise ConfigError("signing key is not an unencrypted Ed25519 PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("signing key is not an Ed25519 private key")
    return key


def load_private_key_file(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a signing key from a PEM file.

    Raises:
        ConfigError: if the file cannot be read or holds no Ed25519 private key.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read signing key file {path}: {e.strerror}") from e
    return load_private_key(data)


def write_private_key_file(key: Ed25519PrivateKey, path: str | os.PathLike[str]) -> None:
    """Write the key as PEM with mode 0600, refusing to overwrite an existing file.

    Raises:
        ConfigError: if the file exists or cannot be written.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise ConfigError(f"{path} already exists; refusing to overwrite a key") from e
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from e
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
