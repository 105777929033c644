"""The pure verification core: bytes and the applied state in, models and decisions out.

    >>> from anvil_client._verify import Verifier
    >>> Verifier.__name__
    'Verifier'

Nothing here opens a socket or a file (like tuf's ``TrustedMetadataSet``): the client shell
fetches, calls these checks in the order of DESIGN §7, and writes. The checks themselves are
``anvil_client.wire``'s (one pointer verification, one checked fetch); this module only
orders them for one project and channel. Every failure is a
:class:`~anvil_client.errors.VerificationError` whose message is one sentence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anvil_client.errors import ExpiredError, FormatError, RollbackError, SizeLimitError
from anvil_client.wire import (
    POINTER_MAX_SIZE,
    AccessToken,
    Bundle,
    Pointer,
    ReadableStore,
    Release,
    TrustedKey,
    canonical_json,
    check_bundle_matches,
    check_content,
    check_disjoint,
    check_object_size,
    fetch_object,
    format_timestamp,
    open_object,
    parse_bundle,
    parse_json_object,
    select_releases,
    served_version,
    verify_pointer,
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A pointer that passed every check and the entries this instance serves from it."""

    pointer: Pointer
    releases: tuple[Release, ...]


@dataclass(frozen=True, slots=True)
class Verified:
    """A pointer, the entries served from it and their bundles (in the same order), verified."""

    pointer: Pointer
    releases: tuple[Release, ...]
    bundles: tuple[Bundle, ...]


class Verifier:
    """The checks of DESIGN §7 for one project and channel, with the client's keys and token."""

    def __init__(
        self,
        *,
        project_id: str,
        channel: str,
        trusted_keys: Sequence[TrustedKey],
        token: AccessToken | None,
        max_bundle_size: int,
        token_env: str = "ANVIL_ACCESS_TOKEN",  # noqa: S107 - a variable name, not a secret
    ) -> None:
        self.project_id = project_id
        self.channel = channel
        self.trusted_keys = tuple(trusted_keys)
        self.token = token
        self.max_bundle_size = max_bundle_size
        self._token_hint = f"set {token_env}"

    @property
    def bootstrap_max_size(self) -> int:
        """The largest bootstrap file read: its bundles as JSON strings (at most 3 bytes per
        byte, with ``\\uXXXX`` escapes of 2-byte characters) beside a pointer."""
        return 3 * self.max_bundle_size + 4 * POINTER_MAX_SIZE

    def verify_pointer(self, envelope: bytes) -> Pointer:
        """:func:`anvil_client.wire.verify_pointer` for this client's keys, project and channel.

        Raises:
            SizeLimitError: if the envelope is larger than 64 KiB.
            SignatureError: if no signature verifies with a trusted key.
            FormatError: if the envelope or body is malformed, names an object outside the
                project's bundles, or is for another project or channel.
        """
        return verify_pointer(
            envelope, self.trusted_keys, project_id=self.project_id, channel=self.channel
        )

    def accept_pointer(
        self,
        envelope: bytes,
        *,
        applied: Pointer | None,
        floor: int,
        instance_id: str,
        now: datetime,
    ) -> Accepted:
        """Decide what to do with a freshly fetched pointer (DESIGN §7, up to "select").

        ``applied`` is the pointer being served, ``floor`` the highest sequence ever accepted
        (persisted on disk). Every entry's signed size is checked against the maximum, so a
        pointer is valid or not whatever list this instance selects.

        Raises:
            VerificationError: (a subclass) for the first check that fails, in §7's order.
        """
        pointer = self.verify_pointer(envelope)
        check_sequence(pointer, applied=applied, floor=floor)
        check_expiry(pointer, now)
        releases = tuple(select_releases(pointer, instance_id))
        for release in releases:
            check_object_size(release, self.max_bundle_size)
        return Accepted(pointer, releases)

    def fetch_entry(self, store: ReadableStore, release: Release) -> bytes:
        """GET one entry's object (size-capped, size and SHA-256 checked) and open it.

        Raises:
            SizeLimitError: if the object or its plaintext is larger than allowed.
            ChecksumError: if the object or the plaintext differs from the signed entry.
            DecryptionError: if no token is configured or it cannot decrypt the bundle.
            FormatError: if the JWE is malformed.
            StoreError: if the store cannot deliver it.
        """
        data = fetch_object(store, release, max_size=self.max_bundle_size)
        return self.open_entry(release, data)

    def open_entry(self, release: Release, data: bytes) -> bytes:
        """Decrypt checked stored bytes and check the plaintext's ``content_sha256``.

        Raises:
            ChecksumError: if the plaintext's SHA-256 differs from the signed entry.
            DecryptionError: if no token is configured or it cannot decrypt the bundle.
            SizeLimitError: if the bundle inflates past the maximum.
            FormatError: if the JWE is malformed.
        """
        return open_object(
            release, data, self.token, max_size=self.max_bundle_size, token_hint=self._token_hint
        )

    def verify_bundle(self, plaintext: bytes, pointer: Pointer, release: Release) -> Bundle:
        """Parse hash-checked plaintext and check its ids and version against its entry.

        Raises:
            FormatError: if the bundle is malformed or names another project, set or version.
        """
        bundle = parse_bundle(plaintext, content_sha256=release.content_sha256)
        check_bundle_matches(bundle, pointer.project_id, release)
        return bundle

    def verify_cached(self, release: Release, pointer: Pointer, plaintext: bytes) -> Bundle:
        """Re-verify a cached (or bootstrap) plaintext bundle of one entry.

        Raises:
            ChecksumError: if it does not hash to the entry's ``content_sha256``.
            FormatError: if it is malformed or names another project, set or version.
        """
        check_content(release, plaintext)
        return self.verify_bundle(plaintext, pointer, release)

    def verify_bootstrap(self, data: bytes, instance_id: str) -> tuple[bytes, Verified]:
        """A bootstrap file ``{"pointer": <envelope>, "bundles": {"<sha256>": "<plaintext>"}}``.

        Only the entries this instance selects are needed and checked (a file made by
        ``anvil-publish export`` holds both lists of a rollout). Returns the envelope bytes
        and the verified result.

        Raises:
            FormatError: if the file is not such an object or lacks a selected entry's bundle.
            VerificationError: (a subclass) if the pointer or a bundle fails a check.
        """
        doc = parse_json_object(data, "bootstrap file")
        raw_pointer = doc.get("pointer")
        raw_bundles = doc.get("bundles")
        try:
            if isinstance(raw_pointer, dict):
                envelope = canonical_json(raw_pointer)
            elif isinstance(raw_pointer, str):
                envelope = raw_pointer.encode("utf-8")
            else:
                raise FormatError("bootstrap file has no 'pointer' envelope")
        except (ValueError, RecursionError) as e:  # a lone surrogate, 1e999, deep nesting
            raise FormatError("bootstrap file 'pointer' cannot be read as a JSON envelope") from e
        if not isinstance(raw_bundles, dict):
            raise FormatError("bootstrap file has no 'bundles' object")
        pointer = self.verify_pointer(envelope)
        releases = tuple(select_releases(pointer, instance_id))
        bundles = []
        for release in releases:
            text = raw_bundles.get(release.content_sha256)
            if not isinstance(text, str):
                raise FormatError(f"bootstrap file has no bundle for {release.describe()}")
            try:
                plaintext = text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise FormatError(
                    f"bootstrap bundle of {release.describe()} is not valid Unicode text"
                ) from e
            if len(plaintext) > self.max_bundle_size:
                raise SizeLimitError(
                    f"bootstrap bundle of {release.describe()} is larger than "
                    f"{self.max_bundle_size} bytes"
                )
            bundles.append(self.verify_cached(release, pointer, plaintext))
        check_served(releases, bundles)
        return envelope, Verified(pointer, releases, tuple(bundles))


