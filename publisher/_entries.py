"""Reading, checking and (re-)encrypting the entries of a channel's list for one operation.

    >>> entries = Entries(store, project_id, keks, access_token=token)  # doctest: +SKIP
    >>> entries.conform(release)  # carried over, or re-encrypted for keks  # doctest: +SKIP

Every read goes through ``anvil_client.wire``: ``fetch_object`` (size and SHA-256 against the
signed entry), ``open_object`` (decrypt, content hash), ``parse_bundle`` and
``check_bundle_matches``. Results are cached, so a compare-and-swap retry that rebuilds the
list from a new pointer reads and encrypts only what it has not seen yet. The recipients every
entry ends up encrypted for are resolved here too (``resolve_recipients``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from anvil_client.errors import (
    AnvilError,
    ChecksumError,
    ConfigError,
    DecryptionError,
    NotFound,
    PreconditionFailed,
)
from anvil_client.stores import ObjectStore
from anvil_client.wire import (
    AccessToken,
    ObjectRef,
    Release,
    b64decode_any,
    bundle_key,
    check_bundle_matches,
    check_object,
    encrypt_bundle,
    fetch_object,
    open_object,
    parse_bundle,
    parse_json_object,
    recipient_ids,
    sha256_hex,
)
from publisher._bundle import BuiltBundle
from publisher._errors import PromptIdClash

__all__ = ["PENDING", "BundleSource", "Entries", "Recipients", "Stored", "resolve_recipients"]

BundleSource = Callable[[str], bytes | None]
"""Returns the exact plaintext bundle bytes for a ``content_sha256`` (the FORGE keeps them),
or None (or raises LookupError) when it does not have them: the object is read instead."""

#: The object of an entry whose bundle is not stored yet (only its content and name count).
PENDING = ObjectRef(path="pending", sha256="0" * 64, size=0, encoding="json")
_TOKEN_OPTION = "--access-token"  # noqa: S105 - an option name, not a secret
_TOKEN_ID_RE = re.compile(r"^[a-z0-9]{12}$")

Recipients = Mapping[str, bytes] | Sequence[str] | Sequence[AccessToken]
"""Who may decrypt: a ``token_id -> KEK`` mapping, ACCESS_TOKEN texts, or AccessTokens."""


def resolve_recipients(
    recipients: Recipients | None, *, plaintext: bool
) -> dict[str, bytes] | None:
    """``token_id -> KEK`` for encryption, or None for a plaintext publish.

    Accepts a mapping of token id to 32-byte KEK, ACCESS_TOKEN texts, or AccessTokens.

    Raises:
        ConfigError: no recipients without ``plaintext``, both, a malformed token or KEK,
            or one token id given with two different secrets.
    """
    if plaintext:
        if recipients:
            raise ConfigError("give either recipients or plaintext, not both")
        return None
    if not recipients:
        raise ConfigError(
            "refusing to publish without recipients: give at least one ACCESS_TOKEN "
            "(or publish unencrypted on purpose with plaintext)"
        )
    keks: dict[str, bytes] = {}
    for token_id, kek in _recipient_pairs(recipients):
        if not isinstance(token_id, str) or not _TOKEN_ID_RE.match(token_id):
            raise ConfigError(f"recipient id {str(token_id)[:20]!r} is not a 12-character token id")
        if not isinstance(kek, bytes) or len(kek) != 32:
            raise ConfigError(f"the key for recipient {token_id} must be 32 bytes")
        if keks.get(token_id, kek) != kek:
            raise ConfigError(f"recipient {token_id} is given twice with different secrets")
        keks[token_id] = kek
    return keks


def _recipient_pairs(recipients: Recipients) -> list[tuple[str, bytes]]:
    """``(token_id, KEK)`` of each recipient, not yet checked."""
    if isinstance(recipients, Mapping):
        return list(recipients.items())
    if isinstance(recipients, str):
        raise ConfigError("recipients must be a list of ACCESS_TOKENs, not one string")
    pairs = []
    for item in recipients:
        token = item if isinstance(item, AccessToken) else AccessToken.parse(item)
        pairs.append((token.token_id, token.kek()))
    return pairs


@dataclass(frozen=True)
class Stored:
    reused: bool
    plaintext_size: int | None


class Entries:
    """Reads, checks and (re-)encrypts entries for one operation; cached across CAS retries.

    ``keks`` are the recipients every entry must end up encrypted for (None: plaintext);
    ``as_is`` keeps every entry's object whatever its recipients (promote without
    recipients). An entry whose object is already wrapped for exactly ``keks`` is carried
    over byte-identical; any other is re-encrypted from its plaintext, which comes from
    ``bundle_source``, from the recipients' own keys, or from ``access_token``. With
    ``fresh`` every entry gets a new object (a new CEK: after a revocation the old CEK is
    known to the revoked token).
    """

    def __init__(
        self,
        store: ObjectStore,
        project_id: str,
        keks: dict[str, bytes] | None,
        *,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        as_is: bool = False,
        fresh: bool = False,
    ) -> None:
        self._store = store
        self._project_id = project_id
        self.keks = keks
        self.as_is = as_is
        self.fresh = fresh
        self._token = _parse_token(access_token)
        self._source = bundle_source
        self._objects: dict[str, bytes] = {}
        self._plaintexts: dict[str, bytes] = {}
        self._prompt_ids: dict[str, frozenset[str]] = {}
        self._reusable: dict[str, bool] = {}
        self._made: dict[str, ObjectRef] = {}
        self.stored: dict[str, Stored] = {}
        self.timings: dict[str, float] = {}

    @property
    def recipients(self) -> tuple[str, ...]:
        return () if self.keks is None or self.as_is else tuple(sorted(self.keks))

    # -- reading ------------------------------------------------------------------------

    def fetch(self, release: Release) -> bytes:
        """The entry's stored bytes, size and SHA-256 checked (wire's one checked fetch)."""
        ref = release.object
        cached = self._objects.get(ref.sha256)
        if cached is not None:
            if len(cached) != ref.size:
                check_object(release, cached)  # raises: the entry names other bytes
            return cached
        ref.check_location(self._project_id)
        try:
            data = fetch_object(self._store, release)
        except NotFound as e:
            raise NotFound(
                f"the bundle object of {release.describe()} ({ref.path}) is missing"
            ) from e
        self._objects[ref.sha256] = data
        return data

    def remember(self, built: BuiltBundle) -> None:
        """The plaintext and prompt ids of a bundle being published are known already."""
        self._plaintexts[built.content_sha256] = built.data
        self._prompt_ids[built.content_sha256] = frozenset(built.document["snapshot"])

    def plaintext(self, release: Release) -> bytes:
        """The exact plaintext bundle bytes of an entry, checked against its content hash
        and its prompt set, version and project.

        Raises:
            ConfigError: if it is encrypted and no key at hand can read it (names
                ``--access-token``).
            ChecksumError, DecryptionError, FormatError: if it cannot be recovered intact.
        """
        wanted = release.content_sha256
        if wanted in self._plaintexts:
            return self._plaintexts[wanted]
        started = time.perf_counter()
        found: bytes | None = None
        if self._source is not None:
            try:
                found = self._source(wanted)
            except LookupError:
                found = None
            if found is not None and (not isinstance(found, bytes) or sha256_hex(found) != wanted):
                raise ChecksumError(
                    f"the bundle source returned other bytes than {release.describe()} "
                    f"(content_sha256 {wanted[:16]})"
                )
        data = found if found is not None else self._open(release)
        bundle = parse_bundle(data, content_sha256=wanted)
        check_bundle_matches(bundle, self._project_id, release)
        self._plaintexts[wanted] = data
        self._prompt_ids[wanted] = frozenset(bundle.prompts)
        self.timings["recover"] = self.timings.get("recover", 0.0) + (time.perf_counter() - started)
        return data

    def _open(self, release: Release) -> bytes:
        stored = self.fetch(release)
        if release.object.encoding == "json":
            return open_object(release, stored, None)
        kids = recipient_ids(stored)
        tokens: list[AccessToken | _KekToken] = []
        if self.keks and not self.as_is:
            tokens += [_KekToken(kid, self.keks[kid]) for kid in kids if kid in self.keks]
        if self._token is not None:
            tokens.append(self._token)
        if not tokens:
            raise ConfigError(
                f"reading {release.describe()} (encrypted for {', '.join(kids) or 'nobody'}) "
                f"needs an ACCESS_TOKEN that is one of its recipients: pass {_TOKEN_OPTION}"
            )
        failure: AnvilError | None = None
        for token in tokens:
            try:
                return open_object(release, stored, token)
            except DecryptionError as e:
                failure = e
        assert failure is not None
        raise failure

    def prompt_ids(self, release: Release) -> frozenset[str]:
        if release.content_sha256 not in self._prompt_ids:
            self.plaintext(release)
        return self._prompt_ids[release.content_sha256]

    def recipients_of(self, release: Release) -> frozenset[str] | None:
        """The token ids an entry is encrypted for (None for a plaintext entry)."""
        if release.object.encoding == "json":
            return None
        return frozenset(recipient_ids(self.fetch(release)))

    # -- writing ------------------------------------------------------------------------

    def conform(self, release: Release, candidates: Iterable[Release] = ()) -> Release:
        """The entry, encrypted for ``keks``: carried over when it already is, else
        re-encrypted (reusing an intact object of ``candidates`` with that content)."""
        if self.as_is:
            return release
        if not self.fresh and self.reusable(release.object):
            return release
        made = self._made.get(release.content_sha256)
        if made is None:
            if not self.fresh:
                for other in candidates:
                    if other.content_sha256 == release.content_sha256 and self.reusable(
                        other.object
                    ):
                        self.stored.setdefault(other.object.path, Stored(True, None))
                        return release.model_copy(update={"object": other.object})
            data = self.plaintext(release)
            made = self._write(release, data)
        return release.model_copy(update={"object": made})

    def store_new(self, release: Release, data: bytes, candidates: Iterable[Release]) -> Release:
        """Store a bundle being published (or reuse an identical object of ``candidates``)."""
        started = time.perf_counter()
        for other in candidates:
            if other.content_sha256 == release.content_sha256 and self.reusable(other.object):
                self.stored[other.object.path] = Stored(True, len(data))
                self.timings["encrypt"] = self.timings.get("encrypt", 0.0) + (
                    time.perf_counter() - started
                )
                return release.model_copy(update={"object": other.object})
        made = self._write(release, data)
        return release.model_copy(update={"object": made})

    def _write(self, release: Release, data: bytes) -> ObjectRef:
        """Encrypt for ``keks`` and write with ``If-None-Match: *``."""
        started = time.perf_counter()
        keks = self.keks
        encoding: Literal["jwe", "json"] = "json" if keks is None else "jwe"
        payload = data if keks is None else encrypt_bundle(data, keks)
        object_sha256 = sha256_hex(payload)
        ref = ObjectRef(
            path=bundle_key(self._project_id, object_sha256, encoding),
            sha256=object_sha256,
            size=len(payload),
            encoding=encoding,
        )
        encrypted = time.perf_counter()
        self.timings["encrypt"] = self.timings.get("encrypt", 0.0) + encrypted - started
        reused = False
        try:
            self._store.put(ref.path, payload, if_none_match=True)
        except PreconditionFailed:
            # Already there under its own hash: done, once we know it is what its name says.
            self.fetch(release.model_copy(update={"object": ref}))
            reused = True
        self.timings["upload"] = self.timings.get("upload", 0.0) + (time.perf_counter() - encrypted)
        self._made[release.content_sha256] = ref
        self._objects[ref.sha256] = payload
        self.stored[ref.path] = Stored(reused, len(data))
        return ref

    def reusable(self, ref: ObjectRef) -> bool:
        """An existing object is reused when it is intact and wrapped for exactly ``keks``
        (all with one CEK), or is plaintext for a plaintext operation."""
        if ref.sha256 not in self._reusable:
            self._reusable[ref.sha256] = self._check_reusable(ref)
        return self._reusable[ref.sha256]

    def _check_reusable(self, ref: ObjectRef) -> bool:
        keks = self.keks
        if (ref.encoding == "json") != (keks is None):
            return False
        probe = Release(
            prompt_set_id="probe", name="", version="0.0.0", content_sha256="0" * 64, object=ref
        )
        try:
            data = self.fetch(probe)
        except (AnvilError, ValueError):
            return False
        if keks is None:
            return True
        try:
            jwe = parse_json_object(data, "bundle JWE")
            wrapped: dict[str, bytes] = {}
            for entry in jwe["recipients"]:
                wrapped[entry["header"]["kid"]] = b64decode_any(entry["encrypted_key"], "key")
            if set(wrapped) != set(keks):
                return False
            ceks = {aes_key_unwrap(keks[kid], key) for kid, key in wrapped.items()}
        except (AnvilError, KeyError, TypeError, InvalidUnwrap, ValueError):
            return False
        return len(ceks) == 1

    # -- the rule of DESIGN §4: no prompt id in two entries ------------------------------

    def check_clash(self, incoming: Release, others: Iterable[Release], channel: str) -> None:
        """Raises: PromptIdClash: if a prompt id of ``incoming`` is in one of ``others``."""
        for other in others:
            shared = self.prompt_ids(incoming) & self.prompt_ids(other)
            if shared:
                raise PromptIdClash(min(shared), other, incoming.describe(), channel)

    def check_disjoint(self, releases: Sequence[Release], channel: str) -> None:
        """Raises: PromptIdClash: if two entries of ``releases`` share a prompt id."""
        for index, release in enumerate(releases[1:], start=1):
            self.check_clash(release, releases[:index], channel)


class _KekToken:
    """A recipient given as ``token_id -> KEK``: enough to decrypt, as an AccessToken is."""

    def __init__(self, token_id: str, kek: bytes) -> None:
        self._token_id = token_id
        self._kek = kek

    @property
    def token_id(self) -> str:
        return self._token_id

    def kek(self) -> bytes:
        return self._kek


def _parse_token(token: str | AccessToken | None) -> AccessToken | None:
    if token is None or isinstance(token, AccessToken):
        return token
    return AccessToken.parse(str(token))
