"""A channel's history: one signed copy of every pointer published, written after each move.

    >>> from publisher import read_history
    >>> [e.sequence for e in read_history("file:///srv/store", pid, "production")]  # doctest: +SKIP
    [1, 2, 3]

Copies are written with ``If-None-Match: *`` (a copy never changes) and read back verified: for
a rollback with the publisher's keys, for listing with the keys given (or unverified, shown as
such and never trusted for anything).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from anvil_client.errors import (
    AnvilError,
    ConfigError,
    FormatError,
    NotFound,
    PreconditionFailed,
    StoreError,
)
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import (
    HISTORY_NAME_RE,
    POINTER_MAX_SIZE,
    Pointer,
    TrustedKey,
    b64decode_any,
    history_key,
    history_prefix,
    parse_json_object,
    verify_pointer,
)
from publisher._channel import KeyLike, check_channel, trusted_keys_of
from publisher._results import HistoryEntry

__all__ = ["read_history", "read_history_copy", "write_history_copy"]

log = logging.getLogger("publisher")


def write_history_copy(
    store: ObjectStore, project_id: str, channel: str, sequence: int, envelope: bytes
) -> None:
    """Write the signed pointer of ``sequence`` as its history copy, unless it is there.

    A store failure is logged, not raised: the pointer is published already, and the next
    move backfills the copy of the sequence it builds on.
    """
    key = history_key(project_id, channel, sequence)
    try:
        store.put(key, envelope, if_none_match=True)
    except PreconditionFailed:
        pass  # written before (by us, or by the publisher that made this sequence)
    except StoreError as e:
        log.warning("could not write history entry %s: %s", key, e)


def read_history_copy(
    store: ObjectStore,
    project_id: str,
    channel: str,
    sequence: int,
    verify: Callable[[bytes, str], Pointer],
) -> Pointer:
    """The pointer of history entry ``sequence``, verified with ``verify(envelope, what)``.

    Raises:
        ConfigError: if ``sequence`` is not a positive integer.
        NotFound: if there is no such entry.
        FormatError: if the entry holds another sequence.
        SignatureError, StoreError: from ``verify`` and the store.
    """
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise ConfigError(f"sequence must be a positive integer, got {sequence!r}")
    key = history_key(project_id, channel, sequence)
    try:
        got = store.get(key, max_size=POINTER_MAX_SIZE)
    except NotFound as e:
        raise NotFound(f"channel {channel!r} has no history entry {sequence}") from e
    pointer = verify(got.data, f"history entry {sequence} of {channel!r}")
    if pointer.sequence != sequence:
        raise FormatError(
            f"history entry {sequence} of {channel!r} holds sequence {pointer.sequence}"
        )
    return pointer


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
