"""The pure verification core: bytes and the applied state in, models and decisions out.

    >>> from anvil_client._verify import Verifier
    >>> Verifier.__name__
    'Verifier'

Nothing here opens a socket or a file (like tuf's ``TrustedMetadataSet``): the client shell
fetches, calls these checks in the order of DESIGN §7, and writes. Every failure is a
:class:`~anvil_client.errors.VerificationError` whose message is one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anvil_client.errors import (
    ChecksumError,
    DecryptionError,
    ExpiredError,
    FormatError,
    RollbackError,
    SizeLimitError,
)
from anvil_client.wire import (
    AccessToken,
    Bundle,
    Pointer,
    Release,
    TrustedKey,
    canonical_json,
    decrypt_bundle,
    format_timestamp,
    parse_bundle,
    parse_json_object,
    select_release,
    sha256_hex,
    verify_envelope,
)

#: A pointer envelope is small; anything larger is refused before parsing (DESIGN §7).
POINTER_MAX_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Accepted:
    """A pointer that passed every check, the release this instance serves from it, and
    whether that release's content is already applied (then only the pointer is persisted)."""

    pointer: Pointer
    release: Release
    reuse: bool


@dataclass(frozen=True, slots=True)
class Verified:
    """A pointer and the bundle of its selected release, both verified."""

    pointer: Pointer
    release: Release
    bundle: Bundle


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
        self._token_env = token_env
        self._kek = token.kek() if token is not None else None

    @property
    def bootstrap_max_size(self) -> int:
        """The largest bootstrap file read: the bundle as a JSON string (at most 3 bytes per
        byte, with ``\\uXXXX`` escapes of 2-byte characters) beside a pointer."""
        return 3 * self.max_bundle_size + 4 * POINTER_MAX_SIZE

    def verify_pointer(self, envelope: bytes) -> Pointer:
        """Size, trusted signature, payload type, body, then project and channel.

        Raises:
            SizeLimitError: if the envelope is larger than 64 KiB.
            SignatureError: if no signature verifies with a trusted key.
            FormatError: if the envelope or body is malformed or for another project/channel.
        """
        if len(envelope) > POINTER_MAX_SIZE:
            raise SizeLimitError(f"pointer is larger than the {POINTER_MAX_SIZE}-byte limit")
        pointer = Pointer.parse(verify_envelope(envelope, self.trusted_keys))
        if pointer.project_id != self.project_id:
            raise FormatError(
                f"pointer is for project {pointer.project_id[:128]!r}, not {self.project_id!r}"
            )
        if pointer.channel != self.channel:
            raise FormatError(f"pointer is for channel {pointer.channel!r}, not {self.channel!r}")
        return pointer

    def accept_pointer(
        self,
        envelope: bytes,
        *,
        applied: Pointer | None,
        applied_content: str | None,
        floor: int,
        instance_id: str,
        now: datetime,
    ) -> Accepted:
        """Decide what to do with a freshly fetched pointer (DESIGN §7, up to "select release").

        ``applied`` is the pointer being served, ``applied_content`` the content hash being
        served, ``floor`` the highest sequence ever accepted (persisted on disk).

        Raises:
            VerificationError: (a subclass) for the first check that fails, in §7's order.
        """
        pointer = self.verify_pointer(envelope)
        check_sequence(pointer, applied=applied, floor=floor)
        check_expiry(pointer, now)
        if pointer.rollout is not None:
            # Both releases are checked, so a pointer is valid or not whatever the instance.
            pointer.rollout.previous.object.check_location(self.project_id)
            pointer.release.object.check_location(self.project_id)
        release = select_release(pointer, instance_id)
        self.check_object_ref(release)
        return Accepted(pointer, release, reuse=release.content_sha256 == applied_content)

    def check_object_ref(self, release: Release) -> int:
        """Where the object may be and how many bytes to fetch at most.

        Raises:
            FormatError: if the object path is outside ``projects/{project_id}/bundles/``.
            SizeLimitError: if the signed size is larger than the configured maximum.
        """
        release.object.check_location(self.project_id)
        if release.object.size > self.max_bundle_size:
            raise SizeLimitError(
                f"bundle object of {release.object.size} bytes is larger than the "
                f"{self.max_bundle_size}-byte limit"
            )
        return release.object.size

    def open_object(self, release: Release, data: bytes) -> bytes:
        """Check the stored bytes against the signed release and return the plaintext bundle.

        Raises:
            ChecksumError: if the size or SHA-256 of the object or of the plaintext differs.
            DecryptionError: if no token is configured or it cannot decrypt the bundle.
            SizeLimitError: if the bundle inflates past the maximum.
            FormatError: if the JWE is malformed.
        """
        ref = release.object
        if len(data) != ref.size:
            raise ChecksumError(
                f"bundle object is {len(data)} bytes but the signed pointer says {ref.size}"
            )
        if sha256_hex(data) != ref.sha256:
            raise ChecksumError("bundle object SHA-256 differs from the signed pointer")
        if ref.encoding == "jwe":
            if self.token is None or self._kek is None:
                raise DecryptionError(
                    f"the bundle is encrypted but no ACCESS_TOKEN is configured "
                    f"(set {self._token_env})"
                )
            plaintext = decrypt_bundle(
                data, self.token.token_id, self._kek, max_plaintext=self.max_bundle_size
            )
        else:
            plaintext = data
        self.check_content(release, plaintext)
        return plaintext

    def check_content(self, release: Release, plaintext: bytes) -> None:
        """The plaintext must hash to the signed ``content_sha256``.

        Raises:
            ChecksumError: otherwise.
        """
        if sha256_hex(plaintext) != release.content_sha256:
            raise ChecksumError("bundle content SHA-256 differs from the signed pointer")

    def verify_bundle(self, plaintext: bytes, pointer: Pointer, release: Release) -> Bundle:
        """Parse hash-checked plaintext and check its ids and version against the pointer.

        Raises:
            FormatError: if the bundle is malformed or names another project, set or version.
        """
        bundle = parse_bundle(plaintext, content_sha256=release.content_sha256)
        self.check_bundle_ids(bundle, pointer, release)
        return bundle

    def check_bundle_ids(self, bundle: Bundle, pointer: Pointer, release: Release) -> None:
        """Raises:
        FormatError: if the bundle names another project, prompt set or version.
        """
        if bundle.project_id != pointer.project_id:
            raise FormatError(
                f"bundle is for project {bundle.project_id[:128]!r}, not {pointer.project_id!r}"
            )
        if bundle.prompt_set_id != release.prompt_set_id:
            raise FormatError(
                f"bundle is of prompt set {bundle.prompt_set_id[:128]!r}, but the pointer "
                f"names {release.prompt_set_id!r}"
            )
        if bundle.version != release.version:
            raise FormatError(
                f"bundle is version {bundle.version[:64]!r}, but the pointer names "
                f"{release.version!r}"
            )

    def verify_cached(self, envelope: bytes, instance_id: str, plaintext: bytes) -> Verified:
        """Re-verify a cached (or bootstrap) pointer and its plaintext bundle.

        Expiry and sequence are not checked here: a cached copy is last-known-good, and the
        caller decides whether it is newer than what is served.

        Raises:
            VerificationError: (a subclass) if the pointer or the bundle fails a check.
        """
        pointer = self.verify_pointer(envelope)
        release = select_release(pointer, instance_id)
        self.check_content(release, plaintext)
        return Verified(pointer, release, self.verify_bundle(plaintext, pointer, release))

    def verify_bootstrap(self, data: bytes, instance_id: str) -> tuple[bytes, Verified]:
        """A bootstrap file ``{"pointer": <envelope>, "bundle": "<plaintext>"}``.

        The bundle may be the pointer's ``release`` or its rollout's ``previous``; either is a
        signed release of this channel. Returns the envelope bytes and the verified result.

        Raises:
            FormatError: if the file is not such an object.
            VerificationError: (a subclass) if the pointer or the bundle fails a check.
        """
        doc = parse_json_object(data, "bootstrap file")
        raw_pointer = doc.get("pointer")
        raw_bundle = doc.get("bundle")
        try:
            if isinstance(raw_pointer, dict):
                envelope = canonical_json(raw_pointer)
            elif isinstance(raw_pointer, str):
                envelope = raw_pointer.encode("utf-8")
            else:
                raise FormatError("bootstrap file has no 'pointer' envelope")
        except (ValueError, RecursionError) as e:  # a lone surrogate, 1e999, deep nesting
            raise FormatError("bootstrap file 'pointer' cannot be read as a JSON envelope") from e
        if not isinstance(raw_bundle, str):
            raise FormatError("bootstrap file has no 'bundle' string")
        try:
            plaintext = raw_bundle.encode("utf-8")
        except UnicodeEncodeError as e:
            raise FormatError("bootstrap file 'bundle' is not valid Unicode text") from e
        if len(plaintext) > self.max_bundle_size:
            raise SizeLimitError(f"bootstrap bundle is larger than {self.max_bundle_size} bytes")
        pointer = self.verify_pointer(envelope)
        content = sha256_hex(plaintext)
        candidates = [select_release(pointer, instance_id), pointer.release]
        if pointer.rollout is not None:
            candidates.append(pointer.rollout.previous)
        for release in candidates:
            if release.content_sha256 == content:
                bundle = self.verify_bundle(plaintext, pointer, release)
                return envelope, Verified(pointer, release, bundle)
        raise ChecksumError("bootstrap bundle SHA-256 differs from its signed pointer")


def check_sequence(pointer: Pointer, *, applied: Pointer | None, floor: int) -> None:
    """Anti-rollback: never below the highest accepted sequence, never a rewritten one.

    Raises:
        RollbackError: for a lower sequence, or the applied sequence with another release.
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
        and (pointer.release != applied.release or pointer.rollout != applied.rollout)
    ):
        raise RollbackError(
            f"pointer sequence {pointer.sequence} was already accepted with another release"
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


def describe(pointer: Pointer, release: Release) -> dict[str, Any]:
    """The fields of ``status()`` and heartbeats that describe what is served."""
    return {
        "version": release.version,
        "sequence": pointer.sequence,
        "content_sha256": release.content_sha256,
        "prompt_set_id": release.prompt_set_id,
        "published_at": pointer.published_at,
        "expires_at": pointer.expires_at,
    }
