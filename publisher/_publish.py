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

This module is the front door: each operation checks its arguments and hands a draft of the
next entry list (``_drafts``) to that loop (``_pointer``), which writes the history copies
(``_history``) and returns a :class:`PublishResult` (``_results``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import ConfigError, NotFound
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import AccessToken, Pointer, Release, TrustedKey, key_id
from publisher._bundle import BuiltBundle, check_identifier
from publisher._channel import KeyLike, check_channel, trusted_keys_of
from publisher._drafts import (
    DraftFn,
    aborting_rollout,
    check_name,
    check_percent,
    completing_rollout,
    describe_list,
    others_than,
    promoting,
    publishing,
    reencrypting,
    removing,
    restoring,
    setting_rollout,
)
from publisher._entries import PENDING, BundleSource, Entries, Recipients, resolve_recipients
from publisher._history import read_history
from publisher._pointer import PointerWriter
from publisher._results import HistoryEntry, PublishResult
from publisher._time import Expiry, expiry_of

__all__ = ["BundleSource", "HistoryEntry", "PublishResult", "Publisher", "read_history"]

_KEEP: Any = object()
"""``expires_at`` not given to an operation that keeps the current pointer's expiry."""


class ReencryptingOptions(TypedDict, total=False):
    """The keyword options :meth:`Publisher.rollback` and :meth:`Publisher.promote` share:
    whom the entries are encrypted for, how old entries are read, when the pointer expires.
    """

    recipients: Recipients | None
    """ACCESS_TOKEN texts or a ``token_id -> KEK`` mapping (default None)."""
    plaintext: bool
    """Serve the entries unencrypted on purpose, instead of for ``recipients`` (default False)."""
    access_token: str | AccessToken | None
    """A token that can decrypt old entries (default None)."""
    bundle_source: BundleSource | None
    """Plaintext bundle bytes by ``content_sha256`` (default None: read the objects)."""
    expires_at: Expiry
    """When the new pointer expires (default None: never)."""


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
        public = signing_key.public_key()
        self.keyid = key_id(public)
        self._now = now or (lambda: datetime.now(UTC))
        self._entries = functools.partial(Entries, self.store, project_id)
        """The :class:`Entries` of one operation: ``self._entries(keks, access_token=…)``."""
        self._pointers = PointerWriter(
            self.store,
            project_id,
            signing_key,
            [TrustedKey(keyid=self.keyid, key=public), *trusted_keys_of(trusted_keys)],
            max_attempts=max(1, max_attempts),
            now=self._now,
        )

    @property
    def max_attempts(self) -> int:
        """Compare-and-swap attempts per operation before giving up on a busy channel."""
        return self._pointers.max_attempts

    @max_attempts.setter
    def max_attempts(self, value: int) -> None:
        self._pointers.max_attempts = value

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
        percent = check_percent(rollout_percent)
        check_name(name)
        check_name(default_name)
        built = self._built(bundle)
        entries = self._entries(keks, access_token=access_token, bundle_source=bundle_source)
        entries.timings.update(built.timings)
        entries.remember(built)
        current = self._pointers.read(channel, entries.timings)
        if percent is not None and current.pointer is None:
            raise ConfigError(f"channel {channel!r} has no release yet to roll out from")
        draft = publishing(
            built,
            channel,
            entries,
            name=name,
            default_name=default_name,
            expires=expires,
            percent=percent,
        )
        return self._pointers.advance(channel, draft, current, entries)

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
        latest = self._pointers.read(channel).pointer
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
        entries.check_clash(incoming, others_than(latest, built.prompt_set_id), channel)

    def remove(
        self, channel: str, prompt_set_id: str, *, expires_at: Expiry = _KEEP
    ) -> PublishResult:
        """Stop serving a prompt set on ``channel``: a new sequence without its entry.

        The other entries are carried over byte-identical; ``expires_at`` defaults to the
        current pointer's.

        Raises:
            NotFound: if the channel has nothing published.
            RemovalRefused: (a ConfigError) if the set has no entry there, it is the channel's
                last entry (a pointer never has zero entries), or a rollout is in progress.
            SignatureError, FormatError, StoreError, PreconditionFailed: as for :meth:`publish`.
        """
        keep = expires_at is _KEEP
        expires = None if keep else expiry_of(expires_at, self._now())
        return self._move(
            channel, removing(channel, prompt_set_id, expires=expires, keep_expiry=keep)
        )

    def rollback(
        self,
        channel: str,
        *,
        to_sequence: int,
        **options: Unpack[ReencryptingOptions],
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
        entries, expires = self._reencrypting(options)
        old = self._pointers.history_copy(channel, to_sequence)
        for release in old.releases:
            entries.plaintext(release)
        entries.check_disjoint(old.releases, channel)
        current = self._pointers.read(channel, entries.timings)
        draft = restoring(old, entries, expires=expires)
        return self._pointers.advance(channel, draft, current, entries)

    def promote(
        self,
        from_channel: str,
        to_channel: str,
        *,
        prompt_set_id: str | None = None,
        **options: Unpack[ReencryptingOptions],
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
        as_is = not options.get("recipients") and not options.get("plaintext")
        entries, expires = self._reencrypting(options, as_is=as_is)
        source = self._pointers.read(from_channel).pointer
        if source is None:
            raise NotFound(f"channel {from_channel!r} has nothing published to promote")
        copied = None if prompt_set_id is None else _entry_of(source, from_channel, prompt_set_id)
        current = self._pointers.read(to_channel, entries.timings)
        draft = promoting(source, copied, to_channel, entries, expires=expires)
        return self._pointers.advance(to_channel, draft, current, entries)

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
        return self._move(
            channel, reencrypting(entries, expires=expires, keep_expiry=keep), entries
        )

    def set_rollout(self, channel: str, percent: int) -> PublishResult:
        """Move a rollout in progress to ``percent`` (same lists).

        Raises:
            NoRolloutInProgress: if the channel has no rollout in progress.
            ConfigError: if ``percent`` is not 0-100.
        """
        return self._move(channel, setting_rollout(channel, check_percent(percent)))

    def complete_rollout(self, channel: str) -> PublishResult:
        """Serve the rolled-out list to every instance (drops ``rollout``).

        Raises:
            NoRolloutInProgress: if the channel has no rollout in progress.
        """
        return self._move(channel, completing_rollout(channel))

    def abort_rollout(self, channel: str) -> PublishResult:
        """Serve the rollout's ``previous`` list to every instance again.

        Raises:
            NoRolloutInProgress: if the channel has no rollout in progress.
        """
        return self._move(channel, aborting_rollout(channel))

    def current(self, channel: str) -> Pointer | None:
        """The channel's verified pointer, or None if nothing was published.

        Raises:
            SignatureError, FormatError: if the pointer does not verify.
            StoreError: if the store fails.
        """
        check_channel(channel)
        return self._pointers.read(channel).pointer

    def history(self, channel: str) -> list[HistoryEntry]:
        """Every history copy of ``channel``, oldest first, each verified with the keys.

        Raises:
            StoreError: if the store fails (an entry that does not verify is reported in it).
        """
        check_channel(channel)
        return read_history(self.store, self.project_id, channel, self._pointers.trusted)

    # ------------------------------------------------------------------ internals

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

    def _reencrypting(
        self, options: ReencryptingOptions, *, as_is: bool = False
    ) -> tuple[Entries, str | None]:
        """The entries and expiry of a rollback or promote (``as_is``: keep every object).

        Raises:
            TypeError: for a keyword that is no option, as a plain signature would.
            ConfigError: for bad recipients, expiry or access token.
        """
        unknown = sorted(options.keys() - ReencryptingOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"got an unexpected keyword argument {unknown[0]!r}")
        recipients = options.get("recipients")
        plaintext = options.get("plaintext", False)
        keks = None if as_is else resolve_recipients(recipients, plaintext=plaintext)
        expires = expiry_of(options.get("expires_at"), self._now())
        entries = self._entries(
            keks,
            access_token=options.get("access_token"),
            bundle_source=options.get("bundle_source"),
            as_is=as_is,
        )
        return entries, expires

    def _move(self, channel: str, draft: DraftFn, entries: Entries | None = None) -> PublishResult:
        check_channel(channel)
        return self._pointers.move(channel, draft, entries or self._entries(None, as_is=True))


def _entry_of(pointer: Pointer, channel: str, prompt_set_id: str) -> Release:
    """Raises: NotFound: if ``pointer`` has no entry for ``prompt_set_id``."""
    found = pointer.entry(prompt_set_id)
    if found is None:
        raise NotFound(
            f"channel {channel!r} serves no prompt set {prompt_set_id[:128]!r}; "
            f"it serves {describe_list(pointer.releases)}"
        )
    return found
