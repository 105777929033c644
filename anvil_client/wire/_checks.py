"""The one pointer verification and the one checked fetch every package uses (DESIGN §4-§7).

    >>> from anvil_client.wire import verify_pointer
    >>> verify_pointer.__name__
    'verify_pointer'

The client, the publisher, ``inspect`` and the FORGE call these and nothing else to decide
whether a pointer is trusted and whether stored bytes are the ones a pointer names. The only
I/O is :func:`fetch_object`'s one ``store.get``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from anvil_client.errors import ChecksumError, DecryptionError, FormatError, SizeLimitError
from anvil_client.wire._canonical import sha256_hex
from anvil_client.wire._dsse import verify_envelope
from anvil_client.wire._jwe import decrypt_bundle
from anvil_client.wire._keys import TrustedKey
from anvil_client.wire._layout import BUNDLE_MAX_SIZE, POINTER_MAX_SIZE
from anvil_client.wire._models import Bundle, Pointer, Release
from anvil_client.wire._tokens import AccessToken


class _Answer(Protocol):
    @property
    def data(self) -> bytes: ...


class TokenKey(Protocol):
    """What :func:`open_object` needs of a token: its id and its key-encryption key
    (an :class:`AccessToken`, or a publisher's recipient given as ``token_id -> KEK``)."""

    @property
    def token_id(self) -> str: ...

    def kek(self) -> bytes: ...


class ReadableStore(Protocol):
    """What :func:`fetch_object` needs of an ``ObjectStore``."""

    def get(self, key: str, *, max_size: int = ...) -> _Answer: ...


def verify_pointer(
    envelope: bytes,
    trusted_keys: Sequence[TrustedKey],
    *,
    project_id: str | None = None,
    channel: str | None = None,
) -> Pointer:
    """Size, a trusted signature, payload type, strict body, object locations, then (when
    given) the project and channel — in DESIGN §7's order.

    Raises:
        SizeLimitError: if the envelope is larger than 64 KiB.
        SignatureError: if no signature verifies with a trusted key.
        FormatError: if the envelope or body is malformed, an object lies outside the
            project's bundles, or it is for another project or channel.
    """
    if len(envelope) > POINTER_MAX_SIZE:
        raise SizeLimitError(f"pointer is larger than the {POINTER_MAX_SIZE}-byte limit")
    pointer = Pointer.parse(verify_envelope(envelope, trusted_keys))
    if project_id is not None and pointer.project_id != project_id:
        raise FormatError(
            f"pointer is for project {pointer.project_id[:128]!r}, not {project_id!r}"
        )
    if channel is not None and pointer.channel != channel:
        raise FormatError(f"pointer is for channel {pointer.channel!r}, not {channel!r}")
    pointer.check_locations()
    return pointer


def check_object_size(release: Release, max_size: int = BUNDLE_MAX_SIZE) -> int:
    """How many bytes to fetch at most for an entry: its signed size, within ``max_size``.

    Raises:
        SizeLimitError: if the signed size is larger than ``max_size``.
    """
    if release.object.size > max_size:
        raise SizeLimitError(
            f"bundle object of {release.describe()} is {release.object.size} bytes, larger "
            f"than the {max_size}-byte limit"
        )
    return release.object.size


def check_object(release: Release, data: bytes) -> None:
    """Stored bytes must have the entry's signed size and SHA-256.

    Raises:
        ChecksumError: otherwise.
    """
    ref = release.object
    if len(data) != ref.size:
        raise ChecksumError(
            f"bundle object of {release.describe()} is {len(data)} bytes but the signed "
            f"pointer says {ref.size}"
        )
    if sha256_hex(data) != ref.sha256:
        raise ChecksumError(
            f"bundle object of {release.describe()} differs from the signed pointer (SHA-256)"
        )


def fetch_object(
    store: ReadableStore, release: Release, *, max_size: int = BUNDLE_MAX_SIZE
) -> bytes:
    """GET an entry's stored object, reading at most its signed size, and check size and hash.

    The location was checked by :func:`verify_pointer`.

    Raises:
        SizeLimitError: if the signed size (or the answer) is larger than allowed.
        ChecksumError: if size or SHA-256 differ from the signed entry.
        StoreError: if the store cannot deliver it.
    """
    limit = check_object_size(release, max_size)
    data = store.get(release.object.path, max_size=limit).data
    check_object(release, data)
    return data


def open_object(
    release: Release,
    data: bytes,
    token: AccessToken | TokenKey | None,
    *,
    max_size: int = BUNDLE_MAX_SIZE,
    token_hint: str = "set ANVIL_ACCESS_TOKEN",  # noqa: S107 - advice, not a secret
) -> bytes:
    """Decrypt (if encrypted) checked stored bytes and check the plaintext's ``content_sha256``.

    Raises:
        DecryptionError: if no token is given or it cannot decrypt the bundle.
        SizeLimitError: if the bundle inflates past ``max_size``.
        FormatError: if the JWE is malformed.
        ChecksumError: if the plaintext's SHA-256 differs from the signed entry.
    """
    if release.object.encoding == "jwe":
        if token is None:
            raise DecryptionError(
                f"the bundle is encrypted but no ACCESS_TOKEN is configured ({token_hint})"
            )
        plaintext = decrypt_bundle(data, token.token_id, token.kek(), max_plaintext=max_size)
    else:
        plaintext = data
    check_content(release, plaintext)
    return plaintext


def check_content(release: Release, plaintext: bytes) -> None:
    """The plaintext must hash to the entry's signed ``content_sha256``.

    Raises:
        ChecksumError: otherwise.
    """
    if sha256_hex(plaintext) != release.content_sha256:
        raise ChecksumError(
            f"bundle content of {release.describe()} differs from the signed pointer (SHA-256)"
        )


def check_bundle_matches(bundle: Bundle, project_id: str, release: Release) -> None:
    """A bundle must be of the pointer's project and of its entry's prompt set and version.

    Raises:
        FormatError: otherwise.
    """
    if bundle.project_id != project_id:
        raise FormatError(f"bundle is for project {bundle.project_id[:128]!r}, not {project_id!r}")
    if bundle.prompt_set_id != release.prompt_set_id:
        raise FormatError(
            f"bundle is of prompt set {bundle.prompt_set_id[:128]!r}, but the pointer "
            f"names {release.prompt_set_id!r}"
        )
    if bundle.version != release.version:
        raise FormatError(
            f"bundle is version {bundle.version[:64]!r}, but the pointer names {release.version!r}"
        )


def find_shared_prompt_id(
    entries: Iterable[tuple[Release, Iterable[str]]],
) -> tuple[str, Release, Release] | None:
    """The first prompt id found in two entries, with both entries; None when disjoint."""
    owner: dict[str, Release] = {}
    for release, prompt_ids in entries:
        for prompt_id in prompt_ids:
            first = owner.setdefault(prompt_id, release)
            if first is not release:
                return prompt_id, first, release
    return None


def check_disjoint(
    bundles: Mapping[str, tuple[Release, Bundle]] | Iterable[tuple[Release, Bundle]],
) -> None:
    """No prompt id may be in two entries of one list (DESIGN §4).

    Raises:
        FormatError: naming the id and both prompt sets.
    """
    pairs = bundles.values() if isinstance(bundles, Mapping) else bundles
    clash = find_shared_prompt_id((release, bundle.prompts) for release, bundle in pairs)
    if clash is not None:
        prompt_id, first, second = clash
        raise FormatError(
            f"prompt {prompt_id!r} is in two prompt sets of the channel: "
            f"{first.describe()} and {second.describe()}"
        )
