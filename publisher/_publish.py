"""Publishing with compare-and-swap on the channel pointer (DESIGN §4, §6).

    >>> with Publisher("file:///srv/store", project_id=pid, signing_key=key) as pub:
    ...     pub.publish(build_bundle(prompts, ...), "production", recipients=[token])

A channel serves one entry per prompt set (pointer v2). Every operation that moves a channel
(publish, remove, rollback, promote, re-encrypt, rollout steps) goes through one loop: read the
pointer and verify it with the signing key (never build on a pointer that cannot be verified),
build the new entry list from it, sign sequence S+1, write it with ``If-Match`` on the ETag
read (``If-None-Match: *`` for a new channel), and on a lost race re-read, rebuild the list
from what the winner wrote and retry, bounded and jittered. So publishers of different prompt
sets on one channel both land. Objects are written first with ``If-None-Match: *``, so a crash
anywhere leaves the channel serving its old list.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import (
    AnvilError,
    ConfigError,
    FormatError,
    NotFound,
    PreconditionFailed,
    SignatureError,
    SizeLimitError,
    StoreError,
)
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import (
    HISTORY_NAME_RE,
    POINTER_MAX_SIZE,
    RELEASE_NAME_MAX,
    RELEASES_MAX,
    AccessToken,
    Pointer,
    Release,
    Rollout,
    TrustedKey,
    b64decode_any,
    format_timestamp,
    history_key,
    history_prefix,
    key_id,
    parse_json_object,
    pointer_key,
    served_version,
    sign_envelope,
    verify_pointer,
)
from publisher._bundle import BuiltBundle, check_identifier
from publisher._entries import PENDING, BundleSource, Entries
from publisher._layout import (
    KeyLike,
    Recipients,
    check_channel,
    expiry_of,
    resolve_recipients,
    trusted_keys_of,
)

__all__ = ["BundleSource", "HistoryEntry", "PublishResult", "Publisher", "read_history"]

log = logging.getLogger("publisher")


_KEEP: Any = object()
Expiry = datetime | timedelta | str | None


def release_json(release: Release) -> dict[str, Any]:
    """One entry as the ``--json`` outputs show it."""
    return {
        "prompt_set_id": release.prompt_set_id,
        "name": release.name,
        "version": release.version,
        "content_sha256": release.content_sha256,
        "object_path": release.object.path,
        "encoding": release.object.encoding,
    }


@dataclass(frozen=True)
class PublishResult:
    """What one channel move wrote. ``timings`` are seconds per phase.

    The single-entry fields (``version`` … ``encoding``) describe the entry this operation
    published; they are None when it concerns no single entry (a remove, or a rollback or
    promote of a list of several entries). ``releases`` is the whole list now served and
    ``changes`` says, in sentences, what differs from the list before.
    """

    project_id: str
    channel: str
    sequence: int
    version: str | None
    prompt_set_id: str | None
    name: str | None
    content_sha256: str | None
    object_path: str | None
    object_sha256: str | None
    object_size: int | None
    plaintext_size: int | None
    encoding: Literal["jwe", "json"] | None
    etag: str | None
    recipients: tuple[str, ...]
    reused_object: bool
    attempts: int
    published_at: str
    expires_at: str | None
    rollout_percent: int | None
    timings: Mapping[str, float]
    envelope: bytes = field(repr=False)
    pointer: Pointer = field(repr=False)
    changes: tuple[str, ...] = ()

    @property
    def releases(self) -> tuple[Release, ...]:
        """Every entry the channel serves now (``pointer.releases``)."""
        return tuple(self.pointer.releases)

    def to_json(self) -> dict[str, Any]:
        """The ``anvil-publish … --json`` object."""
        rollout = self.pointer.rollout
        return {
            "project_id": self.project_id,
            "channel": self.channel,
            "sequence": self.sequence,
            "version": self.version,
            "prompt_set_id": self.prompt_set_id,
            "name": self.name,
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
            "releases": [release_json(r) for r in self.pointer.releases],
            "previous": None if rollout is None else [release_json(r) for r in rollout.previous],
            "changes": list(self.changes),
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
    def releases(self) -> tuple[Release, ...]:
        """The entries of that sequence (empty when it could not be read)."""
        return () if self.pointer is None else tuple(self.pointer.releases)

    def to_json(self) -> dict[str, Any]:
        pointer = self.pointer
        rollout = None if pointer is None else pointer.rollout
        return {
            "sequence": self.sequence,
            "path": self.path,
            "verified": self.verified,
            "keyid": self.keyid,
            "error": self.error,
            "published_at": None if pointer is None else pointer.published_at,
            "expires_at": None if pointer is None else pointer.expires_at,
            "version": None if pointer is None else served_version(pointer.releases),
            "releases": [release_json(r) for r in self.releases],
            "rollout_percent": None if rollout is None else rollout.percent,
            "previous": None if rollout is None else [release_json(r) for r in rollout.previous],
        }


@dataclass(frozen=True)
class _Current:
    pointer: Pointer | None
    etag: str | None
    envelope: bytes | None


@dataclass(frozen=True)
class _Draft:
    releases: list[Release]
    rollout: Rollout | None
    expires_at: str | None
    entry: Release | None = None
    """The entry this operation is about, for the single-entry fields of the result."""


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
        channel: str,
        *,
        name: str | None = None,
        recipients: Recipients | None = None,
        plaintext: bool = False,
        expires_at: Expiry = None,
        rollout_percent: int | None = None,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        default_name: str = "",
    ) -> PublishResult:
        """Publish a bundle as its prompt set's entry of ``channel``, as a new sequence.

        The entry of ``bundle.prompt_set_id`` is replaced (or added); every other entry is
        carried over byte-identical, unless it is encrypted for other recipients: then it is
        re-encrypted for ``recipients`` too, its plaintext read with ``bundle_source``, with
        one of ``recipients`` that is also one of its recipients, or with ``access_token``.
        ``recipients`` are ACCESS_TOKEN texts or a ``token_id -> KEK`` mapping; without any,
        only ``plaintext=True`` publishes (unencrypted). ``name`` is the entry's display name;
        it defaults to the name the channel's entry for this set has, else ``default_name``.
        With ``rollout_percent`` the new list goes to that share of instances and the rest keep
        the list everyone has now (an unfinished rollout's ``previous``); without it an
        unfinished rollout ends and everyone gets the new list.

        Raises:
            ValidationError: if the bundle is invalid (nothing is written).
            PromptIdClash: if a prompt id of the bundle is in another entry of the channel
                (the channel is left untouched).
            ConfigError: for bad arguments (no recipients, bad channel or name, expiry in the
                past, a rollout on an empty channel), or when another entry must be
                re-encrypted and nothing at hand can read it.
            SignatureError, FormatError: if the channel's pointer does not verify with the
                signing key (nothing is written).
            PreconditionFailed: if concurrent publishers kept winning for every attempt.
            StoreError: if the store fails; the channel then still serves its old list.
        """
        check_channel(channel)
        keks = resolve_recipients(recipients, plaintext=plaintext)
        expires = expiry_of(expires_at, self._now())
        percent = _check_percent(rollout_percent)
        _check_name(name)
        _check_name(default_name)
        built = self._built(bundle)
        entries = self._entries(keks, access_token=access_token, bundle_source=bundle_source)
        entries.timings.update(built.timings)
        entries.remember(built)
        current = self._timed(entries.timings, "read_pointer", lambda: self._read_current(channel))
        if percent is not None and current.pointer is None:
            raise ConfigError(f"channel {channel!r} has no release yet to roll out from")
        stored_entry: list[Release] = []

        def draft(latest: Pointer | None) -> _Draft:
            existing = None if latest is None else latest.entry(built.prompt_set_id)
            entry_name = name if name is not None else (existing.name if existing else default_name)
            entry = Release(
                prompt_set_id=built.prompt_set_id,
                name=entry_name,
                version=built.version,
                content_sha256=built.content_sha256,
                object=stored_entry[0].object if stored_entry else PENDING,
            )
            others = (
                []
                if latest is None
                else [r for r in latest.releases if r.prompt_set_id != built.prompt_set_id]
            )
            entries.check_clash(entry, others, channel)  # before anything is written
            _check_count(channel, len(others) + 1)
            candidates = [] if latest is None else latest.all_releases()
            if not stored_entry:
                stored_entry.append(entries.store_new(entry, built.data, candidates))
            entry = entry.model_copy(update={"object": stored_entry[0].object})
            kept = [entries.conform(r, candidates) for r in others]
            rollout = None
            if percent is not None:
                if latest is None:
                    raise ConfigError(f"channel {channel!r} has no release to roll out from")
                previous = [entries.conform(r, candidates) for r in _settled(latest)]
                rollout = Rollout(percent=percent, previous=previous)
            return _Draft(_sorted([*kept, entry]), rollout, expires, entry)

        return self._advance(channel, draft, current, entries)

    def check_publish(
        self,
        bundle: BuiltBundle | bytes,
        channel: str,
        *,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        recipients: Recipients | None = None,
    ) -> None:
        """Check, writing nothing, that ``bundle`` can join ``channel``: no prompt id of it may
        be in another entry. The other entries are read with ``bundle_source``,
        ``access_token`` or one of ``recipients``.

        Raises:
            PromptIdClash: naming the id and both sets.
            ConfigError: if an encrypted entry cannot be read with what is given.
            SignatureError, FormatError, StoreError: if the channel cannot be read.
        """
        check_channel(channel)
        keks = resolve_recipients(recipients, plaintext=False) if recipients else None
        built = self._built(bundle)
        entries = self._entries(keks, access_token=access_token, bundle_source=bundle_source)
        entries.remember(built)
        latest = self._read_current(channel).pointer
        if latest is None:
            return
        existing = latest.entry(built.prompt_set_id)
        incoming = Release(
            prompt_set_id=built.prompt_set_id,
            name=existing.name if existing else "",
            version=built.version,
            content_sha256=built.content_sha256,
            object=PENDING,
        )
        others = [r for r in latest.releases if r.prompt_set_id != built.prompt_set_id]
        entries.check_clash(incoming, others, channel)

    def remove(
        self, channel: str, prompt_set_id: str, *, expires_at: Expiry = _KEEP
    ) -> PublishResult:
        """Stop serving a prompt set on ``channel``: a new sequence without its entry.

        The other entries are carried over byte-identical; ``expires_at`` defaults to the
        current pointer's.

        Raises:
            NotFound: if the channel has nothing published.
            ConfigError: if the set has no entry there, it is the channel's last entry (a
                pointer never has zero entries), or a rollout is in progress.
            SignatureError, FormatError, StoreError, PreconditionFailed: as for :meth:`publish`.
        """
        keep = expires_at is _KEEP
        expires = None if keep else expiry_of(expires_at, self._now())

        def draft(latest: Pointer | None) -> _Draft:
            assert latest is not None
            gone = latest.entry(prompt_set_id)
            if gone is None:
                raise ConfigError(
                    f"channel {channel!r} serves no prompt set {prompt_set_id[:128]!r}; "
                    f"it serves {_listing(latest.releases)}"
                )
            if latest.rollout is not None:
                raise ConfigError(
                    f"channel {channel!r} has a rollout in progress; complete or abort it "
                    "before removing a prompt set"
                )
            if len(latest.releases) == 1:
                raise ConfigError(
                    f"{gone.describe()} is the only prompt set on {channel!r}; a channel never "
                    "serves nothing, so its last entry cannot be removed (publish another set "
                    "first)"
                )
            kept = [r for r in latest.releases if r.prompt_set_id != prompt_set_id]
            return _Draft(kept, None, latest.expires_at if keep else expires)

        return self._move(channel, draft)

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
        """Serve the whole entry list of history entry ``to_sequence`` again, as a new sequence.

        Every entry is re-encrypted for ``recipients`` (DESIGN §5: a revoked token must not
        regain access); its plaintext comes from ``bundle_source(content_sha256)``, from one of
        ``recipients`` that can decrypt the old object, or from ``access_token``. An unfinished
        rollout ends.

        Raises:
            NotFound: if there is no such history entry.
            SignatureError: if the entry does not verify with the signing (or a trusted) key.
            ConfigError: if an old entry cannot be read with what is given.
            DecryptionError, ChecksumError: if the old content cannot be recovered intact.
            PromptIdClash: if that list shares a prompt id between two entries.
            StoreError, PreconditionFailed: as for :meth:`publish`.
        """
        check_channel(channel)
        keks = resolve_recipients(recipients, plaintext=plaintext)
        expires = expiry_of(expires_at, self._now())
        old = self._read_history_entry(channel, to_sequence)
        entries = self._entries(keks, access_token=access_token, bundle_source=bundle_source)
        for release in old.releases:
            entries.plaintext(release)
        entries.check_disjoint(old.releases, channel)
        current = self._timed(entries.timings, "read_pointer", lambda: self._read_current(channel))

        def draft(latest: Pointer | None) -> _Draft:
            candidates = [] if latest is None else latest.all_releases()
            restored = [entries.conform(r, candidates) for r in old.releases]
            return _Draft(restored, None, expires, _only(restored))

        return self._advance(channel, draft, current, entries)

    def promote(
        self,
        from_channel: str,
        to_channel: str,
        *,
        prompt_set_id: str | None = None,
        recipients: Recipients | None = None,
        plaintext: bool = False,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        expires_at: Expiry = None,
    ) -> PublishResult:
        """Serve what ``from_channel`` serves on ``to_channel`` too, signed anew.

        Without ``prompt_set_id`` the whole list is copied (the target's list is replaced);
        with it only that set's entry is copied into the target's list, the others there are
        kept (and no prompt id may then be in two entries). Without ``recipients`` (and
        without ``plaintext``) the very same objects are referenced; with them every entry is
        re-encrypted (plaintexts from ``bundle_source``, ``access_token`` or a recipient that
        can read them).

        Raises:
            NotFound: if ``from_channel`` has nothing published or no entry for the set.
            PromptIdClash: if the copied entry shares a prompt id with another target entry.
            ConfigError: the same channel twice, or (with ``prompt_set_id`` and no
                recipients) target entries encrypted for other recipients than the copied one,
                or an entry that cannot be read for the prompt id check.
            SignatureError, StoreError, PreconditionFailed: as for :meth:`publish`.
        """
        check_channel(from_channel)
        check_channel(to_channel)
        if from_channel == to_channel:
            raise ConfigError("promote needs two different channels")
        expires = expiry_of(expires_at, self._now())
        as_is = not recipients and not plaintext
        keks = None if as_is else resolve_recipients(recipients, plaintext=plaintext)
        entries = self._entries(
            keks, access_token=access_token, bundle_source=bundle_source, as_is=as_is
        )
        source = self._read_current(from_channel).pointer
        if source is None:
            raise NotFound(f"channel {from_channel!r} has nothing published to promote")
        copied: Release | None = None
        if prompt_set_id is not None:
            copied = source.entry(prompt_set_id)
            if copied is None:
                raise NotFound(
                    f"channel {from_channel!r} serves no prompt set {prompt_set_id[:128]!r}; "
                    f"it serves {_listing(source.releases)}"
                )
        current = self._timed(
            entries.timings, "read_pointer", lambda: self._read_current(to_channel)
        )

        def draft(latest: Pointer | None) -> _Draft:
            candidates = [*source.releases, *([] if latest is None else latest.all_releases())]
            if copied is None:
                listed = [entries.conform(r, candidates) for r in source.releases]
                return _Draft(listed, None, expires, _only(listed))
            others = (
                []
                if latest is None
                else [r for r in latest.releases if r.prompt_set_id != copied.prompt_set_id]
            )
            entries.check_clash(copied, others, to_channel)
            if as_is:
                wanted = entries.recipients_of(copied)
                for other in others:
                    if entries.recipients_of(other) != wanted:
                        raise ConfigError(
                            f"{other.describe()} on {to_channel!r} is encrypted for other "
                            f"recipients than {copied.describe()}; every entry of a channel "
                            "has the same recipients: give the recipients (--recipient) to "
                            "re-encrypt them"
                        )
            entry = entries.conform(copied, candidates)
            kept = [entries.conform(r, candidates) for r in others]
            return _Draft(_sorted([*kept, entry]), None, expires, entry)

        return self._advance(to_channel, draft, current, entries)

    def reencrypt(
        self,
        channel: str,
        *,
        recipients: Recipients,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        expires_at: Expiry = _KEEP,
    ) -> PublishResult:
        """Re-encrypt every entry ``channel`` serves for a new recipient set (a token was
        revoked): both lists of a rollout, same ``content_sha256``, new CEKs, new sequence.
        ``expires_at`` defaults to the current pointer's.

        Raises:
            NotFound: if the channel has no pointer.
            ConfigError: if an entry cannot be read with what is given.
            DecryptionError, ChecksumError: if the content cannot be recovered intact.
            SignatureError, StoreError, PreconditionFailed: as for :meth:`publish`.
        """
        check_channel(channel)
        keks = resolve_recipients(recipients, plaintext=False)
        keep = expires_at is _KEEP
        expires = None if keep else expiry_of(expires_at, self._now())
        entries = self._entries(
            keks, access_token=access_token, bundle_source=bundle_source, fresh=True
        )

        def draft(latest: Pointer | None) -> _Draft:
            assert latest is not None
            listed = [entries.conform(r) for r in latest.releases]
            rollout = None
            if latest.rollout is not None:
                previous = [entries.conform(r) for r in latest.rollout.previous]
                rollout = Rollout(percent=latest.rollout.percent, previous=previous)
            kept = latest.expires_at if keep else expires
            return _Draft(listed, rollout, kept, _only(listed))

        return self._move(channel, draft, entries)

    def set_rollout(self, channel: str, percent: int) -> PublishResult:
        """Move a rollout in progress to ``percent`` (same lists).

        Raises:
            ConfigError: if the channel has no rollout in progress or ``percent`` is not 0-100.
        """
        checked = _check_percent(percent)

        def draft(latest: Pointer | None) -> _Draft:
            latest, rollout = _rollout_in_progress(channel, latest)
            return _Draft(
                list(latest.releases),
                rollout.model_copy(update={"percent": checked}),
                latest.expires_at,
                _only(latest.releases),
            )

        return self._move(channel, draft)

    def complete_rollout(self, channel: str) -> PublishResult:
        """Serve the rolled-out list to every instance (drops ``rollout``).

        Raises:
            ConfigError: if the channel has no rollout in progress.
        """

        def draft(latest: Pointer | None) -> _Draft:
            latest, _ = _rollout_in_progress(channel, latest)
            return _Draft(list(latest.releases), None, latest.expires_at, _only(latest.releases))

        return self._move(channel, draft)

    def abort_rollout(self, channel: str) -> PublishResult:
        """Serve the rollout's ``previous`` list to every instance again.

        Raises:
            ConfigError: if the channel has no rollout in progress.
        """

        def draft(latest: Pointer | None) -> _Draft:
            latest, rollout = _rollout_in_progress(channel, latest)
            return _Draft(list(rollout.previous), None, latest.expires_at, _only(rollout.previous))

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

    def _entries(
        self,
        keks: dict[str, bytes] | None,
        *,
        access_token: str | AccessToken | None = None,
        bundle_source: BundleSource | None = None,
        as_is: bool = False,
        fresh: bool = False,
    ) -> Entries:
        return Entries(
            self.store,
            self.project_id,
            keks,
            access_token=access_token,
            bundle_source=bundle_source,
            as_is=as_is,
            fresh=fresh,
        )

    def _built(self, bundle: BuiltBundle | bytes) -> BuiltBundle:
        if isinstance(bundle, BuiltBundle):
            built = bundle
        else:
            built = BuiltBundle.from_bytes(bytes(bundle), project_id=self.project_id)
        if built.project_id != self.project_id:
            raise ConfigError(
                f"bundle belongs to project {built.project_id!r}, not {self.project_id!r}"
            )
        return built

    def _move(
        self,
        channel: str,
        draft: Callable[[Pointer | None], _Draft],
        entries: Entries | None = None,
    ) -> PublishResult:
        check_channel(channel)
        entries = entries or self._entries(None, as_is=True)
        current = self._timed(entries.timings, "read_pointer", lambda: self._read_current(channel))
        if current.pointer is None:
            raise NotFound(f"channel {channel!r} has nothing published")
        return self._advance(channel, draft, current, entries)

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
            got = self.store.get(key, max_size=POINTER_MAX_SIZE)
        except NotFound:
            return _Current(None, None, None)
        except SizeLimitError as e:
            raise SizeLimitError(
                f"the pointer of channel {channel!r} in {self.store.url} is larger than "
                f"{POINTER_MAX_SIZE} bytes; refusing to build on it"
            ) from e
        pointer = self._verify(got.data, channel, f"the pointer of channel {channel!r}")
        if got.etag is None:
            raise StoreError(
                f"{self.store.url} returned no ETag for {key}; cannot publish safely without it"
            )
        return _Current(pointer, got.etag, got.data)

    def _verify(self, envelope: bytes, channel: str, what: str) -> Pointer:
        """The one pointer verification of ``anvil_client.wire``, with the publisher's keys."""
        try:
            return verify_pointer(
                envelope, self._trusted, project_id=self.project_id, channel=channel
            )
        except SignatureError as e:
            raise SignatureError(
                f"{what} in {self.store.url} is not signed by this signing key "
                f"(keyid {self.keyid[:16]}) or a trusted key; refusing to build on it "
                "(while rotating keys, pass the old public key as a trusted key)"
            ) from e
        except FormatError as e:
            raise FormatError(f"refusing to build on {what} in {self.store.url}: {e}") from e
        except SizeLimitError as e:
            raise SizeLimitError(f"refusing to build on {what} in {self.store.url}: {e}") from e

    def _read_history_entry(self, channel: str, sequence: int) -> Pointer:
        if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
            raise ConfigError(f"sequence must be a positive integer, got {sequence!r}")
        key = history_key(self.project_id, channel, sequence)
        try:
            got = self.store.get(key, max_size=POINTER_MAX_SIZE)
        except NotFound as e:
            raise NotFound(f"channel {channel!r} has no history entry {sequence}") from e
        pointer = self._verify(got.data, channel, f"history entry {sequence} of {channel!r}")
        if pointer.sequence != sequence:
            raise FormatError(
                f"history entry {sequence} of {channel!r} holds sequence {pointer.sequence}"
            )
        return pointer

    def _advance(
        self,
        channel: str,
        draft: Callable[[Pointer | None], _Draft],
        current: _Current,
        entries: Entries,
    ) -> PublishResult:
        """The compare-and-swap loop of DESIGN §6 step 4-5, then the history copy.

        ``draft`` builds the new list from the pointer just read, each attempt anew.
        """
        key = pointer_key(self.project_id, channel)
        timings = entries.timings
        started = time.perf_counter()
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                time.sleep(random.uniform(0, min(0.02 * 2**attempt, 0.5)))
                current = self._read_current(channel)
            latest = current.pointer
            plan = draft(latest)
            _check_count(channel, len(plan.releases))
            sequence = (latest.sequence if latest else 0) + 1
            pointer = Pointer(
                type="anvil.pointer/v2",
                project_id=self.project_id,
                channel=channel,
                sequence=sequence,
                published_at=format_timestamp(self._now()),
                expires_at=plan.expires_at,
                releases=_sorted(plan.releases),
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
            return self._result(
                channel, pointer, envelope, put.etag, plan, latest, entries, attempt
            )
        raise PreconditionFailed(
            f"channel {channel!r} changed on each of {self.max_attempts} attempts to publish; "
            "other publishers are busy on it, try again"
        )

    def _result(
        self,
        channel: str,
        pointer: Pointer,
        envelope: bytes,
        etag: str | None,
        plan: _Draft,
        before: Pointer | None,
        entries: Entries,
        attempts: int,
    ) -> PublishResult:
        entry = plan.entry
        ref = None if entry is None else entry.object
        stored = None if ref is None else entries.stored.get(ref.path)
        return PublishResult(
            project_id=self.project_id,
            channel=channel,
            sequence=pointer.sequence,
            version=None if entry is None else entry.version,
            prompt_set_id=None if entry is None else entry.prompt_set_id,
            name=None if entry is None else entry.name,
            content_sha256=None if entry is None else entry.content_sha256,
            object_path=None if ref is None else ref.path,
            object_sha256=None if ref is None else ref.sha256,
            object_size=None if ref is None else ref.size,
            plaintext_size=None if stored is None else stored.plaintext_size,
            encoding=None if ref is None else ref.encoding,
            etag=etag,
            recipients=entries.recipients,
            reused_object=True if stored is None else stored.reused,
            attempts=attempts,
            published_at=pointer.published_at,
            expires_at=pointer.expires_at,
            rollout_percent=None if pointer.rollout is None else pointer.rollout.percent,
            timings=dict(entries.timings),
            envelope=envelope,
            pointer=pointer,
            changes=describe_changes(before, pointer),
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


def describe_changes(before: Pointer | None, after: Pointer) -> tuple[str, ...]:
    """Sentences saying how ``after``'s list differs from ``before``'s: ``Support bot 0.2.0 →
    0.3.0``, ``Checkout helper added``, ``Checkout helper removed``, …"""
    old = {} if before is None else {r.prompt_set_id: r for r in before.releases}
    new = {r.prompt_set_id: r for r in after.releases}
    changes: list[str] = []
    for release in after.releases:
        label = release.name or release.prompt_set_id
        was = old.get(release.prompt_set_id)
        if was is None:
            changes.append(f"{label} added")
            continue
        if was.name != release.name:
            changes.append(f"{was.name or was.prompt_set_id} renamed to {label}")
        if was.version != release.version:
            changes.append(f"{label} {was.version} → {release.version}")
        elif was.content_sha256 != release.content_sha256:
            changes.append(f"{label} {release.version} has new content")
        elif was.object != release.object:
            changes.append(f"{label} {release.version} re-encrypted")
    for release in before.releases if before is not None else []:
        if release.prompt_set_id not in new:
            changes.append(f"{release.name or release.prompt_set_id} removed")
    was_rollout = None if before is None else before.rollout
    if after.rollout is not None:
        if was_rollout is None or was_rollout.previous != after.rollout.previous:
            changes.append(f"rollout started at {after.rollout.percent}%")
        elif was_rollout.percent != after.rollout.percent:
            changes.append(f"rollout {was_rollout.percent}% → {after.rollout.percent}%")
    elif was_rollout is not None:
        changes.append("rollout ended")
    return tuple(changes)


def _sorted(releases: Iterable[Release]) -> list[Release]:
    return sorted(releases, key=lambda r: r.prompt_set_id)


def _only(releases: Sequence[Release]) -> Release | None:
    return releases[0] if len(releases) == 1 else None


def _listing(releases: Iterable[Release]) -> str:
    return ", ".join(f"{r.describe()} ({r.prompt_set_id})" for r in releases)


def _check_name(name: str | None) -> None:
    if name is None:
        return
    if not isinstance(name, str) or len(name) > RELEASE_NAME_MAX:
        raise ConfigError(
            f"a prompt set name must be a text of at most {RELEASE_NAME_MAX} characters"
        )


def _check_count(channel: str, count: int) -> None:
    if count > RELEASES_MAX:
        raise ConfigError(
            f"channel {channel!r} would serve {count} prompt sets; at most {RELEASES_MAX} fit "
            "in one pointer (remove a set first)"
        )


def _check_percent(percent: int | None) -> int | None:
    if percent is None:
        return None
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ConfigError(f"rollout percent must be an integer from 0 to 100, got {percent!r}")
    return percent


def _settled(pointer: Pointer) -> list[Release]:
    """The list every instance had before ``pointer``'s unfinished rollout (or its list)."""
    if pointer.rollout is not None and pointer.rollout.percent < 100:
        return list(pointer.rollout.previous)
    return list(pointer.releases)


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
            data = opened.get(path, max_size=POINTER_MAX_SIZE).data
            entries.append(
                _history_entry(int(match.group(1)), path, data, keys, project_id, channel)
            )
        return sorted(entries, key=lambda e: e.sequence)
    finally:
        if owned:
            opened.close()


def _history_entry(
    sequence: int,
    path: str,
    data: bytes,
    keys: list[TrustedKey] | None,
    project_id: str,
    channel: str,
) -> HistoryEntry:
    keyid = None
    try:
        envelope = parse_json_object(data, "history entry")
        signatures = envelope.get("signatures")
        if isinstance(signatures, list) and signatures and isinstance(signatures[0], dict):
            found = signatures[0].get("keyid")
            keyid = found if isinstance(found, str) else None
        if keys is None:
            # Listing without keys: shown as "unchecked", never trusted for anything.
            pointer = Pointer.parse(b64decode_any(envelope.get("payload"), "payload"))
        else:
            pointer = verify_pointer(data, keys, project_id=project_id, channel=channel)
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
