"""Inspect what a channel serves, verified the way a client verifies it, and export bootstraps.

    >>> from publisher import inspect
    >>> inspect("file:///srv/store", pid, "production", ["ed25519:..."]).version  # doctest: +SKIP
    'Support bot@1.2.3, Checkout helper@0.4.0'

``inspect`` checks the pointer with ``anvil_client.wire.verify_pointer`` and the keys given
(never the store's word), then every entry's object with ``fetch_object`` (size and SHA-256),
and with an ACCESS_TOKEN decrypts each bundle with ``open_object`` and checks its content hash,
header and that no prompt id is in two entries. ``export_bootstrap`` packages the verified
pointer and every plaintext as the bootstrap file of DESIGN §7.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anvil_client.errors import ConfigError, FormatError, NotFound, SignatureError
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import (
    POINTER_MAX_SIZE,
    AccessToken,
    Bundle,
    Pointer,
    Release,
    TrustedKey,
    check_bundle_matches,
    check_disjoint,
    fetch_object,
    find_signing_key,
    open_object,
    parse_bundle,
    pointer_key,
    recipient_ids,
    served_version,
    verify_pointer,
)
from publisher._channel import KeyLike, check_channel, trusted_keys_of

__all__ = ["InspectedRelease", "Inspection", "export_bootstrap", "inspect"]


@dataclass(frozen=True)
class InspectedRelease:
    """One verified entry. ``recipients`` is None for a plaintext object; ``prompt_count``
    is None when the bundle could not be opened (encrypted, no token given)."""

    prompt_set_id: str
    name: str
    version: str
    content_sha256: str
    encoding: str
    object_path: str
    object_sha256: str
    object_size: int
    recipients: tuple[str, ...] | None
    prompt_count: int | None

    def describe(self) -> str:
        return f"{self.name or self.prompt_set_id} {self.version}"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["recipients"] = None if self.recipients is None else list(self.recipients)
        return data


@dataclass(frozen=True)
class Inspection:
    """A verified summary of what a channel serves: every entry, and a rollout's previous list.

    ``bundles`` maps ``content_sha256`` to the verified plaintext of each entry that could be
    opened (plaintext objects, or all with an ACCESS_TOKEN).
    """

    project_id: str
    channel: str
    sequence: int
    keyid: str
    published_at: str
    expires_at: str | None
    expired: bool
    releases: tuple[InspectedRelease, ...]
    previous: tuple[InspectedRelease, ...] | None
    rollout_percent: int | None
    pointer: Pointer = field(repr=False)
    envelope: bytes = field(repr=False)
    bundles: Mapping[str, bytes] = field(repr=False)

    @property
    def version(self) -> str:
        """What a client's ``status()["version"]`` says for the entries (DESIGN §7)."""
        return served_version(self.pointer.releases)

    @property
    def prompt_count(self) -> int | None:
        """Prompts served in all, when every entry could be opened."""
        counts = [r.prompt_count for r in self.releases]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    def to_json(self) -> dict[str, Any]:
        """The ``anvil-publish inspect --json`` object."""
        previous = None if self.previous is None else [r.to_json() for r in self.previous]
        return {
            "project_id": self.project_id,
            "channel": self.channel,
            "sequence": self.sequence,
            "version": self.version,
            "keyid": self.keyid,
            "published_at": self.published_at,
            "expires_at": self.expires_at,
            "expired": self.expired,
            "releases": [r.to_json() for r in self.releases],
            "rollout_percent": self.rollout_percent,
            "previous": previous,
            "prompt_count": self.prompt_count,
        }


