"""Inspect what a channel serves, verified the way a client verifies it, and export bootstraps.

    >>> from publisher import inspect
    >>> inspect("file:///srv/store", pid, "production", ["ed25519:..."]).version  # doctest: +SKIP
    '1.2.3'

``inspect`` checks the pointer signature with the keys given (never the store's word), the
project and channel, the object's size and SHA-256, and with an ACCESS_TOKEN decrypts the bundle
and checks its content hash and header. ``export_bootstrap`` packages the verified pointer and
plaintext as the bootstrap file of DESIGN §7.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature

from anvil_client.errors import ChecksumError, ConfigError, FormatError, NotFound, SignatureError
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import (
    AccessToken,
    Pointer,
    Release,
    TrustedKey,
    b64decode_any,
    decrypt_bundle,
    pae,
    parse_bundle,
    parse_json_object,
    recipient_ids,
    sha256_hex,
    verify_envelope,
)
from publisher._bundle import MAX_BUNDLE_SIZE
from publisher._layout import MAX_POINTER_SIZE, KeyLike, check_channel, pointer_key, trusted_keys_of

__all__ = ["Inspection", "export_bootstrap", "inspect"]


@dataclass(frozen=True)
class Inspection:
    """A verified summary of what a channel serves."""

    project_id: str
    channel: str
    sequence: int
    version: str
    prompt_set_id: str
    content_sha256: str
    keyid: str
    published_at: str
    expires_at: str | None
    expired: bool
    encoding: str
    object_path: str
    object_size: int
    recipients: tuple[str, ...] | None
    rollout_percent: int | None
    previous_version: str | None
    prompt_count: int | None
    pointer: Pointer
    envelope: bytes
    bundle: bytes | None

    def to_json(self) -> dict[str, Any]:
        """The ``anvil-publish inspect --json`` object."""
        return {
            "project_id": self.project_id,
            "channel": self.channel,
            "sequence": self.sequence,
            "version": self.version,
            "prompt_set_id": self.prompt_set_id,
            "content_sha256": self.content_sha256,
            "keyid": self.keyid,
            "published_at": self.published_at,
            "expires_at": self.expires_at,
            "expired": self.expired,
            "encoding": self.encoding,
            "object_path": self.object_path,
            "object_size": self.object_size,
            "recipients": None if self.recipients is None else list(self.recipients),
            "rollout_percent": self.rollout_percent,
            "previous_version": self.previous_version,
            "prompt_count": self.prompt_count,
        }


def inspect(
    store: ObjectStore | str,
    project_id: str,
    channel: str,
    trusted_keys: Iterable[KeyLike],
    access_token: str | AccessToken | None = None,
) -> Inspection:
    """Verify a channel's pointer and release object; decrypt and summarise with a token.

    Raises:
        ConfigError: for a bad channel, store URL, key or token, or no trusted key.
        NotFound: if the channel or its object does not exist.
        SignatureError: if no signature verifies with ``trusted_keys``.
        FormatError, ChecksumError: if the pointer, object or bundle is malformed or altered.
        DecryptionError: if ``access_token`` cannot decrypt the bundle.
        StoreError: if the store fails.
    """
    check_channel(channel)
    keys = trusted_keys_of(trusted_keys)
    if not keys:
        raise ConfigError("inspect needs at least one trusted public key to verify with")
    token = _token(access_token)
    owned = isinstance(store, str)
    opened = open_store(store) if isinstance(store, str) else store
    try:
        return _inspect(opened, project_id, channel, keys, token)
    finally:
        if owned:
            opened.close()


def export_bootstrap(
    store: ObjectStore | str,
    project_id: str,
    channel: str,
    trusted_keys: Iterable[KeyLike],
    access_token: str | AccessToken | None = None,
) -> bytes:
    """The bootstrap file of DESIGN §7: ``{"pointer": <envelope>, "bundle": "<plaintext>"}``.

    Everything is verified first (as :func:`inspect`); the bundle is the release's exact
    plaintext bytes as a string. An encrypted channel needs ``access_token``.

    Raises:
        ConfigError: if the channel is encrypted and no ``access_token`` is given.
        and everything :func:`inspect` raises.
    """
    result = inspect(store, project_id, channel, trusted_keys, access_token)
    if result.bundle is None:
        raise ConfigError(
            f"channel {channel!r} is encrypted: exporting it needs an ACCESS_TOKEN that can "
            "decrypt it"
        )
    document = {
        "pointer": json.loads(result.envelope),
        "bundle": result.bundle.decode("utf-8"),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _token(access_token: str | AccessToken | None) -> AccessToken | None:
    if access_token is None or isinstance(access_token, AccessToken):
        return access_token
    return AccessToken.parse(access_token)


def _inspect(
    store: ObjectStore,
    project_id: str,
    channel: str,
    keys: list[TrustedKey],
    token: AccessToken | None,
) -> Inspection:
    key = pointer_key(project_id, channel)
    try:
        envelope = store.get(key, max_size=MAX_POINTER_SIZE).data
    except NotFound as e:
        raise NotFound(
            f"channel {channel!r} of project {project_id} has no pointer in {store.url}"
        ) from e
    try:
        body = verify_envelope(envelope, keys)
    except SignatureError as e:
        ids = ", ".join(k.keyid[:16] for k in keys)
        raise SignatureError(
            f"the pointer of channel {channel!r} is not signed by a trusted key (tried {ids})"
        ) from e
    pointer = Pointer.parse(body)
    if pointer.project_id != project_id or pointer.channel != channel:
        raise FormatError(
            f"the pointer at {key} names project {pointer.project_id!r} channel {pointer.channel!r}"
        )
    release = pointer.release
    stored = _fetch(store, project_id, release)
    recipients = None
    plaintext = None
    if release.object.encoding == "json":
        plaintext = stored
    else:
        recipients = tuple(recipient_ids(stored))
        if token is not None:
            plaintext = decrypt_bundle(
                stored, token.token_id, token.kek(), max_plaintext=MAX_BUNDLE_SIZE
            )
    prompt_count = None
    if plaintext is not None:
        if sha256_hex(plaintext) != release.content_sha256:
            raise ChecksumError(f"the bundle of {release.version} does not match content_sha256")
        bundle = parse_bundle(plaintext, content_sha256=release.content_sha256)
        if (bundle.project_id, bundle.version, bundle.prompt_set_id) != (
            project_id,
            release.version,
            release.prompt_set_id,
        ):
            raise FormatError(
                f"the bundle says project {bundle.project_id!r} version {bundle.version!r}, "
                "not what its pointer says"
            )
        prompt_count = len(bundle.prompts)
    if pointer.rollout is not None:
        _fetch(store, project_id, pointer.rollout.previous)
    expires = pointer.expires
    return Inspection(
        project_id=project_id,
        channel=channel,
        sequence=pointer.sequence,
        version=release.version,
        prompt_set_id=release.prompt_set_id,
        content_sha256=release.content_sha256,
        keyid=_verified_keyid(envelope, body, keys),
        published_at=pointer.published_at,
        expires_at=pointer.expires_at,
        expired=expires is not None and expires <= datetime.now(UTC),
        encoding=release.object.encoding,
        object_path=release.object.path,
        object_size=release.object.size,
        recipients=recipients,
        rollout_percent=None if pointer.rollout is None else pointer.rollout.percent,
        previous_version=None if pointer.rollout is None else pointer.rollout.previous.version,
        prompt_count=prompt_count,
        pointer=pointer,
        envelope=envelope,
        bundle=plaintext,
    )


def _fetch(store: ObjectStore, project_id: str, release: Release) -> bytes:
    ref = release.object
    ref.check_location(project_id)
    try:
        data = store.get(ref.path, max_size=ref.size).data
    except NotFound as e:
        raise NotFound(f"the bundle object of {release.version} ({ref.path}) is missing") from e
    if len(data) != ref.size or sha256_hex(data) != ref.sha256:
        raise ChecksumError(f"{ref.path} does not match the size and sha256 in its pointer")
    return data


def _verified_keyid(envelope: bytes, body: bytes, keys: list[TrustedKey]) -> str:
    """The id of the trusted key that verifies the envelope (it verified with one of them)."""
    doc = parse_json_object(envelope, "pointer envelope")
    message = pae(str(doc.get("payloadType")), body)
    for entry in doc.get("signatures") or []:
        if not isinstance(entry, dict):
            continue
        try:
            sig = b64decode_any(entry.get("sig"), "signature")
        except FormatError:
            continue
        for trusted in keys:
            try:
                trusted.key.verify(sig, message)
            except InvalidSignature:
                continue
            return trusted.keyid
    return keys[0].keyid