def check_sequence(pointer: Pointer, *, applied: Pointer | None, floor: int) -> None:
    """Anti-rollback: never below the highest accepted sequence, never a rewritten one.

    Raises:
        RollbackError: for a lower sequence, or the applied sequence with other entries.
    """
    highest = max(floor, applied.sequence if applied is not None else 0)
    if pointer.sequence < highest:
        raise RollbackError(
            f"pointer sequence {pointer.sequence} is older than the accepted {highest}; "
            "refusing a rollback"
        )
    if (
        applied is not None
        and pointer.sequence == applied.sequence
        and (pointer.releases != applied.releases or pointer.rollout != applied.rollout)
    ):
        raise RollbackError(
            f"pointer sequence {pointer.sequence} was already accepted with other entries"
        )


def check_expiry(pointer: Pointer, now: datetime) -> None:
    """Raises:
    ExpiredError: if the pointer's ``expires_at`` is at or before ``now``.
    """
    expires = pointer.expires
    if expires is not None and expires <= now:
        raise ExpiredError(
            f"pointer sequence {pointer.sequence} expired at {format_timestamp(expires)}"
        )


def is_expired(pointer: Pointer | None, now: datetime) -> bool:
    expires = pointer.expires if pointer is not None else None
    return expires is not None and expires <= now


def check_served(releases: Sequence[Release], bundles: Sequence[Bundle]) -> None:
    """The entries served together must not share a prompt id (DESIGN §4).

    Raises:
        FormatError: naming the id and both prompt sets.
    """
    check_disjoint(zip(releases, bundles, strict=True))


def describe(
    pointer: Pointer, releases: Sequence[Release], counts: Mapping[str, int]
) -> dict[str, Any]:
    """The fields of ``status()`` that describe what is served (DESIGN §7).

    ``content_sha256`` and ``prompt_set_id`` are the one entry's when one is served, else
    ``None`` (``releases`` lists them all); ``counts`` maps content hashes to prompt counts.
    """
    single = releases[0] if len(releases) == 1 else None
    return {
        "version": served_version(tuple(releases)),
        "sequence": pointer.sequence,
        "content_sha256": single.content_sha256 if single is not None else None,
        "prompt_set_id": single.prompt_set_id if single is not None else None,
        "published_at": pointer.published_at,
        "expires_at": pointer.expires_at,
        "releases": [
            {
                "prompt_set_id": r.prompt_set_id,
                "name": r.name,
                "version": r.version,
                "content_sha256": r.content_sha256,
                "prompts": counts.get(r.content_sha256, 0),
            }
            for r in releases
        ],
    }
