"""Publishing with compare-and-swap on the channel pointer (DESIGN §6).

    >>> with Publisher("file:///srv/store", project_id=pid, signing_key=key) as pub:
    ...     pub.publish(build_bundle(prompts, ...), channel="production", recipients=[token])

Every operation that moves a channel (publish, rollback, promote, re-encrypt, rollout steps)
goes through one loop: read the pointer and verify it with the signing key (never build on a
pointer that cannot be verified), sign sequence S+1, write it with ``If-Match`` on the ETag
read (``If-None-Match: *`` for a new channel), and on a lost race re-read and retry, bounded
and jittered. Objects are written first with ``If-None-Match: *``, so a crash anywhere leaves
the channel serving its old release.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from anvil_client.errors import (
    AnvilError,
    ChecksumError,
    ConfigError,
    FormatError,
    NotFound,
    PreconditionFailed,
    SignatureError,
    StoreError,
)
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import (
    AccessToken,
    ObjectRef,
    Pointer,
    Release,
    Rollout,
    TrustedKey,
    b64decode_any,
    decrypt_bundle,
    encrypt_bundle,
    format_timestamp,
    key_id,
    parse_bundle,
    parse_json_object,
    sha256_hex,
    sign_envelope,
    verify_envelope,
)
from publisher._bundle import MAX_BUNDLE_SIZE, BuiltBundle, check_identifier
from publisher._layout import (
    HISTORY_NAME_RE,
    MAX_POINTER_SIZE,
    KeyLike,
    Recipients,
    bundle_key,
    check_channel,
    expiry_of,
    history_key,
    history_prefix,
    pointer_key,
    resolve_recipients,
    trusted_keys_of,
)

__all__ = ["BundleSource", "HistoryEntry", "PublishResult", "Publisher", "read_history"]

log = logging.getLogger("publisher")

BundleSource = Callable[[str], bytes]
"""Returns the exact plaintext bundle bytes for a ``content_sha256`` (the FORGE keeps them)."""

_KEEP: Any = object()
Expiry = datetime | timedelta | str | None


@dataclass(frozen=True)
class PublishResult:
    """What one channel move wrote. ``timings`` are seconds per phase."""

    project_id: str
    channel: str
    sequence: int
    version: str
    prompt_set_id: str
    content_sha256: str
    object_path: str
    object_sha256: str
    object_size: int
    plaintext_size: int | None
    encoding: Literal["jwe", "json"]
    etag: str | None
    recipients: tuple[str, ...]
    reused_object: bool
    attempts: int
    published_at: str
    expires_at: str | None
    rollout_percent: int | None
    timings: Mapping[str, float]
    envelope: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The ``anvil-publish publish --json`` object."""
        return {
            "project_id": self.project_id,
            "channel": self.channel,
            "sequence": self.sequence,
            "version": self.version,
            "prompt_set_id": self.prompt_set_id,
            "content_sha256": self.content_sha256,
            "object_path": self.object_path,
            "object_sha256": self.object_sha256,
            "object_size": self.object_size,
            "plaintext_size": self.plaintext_size,
            "encoding": self.encoding,
            "etag": self.etag,
            "recipients": list(self.recipients),
            "reused_object": self.reused_object,
            "attempts": self.attempts,
            "published_at": self.published_at,
            "expires_at": self.expires_at,
            "rollout_percent": self.rollout_percent,
            "timings": {name: round(seconds, 6) for name, seconds in self.timings.items()},
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One history copy. ``verified`` is None when no key was given to check it."""

    sequence: int
    path: str
    pointer: Pointer | None
    verified: bool | None
    keyid: str | None
    error: str | None = None

    @property
    def release(self) -> Release | None:
        return None if self.pointer is None else self.pointer.release

    def to_json(self) -> dict[str, Any]:
        pointer = self.pointer
        release = None if pointer is None else pointer.release
        return {
            "sequence": self.sequence,
            "path": self.path,
            "verified": self.verified,
            "keyid": self.keyid,
            "error": self.error,
            "published_at": None if pointer is None else pointer.published_at,
            "expires_at": None if pointer is None else pointer.expires_at,
            "version": None if release is None else release.version,
            "prompt_set_id": None if release is None else release.prompt_set_id,
            "content_sha256": None if release is None else release.content_sha256,
            "object_path": None if release is None else release.object.path,
            "encoding": None if release is None else release.object.encoding,
            "rollout_percent": None
            if pointer is None or pointer.rollout is None
            else pointer.rollout.percent,
        }


@dataclass(frozen=True)
class _Current:
    pointer: Pointer | None
    etag: str | None
    envelope: bytes | None


@dataclass(frozen=True)
class _Draft:
    release: Release
    rollout: Rollout | None
    expires_at: str | None


@dataclass
class _Stored:
    ref: ObjectRef
    reused: bool
    plaintext_size: int | None
    recipients: tuple[str, ...]


class _ChannelMoved(Exception):
    """The channel changed under a re-encryption; start over with the new release."""


class Publisher:
    """Writes bundles and signed pointers for one project to one store.

    ``store`` is an :class:`~anvil_client.stores.ObjectStore` or a store URL (then the
    publisher owns it: use it as a context manager or call :meth:`close`). ``trusted_keys``
    lists extra public keys whose pointers may be built on (the previous key, while rotating);
    the signing key's own public key is always trusted.
    """

    def __init__(
        self,
        store: ObjectStore | str,
        *,
        project_id: str,
        signing_key: Ed25519PrivateKey,
        trusted_keys: Iterable[KeyLike] = (),
        max_attempts: int = 10,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        check_identifier(project_id, "project id")
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise ConfigError("signing_key must be an Ed25519 private key")
        self._owns_store = isinstance(store, str)
        self.store = open_store(store) if isinstance(store, str) else store
        if self.store.read_only:
            self.close()
            raise ConfigError(
                f"{self.store.url} is read-only; publish to an s3:// or file:// store"
            )
        self.project_id = project_id
        self._key = signing_key
        public = signing_key.public_key()
        self.keyid = key_id(public)
        self._trusted = [TrustedKey(keyid=self.keyid, key=public), *trusted_keys_of(trusted_keys)]
        self.max_attempts = max(1, max_attempts)
        self._now = now or (lambda: datetime.now(UTC))

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- operations

    def publish(
        self,
        bundle: BuiltBundle | bytes,
        *,
        channel: str,
        recipients: Recipients | None = None,
        plaintext: bool = False,
        expires_at: Expiry = None,
        rollout_percent: int | None = None,
    ) -> PublishResult:
        """Publish a bundle to ``channel`` as a new sequence (DESIGN §6).

        ``recipients`` are ACCESS_TOKEN texts or a ``token_id -> KEK`` mapping; without any,
        only ``plaintext=True`` publishes (unencrypted). With ``rollout_percent`` the new
        release goes to that share of instances and the rest keep the release everyone has now
        (an unfinished rollout's ``previous``). Publishing content the channel already serves
        for the same recipients reuses its object.

        Raises:
            ValidationError: if the bundle is invalid (nothing is written).
            ConfigError: for bad arguments (no recipients, bad channel, expiry in the past,
                a rollout on an empty channel).
            SignatureError, FormatError: if the channel's pointer does not verify with the
                signing key (nothing is written).
            PreconditionFailed: if concurrent publishers kept winning for every attempt.
            StoreError: if the store fails; the channel then still serves its old release.
        """
        timings: dict[str, float] = {}
        check_channel(channel)
        keks = resolve_recipients(recipients, plaintext=plaintext)
        expires = expiry_of(expires_at, self._now())
        percent = _check_percent(rollout_percent)
        if isinstance(bundle, BuiltBundle):
            built = bundle
            timings.update(built.timings)
        else:
            started = time.perf_counter()
            built = BuiltBundle.from_bytes(bytes(bundle), project_id=self.project_id)
            timings["validate"] = time.perf_counter() - started
        if built.project_id != self.project_id:
            raise ConfigError(
                f"bundle belongs to project {built.project_id!r}, not {self.project_id!r}"
            )
        current = self._timed(timings, "read_pointer", lambda: self._read_current(channel))
        if percent is not None and current.pointer is None:
            raise ConfigError(f"channel {channel!r} has no release yet to roll out from")
        stored = self._store_content(
            built.data, built.content_sha256, keks, _candidates(current.pointer), timings
        )
        release = Release(
            version=built.version,
            prompt_set_id=built.prompt_set_id,
            content_sha256=built.content_sha256,
            object=stored.ref,
        )

        def draft(latest: Pointer | None) -> _Draft:
            rollout = None
            if percent is not None:
                if latest is None:
                    raise ConfigError(f"channel {channel!r} has no release to roll out from")
                rollout = Rollout(percent=percent, previous=_settled_release(latest))
            return _Draft(release, rollout, expires)

        return self._advance(channel, draft, current, stored, timings)

    def rollback(
        self,
        channel: str,
        *,
        to_sequence: int,
        recipients: Recipients | None = None,
        plaintext: bool = False,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        expires_at: Expiry = None,
    ) -> PublishResult:
        """Serve the content of history entry ``to_sequence`` again, as a new sequence.

        The old content is re-encrypted for ``recipients`` (DESIGN §5: a revoked token must not
        regain access); its plaintext comes from ``bundle_source(content_sha256)`` or from
        decrypting the old object with ``access_token``.

        Raises:
            NotFound: if there is no such history entry.
            SignatureError: if the entry does not verify with the signing (or a trusted) key.
            DecryptionError, ChecksumError: if the old content cannot be recovered intact.
            ConfigError, StoreError, PreconditionFailed: as for :meth:`publish`.
        """
        timings: dict[str, float] = {}
        check_channel(channel)
        keks = resolve_recipients(recipients, plaintext=plaintext)
        expires = expiry_of(expires_at, self._now())
        entry = self._read_history_entry(channel, to_sequence)
        old = entry.release
        started = time.perf_counter()
        data = self._plaintext_of(old, access_token, bundle_source)
        timings["recover"] = time.perf_counter() - started
        current = self._timed(timings, "read_pointer", lambda: self._read_current(channel))
        stored = self._store_content(
            data, old.content_sha256, keks, _candidates(current.pointer), timings
        )
        release = old.model_copy(update={"object": stored.ref})
        return self._advance(
            channel, lambda _: _Draft(release, None, expires), current, stored, timings
        )

    def promote(
        self,
        from_channel: str,
        to_channel: str,
        *,
        recipients: Recipients | None = None,
        plaintext: bool = False,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        expires_at: Expiry = None,
    ) -> PublishResult:
        """Publish the current release of ``from_channel`` to ``to_channel``, signed anew.

        Without ``recipients`` (and without ``plaintext``) the very same object is referenced;
        with them the content is re-encrypted (its plaintext from ``bundle_source`` or
        ``access_token``); ``plaintext=True`` publishes it unencrypted.

        Raises:
            NotFound: if ``from_channel`` has no pointer.
            ConfigError, SignatureError, StoreError, PreconditionFailed: as for :meth:`publish`.
        """
        timings: dict[str, float] = {}
        check_channel(from_channel)
        check_channel(to_channel)
        if from_channel == to_channel:
            raise ConfigError("promote needs two different channels")
        expires = expiry_of(expires_at, self._now())
        source = self._read_current(from_channel).pointer
        if source is None:
            raise NotFound(f"channel {from_channel!r} has nothing published to promote")
        release = source.release
        current = self._timed(timings, "read_pointer", lambda: self._read_current(to_channel))
        if recipients or plaintext:
            keks = resolve_recipients(recipients, plaintext=plaintext)
            started = time.perf_counter()
            data = self._plaintext_of(release, access_token, bundle_source)
            timings["recover"] = time.perf_counter() - started
            stored = self._store_content(
                data, release.content_sha256, keks, _candidates(current.pointer), timings
            )
            release = release.model_copy(update={"object": stored.ref})
        else:
            stored = _Stored(release.object, True, None, ())
        return self._advance(
            to_channel, lambda _: _Draft(release, None, expires), current, stored, timings
        )

    def reencrypt(
        self,
        channel: str,
        *,
        recipients: Recipients,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        expires_at: Expiry = _KEEP,
    ) -> PublishResult:
        """Re-encrypt what ``channel`` serves for a new recipient set (a token was revoked).

        Same ``content_sha256``, new CEK, new sequence; a rollout's ``previous`` release is
        re-encrypted too, so the revoked token can read nothing the channel points at.
        ``expires_at`` defaults to the current pointer's.

        Raises:
            NotFound: if the channel has no pointer.
            DecryptionError, ChecksumError: if the content cannot be recovered intact.
            ConfigError, SignatureError, StoreError, PreconditionFailed: as for :meth:`publish`.
        """
        check_channel(channel)
        keks = resolve_recipients(recipients, plaintext=False)
        assert keks is not None
        keep = expires_at is _KEEP
        expires = None if keep else expiry_of(expires_at, self._now())
        for _ in range(self.max_attempts):
            timings: dict[str, float] = {}
            current = self._timed(timings, "read_pointer", lambda: self._read_current(channel))
            pointer = current.pointer
            if pointer is None:
                raise NotFound(f"channel {channel!r} has nothing published to re-encrypt")
            started = time.perf_counter()
            data = self._plaintext_of(pointer.release, access_token, bundle_source)
            timings["recover"] = time.perf_counter() - started
            stored = self._store_content(data, pointer.release.content_sha256, keks, [], timings)
            release = pointer.release.model_copy(update={"object": stored.ref})
            new_previous = None
            if pointer.rollout is not None:
                previous = pointer.rollout.previous
                old_data = self._plaintext_of(previous, access_token, bundle_source)
                old_stored = self._store_content(
                    old_data, previous.content_sha256, keks, [], timings
                )
                new_previous = previous.model_copy(update={"object": old_stored.ref})

            def draft(
                latest: Pointer | None,
                seen: Pointer = pointer,
                release: Release = release,
                new_previous: Release | None = new_previous,
            ) -> _Draft:
                if (
                    latest is None
                    or latest.release != seen.release
                    or _previous_of(latest) != _previous_of(seen)
                ):
                    raise _ChannelMoved
                kept = latest.expires_at if keep else expires
                rollout = None
                if latest.rollout is not None and new_previous is not None:
                    rollout = Rollout(percent=latest.rollout.percent, previous=new_previous)
                return _Draft(release, rollout, kept)

            try:
                return self._advance(channel, draft, current, stored, timings)
            except _ChannelMoved:
                continue
        raise PreconditionFailed(
            f"channel {channel!r} kept changing while it was being re-encrypted; try again"
        )

    def set_rollout(self, channel: str, percent: int) -> PublishResult:
        """Move a rollout in progress to ``percent`` (same release and previous).

        Raises:
            ConfigError: if the channel has no rollout in progress or ``percent`` is not 0-100.
        """
        checked = _check_percent(percent)

        def draft(latest: Pointer | None) -> _Draft:
            latest, rollout = _rollout_in_progress(channel, latest)
            return _Draft(
                latest.release, rollout.model_copy(update={"percent": checked}), latest.expires_at
            )

        return self._move(channel, draft)

    def complete_rollout(self, channel: str) -> PublishResult:
        """Serve the rolled-out release to every instance (drops ``rollout``).

        Raises:
            ConfigError: if the channel has no rollout in progress.
        """

        def draft(latest: Pointer | None) -> _Draft:
            latest, _ = _rollout_in_progress(channel, latest)
            return _Draft(latest.release, None, latest.expires_at)

        return self._move(channel, draft)

    def abort_rollout(self, channel: str) -> PublishResult:
        """Serve the rollout's ``previous`` release to every instance again.

        Raises:
            ConfigError: if the channel has no rollout in progress.
        """

        def draft(latest: Pointer | None) -> _Draft:
            latest, rollout = _rollout_in_progress(channel, latest)
            return _Draft(rollout.previous, None, latest.expires_at)

        return self._move(channel, draft)

    def current(self, channel: str) -> Pointer | None:
        """The channel's verified pointer, or None if nothing was published.

        Raises:
            SignatureError, FormatError: if the pointer does not verify.
            StoreError: if the store fails.
        """
        check_channel(channel)
        return self._read_current(channel).pointer

    def history(self, channel: str) -> list[HistoryEntry]:
        """Every history copy of ``channel``, oldest first, each verified with the keys.

        Raises:
            StoreError: if the store fails (an entry that does not verify is reported in it).
        """
        check_channel(channel)
        return read_history(self.store, self.project_id, channel, self._trusted)

    # ------------------------------------------------------------------ internals

    def _move(self, channel: str, draft: Callable[[Pointer | None], _Draft]) -> PublishResult:
        check_channel(channel)
        timings: dict[str, float] = {}
        current = self._timed(timings, "read_pointer", lambda: self._read_current(channel))
        if current.pointer is None:
            raise NotFound(f"channel {channel!r} has nothing published")
        return self._advance(channel, draft, current, None, timings)

    @staticmethod
    def _timed(timings: dict[str, float], name: str, action: Callable[[], _Current]) -> _Current:
        started = time.perf_counter()
        try:
            return action()
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

    def _read_current(self, channel: str) -> _Current:
        key = pointer_key(self.project_id, channel)
        try:
            got = self.store.get(key, max_size=MAX_POINTER_SIZE)
        except NotFound:
            return _Current(None, None, None)
        pointer = self._verify(got.data, channel, f"the pointer of channel {channel!r}")
        if got.etag is None:
            raise StoreError(
                f"{self.store.url} returned no ETag for {key}; cannot publish safely without it"
            )
        return _Current(pointer, got.etag, got.data)

    def _verify(self, envelope: bytes, channel: str, what: str) -> Pointer:
        try:
            body = verify_envelope(envelope, self._trusted)
        except SignatureError as e:
            raise SignatureError(
                f"{what} in {self.store.url} is not signed by this signing key "
                f"(keyid {self.keyid[:16]}) or a trusted key; refusing to build on it "
                "(while rotating keys, pass the old public key as a trusted key)"
            ) from e
        except FormatError as e:
            raise FormatError(f"{what} in {self.store.url} is malformed: {e}") from e
        pointer = Pointer.parse(body)
        if pointer.project_id != self.project_id or pointer.channel != channel:
            raise FormatError(
                f"{what} names project {pointer.project_id!r} channel {pointer.channel!r}; "
                "refusing to build on it"
            )
        return pointer

    def _read_history_entry(self, channel: str, sequence: int) -> Pointer:
        if not isinstance(sequence, int) or sequence < 1:
            raise ConfigError(f"sequence must be a positive integer, got {sequence!r}")
        key = history_key(self.project_id, channel, sequence)
        try:
            got = self.store.get(key, max_size=MAX_POINTER_SIZE)
        except NotFound as e:
            raise NotFound(f"channel {channel!r} has no history entry {sequence}") from e
        pointer = self._verify(got.data, channel, f"history entry {sequence} of {channel!r}")
        if pointer.sequence != sequence:
            raise FormatError(
                f"history entry {sequence} of {channel!r} holds sequence {pointer.sequence}"
            )
        return pointer

    def _plaintext_of(
        self,
        release: Release,
        access_token: str | AccessToken | None,
        bundle_source: BundleSource | None,
    ) -> bytes:
        """The exact plaintext bundle bytes of a release, checked against its content hash."""
        wanted = release.content_sha256
        if bundle_source is not None:
            data = bundle_source(wanted)
            if not isinstance(data, bytes) or sha256_hex(data) != wanted:
                raise ChecksumError(
                    f"the bundle source returned other bytes than {release.version} "
                    f"(content_sha256 {wanted[:16]})"
                )
        else:
            ref = release.object
            if ref.encoding == "jwe" and access_token is None:
                raise ConfigError(
                    f"re-encrypting {release.version} needs its plaintext: give an ACCESS_TOKEN "
                    "that can decrypt it"
                )
            stored = self._fetch_object(ref)
            if ref.encoding == "jwe":
                token = (
                    access_token
                    if isinstance(access_token, AccessToken)
                    else AccessToken.parse(str(access_token))
                )
                data = decrypt_bundle(
                    stored, token.token_id, token.kek(), max_plaintext=MAX_BUNDLE_SIZE
                )
            else:
                data = stored
            if sha256_hex(data) != wanted:
                raise ChecksumError(
                    f"the content of {release.version} does not match its content_sha256"
                )
        bundle = parse_bundle(data, content_sha256=wanted)
        if bundle.project_id != self.project_id or bundle.version != release.version:
            raise FormatError(
                f"the bundle of {release.version} belongs to project {bundle.project_id!r} "
                f"version {bundle.version!r}"
            )
        return data

    def _fetch_object(self, ref: ObjectRef) -> bytes:
        ref.check_location(self.project_id)
        data = self.store.get(ref.path, max_size=ref.size).data
        if len(data) != ref.size or sha256_hex(data) != ref.sha256:
            raise ChecksumError(f"{ref.path} does not match the size and sha256 of its pointer")
        return data

    def _store_content(
        self,
        data: bytes,
        content_sha256: str,
        keks: dict[str, bytes] | None,
        candidates: list[Release],
        timings: dict[str, float],
    ) -> _Stored:
        """Encrypt (or reuse an identical object) and write it with ``If-None-Match: *``."""
        recipients = tuple(sorted(keks)) if keks else ()
        started = time.perf_counter()
        for release in candidates:
            if release.content_sha256 == content_sha256 and self._reusable(release.object, keks):
                timings["encrypt"] = timings.get("encrypt", 0.0) + time.perf_counter() - started
                return _Stored(release.object, True, len(data), recipients)
        encoding: Literal["jwe", "json"] = "json" if keks is None else "jwe"
        payload = data if keks is None else encrypt_bundle(data, keks)
        object_sha256 = sha256_hex(payload)
        ref = ObjectRef(
            path=bundle_key(self.project_id, object_sha256, encoding),
            sha256=object_sha256,
            size=len(payload),
            encoding=encoding,
        )
        encrypted = time.perf_counter()
        timings["encrypt"] = timings.get("encrypt", 0.0) + encrypted - started
        reused = False
        try:
            self.store.put(ref.path, payload, if_none_match=True)
        except PreconditionFailed:
            # Already there under its own hash: done, once we know it is what its name says.
            self._fetch_object(ref)
            reused = True
        timings["upload"] = timings.get("upload", 0.0) + time.perf_counter() - encrypted
        return _Stored(ref, reused, len(data), recipients)

    def _reusable(self, ref: ObjectRef, keks: dict[str, bytes] | None) -> bool:
        """An existing object is reused when it is intact and wrapped for exactly these keys."""
        if (ref.encoding == "json") != (keks is None):
            return False
        try:
            data = self._fetch_object(ref)
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

    def _advance(
        self,
        channel: str,
        draft: Callable[[Pointer | None], _Draft],
        current: _Current,
        stored: _Stored | None,
        timings: dict[str, float],
    ) -> PublishResult:
        """The compare-and-swap loop of DESIGN §6 step 4-5, then the history copy."""
        key = pointer_key(self.project_id, channel)
        started = time.perf_counter()
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                time.sleep(random.uniform(0, min(0.02 * 2**attempt, 0.5)))
                current = self._read_current(channel)
            latest = current.pointer
            plan = draft(latest)
            sequence = (latest.sequence if latest else 0) + 1
            pointer = Pointer(
                type="anvil.pointer/v1",
                project_id=self.project_id,
                channel=channel,
                sequence=sequence,
                published_at=format_timestamp(self._now()),
                expires_at=plan.expires_at,
                release=plan.release,
                rollout=plan.rollout,
            )
            envelope = sign_envelope(pointer.to_bytes(), self._key)
            try:
                if current.etag is None:
                    put = self.store.put(key, envelope, if_none_match=True)
                else:
                    put = self.store.put(key, envelope, if_match=current.etag)
            except PreconditionFailed:
                log.info("channel %s moved during publish (attempt %d); retrying", channel, attempt)
                continue
            cas_done = time.perf_counter()
            timings["pointer_cas"] = cas_done - started
            self._write_history(channel, sequence, envelope)
            if latest is not None and current.envelope is not None:
                # Backfill the entry a crashed publisher may have left unwritten.
                self._write_history(channel, latest.sequence, current.envelope)
            timings["history"] = time.perf_counter() - cas_done
            ref = plan.release.object
            same_object = stored is not None and stored.ref == ref
            return PublishResult(
                project_id=self.project_id,
                channel=channel,
                sequence=sequence,
                version=plan.release.version,
                prompt_set_id=plan.release.prompt_set_id,
                content_sha256=plan.release.content_sha256,
                object_path=ref.path,
                object_sha256=ref.sha256,
                object_size=ref.size,
                plaintext_size=stored.plaintext_size if stored and same_object else None,
                encoding=ref.encoding,
                etag=put.etag,
                recipients=stored.recipients if stored and same_object else (),
                reused_object=stored.reused if stored and same_object else True,
                attempts=attempt,
                published_at=pointer.published_at,
                expires_at=pointer.expires_at,
                rollout_percent=None if pointer.rollout is None else pointer.rollout.percent,
                timings=dict(timings),
                envelope=envelope,
            )
        raise PreconditionFailed(
            f"channel {channel!r} changed on each of {self.max_attempts} attempts to publish; "
            "other publishers are busy on it, try again"
        )

    def _write_history(self, channel: str, sequence: int, envelope: bytes) -> None:
        key = history_key(self.project_id, channel, sequence)
        try:
            self.store.put(key, envelope, if_none_match=True)
        except PreconditionFailed:
            pass  # written before (by us, or by the publisher that made this sequence)
        except StoreError as e:
            # The pointer is published; a missing history copy is backfilled next time.
            log.warning("could not write history entry %s: %s", key, e)


def _check_percent(percent: int | None) -> int | None:
    if percent is None:
        return None
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ConfigError(f"rollout percent must be an integer from 0 to 100, got {percent!r}")
    return percent


def _settled_release(pointer: Pointer) -> Release:
    """The release every instance had before ``pointer``'s unfinished rollout (or its release)."""
    if pointer.rollout is not None and pointer.rollout.percent < 100:
        return pointer.rollout.previous
    return pointer.release


def _previous_of(pointer: Pointer) -> Release | None:
    return None if pointer.rollout is None else pointer.rollout.previous


def _candidates(pointer: Pointer | None) -> list[Release]:
    if pointer is None:
        return []
    found = [pointer.release]
    if pointer.rollout is not None:
        found.append(pointer.rollout.previous)
    return found


def read_history(
    store: ObjectStore | str,
    project_id: str,
    channel: str,
    trusted_keys: Iterable[KeyLike] | None = None,
) -> list[HistoryEntry]:
    """List a channel's history copies, oldest first.

    With ``trusted_keys`` every entry is verified (``verified`` True/False, ``error`` says why
    not); without, entries are parsed unverified (``verified`` None).

    Raises:
        ConfigError: for a bad channel, store URL or key.
        StoreError: if the store cannot be listed or read.
    """
    check_channel(channel)
    owned = isinstance(store, str)
    opened = open_store(store) if isinstance(store, str) else store
    keys = None if trusted_keys is None else trusted_keys_of(trusted_keys)
    try:
        prefix = history_prefix(project_id, channel)
        entries = []
        for path in opened.list(prefix):
            match = HISTORY_NAME_RE.match(path[len(prefix) :])
            if match is None:
                continue
            data = opened.get(path, max_size=MAX_POINTER_SIZE).data
            entries.append(_history_entry(int(match.group(1)), path, data, keys, project_id))
        return sorted(entries, key=lambda e: e.sequence)
    finally:
        if owned:
            opened.close()


def _history_entry(
    sequence: int, path: str, data: bytes, keys: list[TrustedKey] | None, project_id: str
) -> HistoryEntry:
    keyid = None
    try:
        envelope = parse_json_object(data, "history entry")
        signatures = envelope.get("signatures")
        if isinstance(signatures, list) and signatures and isinstance(signatures[0], dict):
            found = signatures[0].get("keyid")
            keyid = found if isinstance(found, str) else None
        if keys is None:
            body = b64decode_any(envelope.get("payload"), "payload")
        else:
            body = verify_envelope(data, keys)
        pointer = Pointer.parse(body)
    except AnvilError as e:
        return HistoryEntry(
            sequence, path, None, False if keys is not None else None, keyid, str(e)
        )
    error = None
    if pointer.sequence != sequence or pointer.project_id != project_id:
        error = f"entry {path} holds sequence {pointer.sequence} of project {pointer.project_id}"
    verified = None if keys is None else error is None
    return HistoryEntry(sequence, path, pointer, verified, keyid, error)


def _rollout_in_progress(channel: str, latest: Pointer | None) -> tuple[Pointer, Rollout]:
    """The channel's pointer and its rollout.

    Raises:
        ConfigError: if the channel has no rollout in progress.
    """
    if latest is None or latest.rollout is None:
        raise ConfigError(f"channel {channel!r} has no rollout in progress")
    return latest, latest.rollout
