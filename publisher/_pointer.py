"""Moving a channel's pointer: read and verify it, sign the next sequence, compare-and-swap.

    >>> writer = PointerWriter(store, pid, key, keys, max_attempts=3, now=clock)  # doctest: +SKIP
    >>> writer.move("production", completing_rollout("production"), entries)  # doctest: +SKIP

Every move is one loop (DESIGN §6 step 4-5): read the pointer and verify it with the signing
key (never build on a pointer that cannot be verified), let the draft build the new entry list
from it, sign sequence S+1, write it with ``If-Match`` on the ETag read (``If-None-Match: *``
for a new channel), and on a lost race re-read and retry, bounded and jittered. Then the
history copies are written.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import NotFound, PreconditionFailed, SizeLimitError, StoreError
from anvil_client.stores import ObjectStore
from anvil_client.wire import (
    POINTER_MAX_SIZE,
    Pointer,
    TrustedKey,
    format_timestamp,
    pointer_key,
    sign_envelope,
)
from publisher._channel import verify_to_build
from publisher._drafts import Draft, DraftFn, check_count, sorted_releases
from publisher._entries import Entries
from publisher._history import read_history_copy, write_history_copy
from publisher._results import PublishResult, publish_result

__all__ = ["Current", "PointerWriter"]

log = logging.getLogger("publisher")


@dataclass(frozen=True)
class Current:
    """A channel's pointer as read: verified, with the ETag and bytes to build on."""

    pointer: Pointer | None
    etag: str | None
    envelope: bytes | None


@dataclass(eq=False)
class PointerWriter:
    """Reads, verifies and moves the pointers of one project's channels in one store.

    ``trusted`` starts with the signing key's own public key; ``now`` is the clock that
    stamps ``published_at``.
    """

    store: ObjectStore
    project_id: str
    signing_key: Ed25519PrivateKey = field(repr=False)
    trusted: list[TrustedKey]
    max_attempts: int
    now: Callable[[], datetime]

    def read(self, channel: str, timings: dict[str, float] | None = None) -> Current:
        """The channel's verified pointer (``pointer`` None when there is none yet); the time
        spent is added to ``timings["read_pointer"]``.

        Raises:
            SignatureError, FormatError, SizeLimitError: if it cannot be built on.
            StoreError: if the store fails or gives no ETag.
        """
        started = time.perf_counter()
        try:
            return self._read(channel)
        finally:
            if timings is not None:
                elapsed = time.perf_counter() - started
                timings["read_pointer"] = timings.get("read_pointer", 0.0) + elapsed

    def _read(self, channel: str) -> Current:
        key = pointer_key(self.project_id, channel)
        try:
            got = self.store.get(key, max_size=POINTER_MAX_SIZE)
        except NotFound:
            return Current(None, None, None)
        except SizeLimitError as e:
            raise SizeLimitError(
                f"the pointer of channel {channel!r} in {self.store.url} is larger than "
                f"{POINTER_MAX_SIZE} bytes; refusing to build on it"
            ) from e
        pointer = self.verify(got.data, channel, f"the pointer of channel {channel!r}")
        if got.etag is None:
            raise StoreError(
                f"{self.store.url} returned no ETag for {key}; cannot publish safely without it"
            )
        return Current(pointer, got.etag, got.data)

    def verify(self, envelope: bytes, channel: str, what: str) -> Pointer:
        """Raises: SignatureError, FormatError, SizeLimitError: if ``what`` cannot be built on."""
        return verify_to_build(
            envelope,
            self.trusted,
            project_id=self.project_id,
            channel=channel,
            what=what,
            where=self.store.url,
        )

    def history_copy(self, channel: str, sequence: int) -> Pointer:
        """History entry ``sequence`` of ``channel``, verified like the pointer.

        Raises:
            NotFound, ConfigError, FormatError, SignatureError, StoreError: see
                :func:`~publisher._history.read_history_copy`.
        """
        return read_history_copy(
            self.store,
            self.project_id,
            channel,
            sequence,
            lambda envelope, what: self.verify(envelope, channel, what),
        )

    def move(self, channel: str, draft: DraftFn, entries: Entries) -> PublishResult:
        """Advance a channel that has a pointer.

        Raises:
            NotFound: if the channel has nothing published.
        """
        current = self.read(channel, entries.timings)
        if current.pointer is None:
            raise NotFound(f"channel {channel!r} has nothing published")
        return self.advance(channel, draft, current, entries)

    def advance(
        self, channel: str, draft: DraftFn, current: Current, entries: Entries
    ) -> PublishResult:
        """The compare-and-swap loop, then the history copy.

        ``draft`` builds the new list from the pointer just read, each attempt anew.

        Raises:
            PreconditionFailed: if other publishers won every attempt.
        """
        key = pointer_key(self.project_id, channel)
        started = time.perf_counter()
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                time.sleep(random.uniform(0, min(0.02 * 2**attempt, 0.5)))
                current = self.read(channel)
            plan = draft(current.pointer)
            pointer = self._next_pointer(channel, current.pointer, plan)
            envelope = sign_envelope(pointer.to_bytes(), self.signing_key)
            try:
                if current.etag is None:
                    put = self.store.put(key, envelope, if_none_match=True)
                else:
                    put = self.store.put(key, envelope, if_match=current.etag)
            except PreconditionFailed:
                log.info("channel %s moved during publish (attempt %d); retrying", channel, attempt)
                continue
            entries.timings["pointer_cas"] = time.perf_counter() - started
            self._write_history(channel, pointer, envelope, current, entries.timings)
            return publish_result(
                project_id=self.project_id,
                pointer=pointer,
                envelope=envelope,
                etag=put.etag,
                entry=plan.entry,
                before=current.pointer,
                entries=entries,
                attempts=attempt,
            )
        raise PreconditionFailed(
            f"channel {channel!r} changed on each of {self.max_attempts} attempts to publish; "
            "other publishers are busy on it, try again"
        )

    def _next_pointer(self, channel: str, latest: Pointer | None, plan: Draft) -> Pointer:
        check_count(channel, len(plan.releases))
        return Pointer(
            type="anvil.pointer/v2",
            project_id=self.project_id,
            channel=channel,
            sequence=(latest.sequence if latest else 0) + 1,
            published_at=format_timestamp(self.now()),
            expires_at=plan.expires_at,
            releases=sorted_releases(plan.releases),
            rollout=plan.rollout,
        )

    def _write_history(
        self,
        channel: str,
        pointer: Pointer,
        envelope: bytes,
        before: Current,
        timings: dict[str, float],
    ) -> None:
        started = time.perf_counter()
        write_history_copy(self.store, self.project_id, channel, pointer.sequence, envelope)
        if before.pointer is not None and before.envelope is not None:
            # Backfill the entry a crashed publisher may have left unwritten.
            write_history_copy(
                self.store, self.project_id, channel, before.pointer.sequence, before.envelope
            )
        timings["history"] = time.perf_counter() - started
