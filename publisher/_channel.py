"""A channel's name, and the keys its signed pointer must verify with before anything builds on it.

    >>> from publisher._channel import check_channel
    >>> check_channel("production")

Object paths, size caps and the pointer verification itself live once, in ``anvil_client.wire``;
this module only normalizes the keys given and words the refusal for a publisher.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from anvil_client.errors import ConfigError, FormatError, SignatureError, SizeLimitError
from anvil_client.wire import CHANNEL_RE, Pointer, TrustedKey, key_id, verify_pointer

__all__ = ["KeyLike", "check_channel", "trusted_keys_of", "verify_to_build"]

KeyLike = TrustedKey | Ed25519PublicKey | str
"""A public key: a TrustedKey, an Ed25519 public key, or its ``ed25519:…``/PEM text."""


def check_channel(channel: str) -> None:
    """Raises: ConfigError: if ``channel`` is not a valid channel name (DESIGN §1)."""
    if not isinstance(channel, str) or not CHANNEL_RE.match(channel):
        raise ConfigError(
            f"channel {str(channel)[:40]!r} is invalid: use 1-32 lowercase letters, digits and "
            "'-', starting with a letter or digit"
        )


def trusted_keys_of(keys: Iterable[KeyLike]) -> list[TrustedKey]:
    """Normalize ``ed25519:…``/PEM texts, public keys and TrustedKeys.

    Raises:
        ConfigError: if a text is not a public key.
    """
    out: list[TrustedKey] = []
    for key in keys:
        if isinstance(key, TrustedKey):
            out.append(key)
        elif isinstance(key, Ed25519PublicKey):
            out.append(TrustedKey(keyid=key_id(key), key=key))
        else:
            out.append(TrustedKey.parse(key))
    return out


def verify_to_build(
    envelope: bytes,
    keys: list[TrustedKey],
    *,
    project_id: str,
    channel: str,
    what: str,
    where: str,
) -> Pointer:
    """The one pointer verification of ``anvil_client.wire``, worded for building on ``what``
    (a pointer or history copy read from the store at ``where``); ``keys[0]`` is the signing
    key's own.

    Raises:
        SignatureError, FormatError, SizeLimitError: saying that nothing is built on it.
    """
    try:
        return verify_pointer(envelope, keys, project_id=project_id, channel=channel)
    except SignatureError as e:
        raise SignatureError(
            f"{what} in {where} is not signed by this signing key "
            f"(keyid {keys[0].keyid[:16]}) or a trusted key; refusing to build on it "
            "(while rotating keys, pass the old public key as a trusted key)"
        ) from e
    except FormatError as e:
        raise FormatError(f"refusing to build on {what} in {where}: {e}") from e
    except SizeLimitError as e:
        raise SizeLimitError(f"refusing to build on {what} in {where}: {e}") from e