def inspect(
    store: ObjectStore | str,
    project_id: str,
    channel: str,
    trusted_keys: Iterable[KeyLike],
    access_token: str | AccessToken | None = None,
) -> Inspection:
    """Verify a channel's pointer and every entry's object; decrypt and summarise with a token.

    Raises:
        ConfigError: for a bad channel, store URL, key or token, or no trusted key.
        NotFound: if the channel or an object does not exist.
        SignatureError: if no signature verifies with ``trusted_keys``.
        FormatError, ChecksumError, SizeLimitError: if the pointer, an object or a bundle is
            malformed or altered, or two opened entries share a prompt id.
        DecryptionError: if ``access_token`` cannot decrypt a bundle.
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
    """The bootstrap file of DESIGN §7:
    ``{"pointer": <envelope>, "bundles": {"<content_sha256>": "<plaintext>", …}}``.

    Everything is verified first (as :func:`inspect`); ``bundles`` holds the exact plaintext
    bytes (as strings) of every entry of both lists of a rollout. An encrypted channel needs
    ``access_token``.

    Raises:
        ConfigError: if an entry is encrypted and no ``access_token`` is given.
        and everything :func:`inspect` raises.
    """
    result = inspect(store, project_id, channel, trusted_keys, access_token)
    missing = [r for r in result.pointer.all_releases() if r.content_sha256 not in result.bundles]
    if missing:
        raise ConfigError(
            f"channel {channel!r} is encrypted: exporting it needs an ACCESS_TOKEN that can "
            f"decrypt {missing[0].describe()}"
        )
    document = {
        "pointer": json.loads(result.envelope),
        "bundles": {sha: data.decode("utf-8") for sha, data in sorted(result.bundles.items())},
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
        envelope = store.get(key, max_size=POINTER_MAX_SIZE).data
    except NotFound as e:
        raise NotFound(
            f"channel {channel!r} of project {project_id} has no pointer in {store.url}"
        ) from e
    try:
        pointer = verify_pointer(envelope, keys, project_id=project_id, channel=channel)
    except SignatureError as e:
        ids = ", ".join(k.keyid[:16] for k in keys)
        raise SignatureError(
            f"the pointer of channel {channel!r} is not signed by a trusted key (tried {ids})"
        ) from e
    except FormatError as e:
        raise FormatError(f"the pointer at {key}: {e}") from e
    plaintexts: dict[str, bytes] = {}
    opened: dict[str, tuple[Release, Bundle]] = {}
    seen: dict[str, InspectedRelease] = {}
    for release in pointer.all_releases():
        if release.object.path not in seen:
            seen[release.object.path] = _entry(
                store, project_id, release, token, plaintexts, opened
            )
    lists = [pointer.releases] + ([] if pointer.rollout is None else [pointer.rollout.previous])
    for listed in lists:
        # The client refuses a list with a prompt id in two entries: so does inspect.
        check_disjoint([opened[r.content_sha256] for r in listed if r.content_sha256 in opened])

    def summary(releases: list[Release]) -> tuple[InspectedRelease, ...]:
        return tuple(_renamed(seen[r.object.path], r) for r in releases)

    expires = pointer.expires
    return Inspection(
        project_id=project_id,
        channel=channel,
        sequence=pointer.sequence,
        keyid=_verified_keyid(envelope, keys),
        published_at=pointer.published_at,
        expires_at=pointer.expires_at,
        expired=expires is not None and expires <= datetime.now(UTC),
        releases=summary(pointer.releases),
        previous=None if pointer.rollout is None else summary(pointer.rollout.previous),
        rollout_percent=None if pointer.rollout is None else pointer.rollout.percent,
        pointer=pointer,
        envelope=envelope,
        bundles=plaintexts,
    )


def _entry(
    store: ObjectStore,
    project_id: str,
    release: Release,
    token: AccessToken | None,
    plaintexts: dict[str, bytes],
    opened: dict[str, tuple[Release, Bundle]],
) -> InspectedRelease:
    ref = release.object
    try:
        stored = fetch_object(store, release)
    except NotFound as e:
        raise NotFound(f"the bundle object of {release.describe()} ({ref.path}) is missing") from e
    recipients = None if ref.encoding == "json" else tuple(recipient_ids(stored))
    prompt_count = None
    if ref.encoding == "json" or token is not None:
        plaintext = open_object(release, stored, token)
        bundle = parse_bundle(plaintext, content_sha256=release.content_sha256)
        check_bundle_matches(bundle, project_id, release)
        plaintexts[release.content_sha256] = plaintext
        opened[release.content_sha256] = (release, bundle)
        prompt_count = len(bundle.prompts)
    return InspectedRelease(
        prompt_set_id=release.prompt_set_id,
        name=release.name,
        version=release.version,
        content_sha256=release.content_sha256,
        encoding=ref.encoding,
        object_path=ref.path,
        object_sha256=ref.sha256,
        object_size=ref.size,
        recipients=recipients,
        prompt_count=prompt_count,
    )


def _renamed(seen: InspectedRelease, release: Release) -> InspectedRelease:
    """The same object may be named twice (both lists of a rollout) under other names."""
    if seen.name == release.name and seen.prompt_set_id == release.prompt_set_id:
        return seen
    return dataclasses.replace(seen, name=release.name, prompt_set_id=release.prompt_set_id)


def _verified_keyid(envelope: bytes, keys: list[TrustedKey]) -> str:
    """The id of the trusted key that verifies the envelope (it verified with one of them).

    Only names the key: whether the pointer is trusted was decided by ``verify_pointer``.
    """
    return (find_signing_key(envelope, keys) or keys[0]).keyid
