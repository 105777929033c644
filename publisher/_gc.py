"""Delete the bundle objects of a project that nothing names any more (``anvil-publish gc``).

    >>> report = collect_garbage("s3://bucket/anvil", project_id, [public_key])  # dry run
    >>> report.unreferenced, report.reclaimable_bytes

A bundle object is kept while the current pointer of any channel of the project, or one of the
last ``keep_history`` history entries of any channel, names it (both lists of a rollout
count). Every pointer and kept history entry is verified with the trusted keys first: nothing
is deleted on the word of data that does not verify. A dry run is the default.

Safety beyond that: objects younger than ``min_age`` are kept (a publish writes its object
before its pointer, so a fresh object may be about to be named), the channels are read again
right before deleting and gc stops if anything changed, and a project whose channels have no
pointer at all is refused (a wrong store URL or project id would look just like that).
On S3 with versioning (``infra/anvil.yaml``) a deleted object stays restorable as a
noncurrent version until the lifecycle rule expires it.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from anvil_client.errors import AnvilError, ConfigError, NotFound, StoreError, VerificationError
from anvil_client.stores import FileStore, ObjectStore, open_store
from anvil_client.wire import (
    CHANNEL_RE,
    HISTORY_NAME_RE,
    POINTER_MAX_SIZE,
    Pointer,
    TrustedKey,
    bundles_prefix,
    history_prefix,
    is_bundle_name,
    pointer_key,
    verify_pointer,
)
from publisher._bundle import check_identifier
from publisher._channel import KeyLike, check_channel, trusted_keys_of

__all__ = ["DEFAULT_KEEP_HISTORY", "DEFAULT_MIN_AGE", "GcObject", "GcReport", "collect_garbage"]

#: History entries kept per channel by default: a rollback to any of them still finds its bundles.
DEFAULT_KEEP_HISTORY = 10
#: Unnamed objects younger than this are kept: a publish in flight writes its object first.
DEFAULT_MIN_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class GcObject:
    """One bundle object that nothing names. ``size``/``modified`` are None when unknown."""

    path: str
    size: int | None
    modified: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "modified": None if self.modified is None else self.modified.isoformat(),
        }


@dataclass(frozen=True)
class GcReport:
    """What one ``collect_garbage`` found and (unless ``dry_run``) deleted.

    ``unreferenced`` are the objects old enough to delete, ``too_recent`` the unnamed ones kept
    for ``min_age``, ``kept`` the object paths still named, ``ignored`` keys under the bundles
    prefix that are not bundle objects (never deleted) and ``deleted`` what was deleted.
    """

    project_id: str
    store_url: str
    dry_run: bool
    keep_history: int
    channels: tuple[str, ...]
    kept: tuple[str, ...]
    unreferenced: tuple[GcObject, ...]
    too_recent: tuple[GcObject, ...]
    ignored: tuple[str, ...]
    deleted: tuple[str, ...]

    @property
    def reclaimable_bytes(self) -> int:
        """The bytes of ``unreferenced`` whose size is known."""
        return sum(o.size or 0 for o in self.unreferenced)

    def to_json(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "store": self.store_url,
            "dry_run": self.dry_run,
            "keep_history": self.keep_history,
            "channels": list(self.channels),
            "kept": list(self.kept),
            "unreferenced": [o.to_json() for o in self.unreferenced],
            "too_recent": [o.to_json() for o in self.too_recent],
            "ignored": list(self.ignored),
            "deleted": list(self.deleted),
            "reclaimable_bytes": self.reclaimable_bytes,
        }


@dataclass(frozen=True)
class _Channels:
    """The channel keys of a project as listed: pointer keys and history keys per channel."""

    pointers: Mapping[str, str]
    histories: Mapping[str, Sequence[tuple[int, str]]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.pointers) | set(self.histories)))


def collect_garbage(
    store: ObjectStore | str,
    project_id: str,
    trusted_keys: Iterable[KeyLike],
    *,
    channels: Iterable[str] = (),
    keep_history: int = DEFAULT_KEEP_HISTORY,
    min_age: timedelta = DEFAULT_MIN_AGE,
    delete: bool = False,
    now: datetime | None = None,
) -> GcReport:
    """Find (and with ``delete=True`` delete) the project's bundle objects nothing names.

    Every channel found under ``projects/{project_id}/channels/`` counts; ``channels`` names
    channels that must be among them (a check against a wrong store or project id).

    Raises:
        ConfigError: no trusted key, a bad argument, a named channel without a pointer, or
            bundles but no channel pointer at all.
        VerificationError: a pointer or kept history entry does not verify (nothing deleted).
        StoreError: the store cannot be listed or read, is read-only (for ``delete``), or the
            channels changed while gc ran (nothing deleted).
    """
    check_identifier(project_id, "project id")
    keys = trusted_keys_of(trusted_keys)
    if not keys:
        raise ConfigError(
            "gc needs the trusted public keys: it deletes nothing on the word of an unverified "
            "pointer"
        )
    if isinstance(keep_history, bool) or not isinstance(keep_history, int) or keep_history < 0:
        raise ConfigError(f"keep_history must be a whole number >= 0, got {keep_history!r}")
    if min_age < timedelta(0):
        raise ConfigError("min_age must not be negative")
    required = list(channels)
    for channel in required:
        check_channel(channel)
    moment = now or datetime.now(UTC)
    owned = isinstance(store, str)
    opened = open_store(store) if isinstance(store, str) else store
    try:
        if delete and opened.read_only:
            raise StoreError(
                f"{opened.url} is read-only; gc --delete needs an s3:// or file:// store"
            )
        return _collect(opened, project_id, keys, required, keep_history, min_age, delete, moment)
    finally:
        if owned:
            opened.close()


def _collect(
    store: ObjectStore,
    project_id: str,
    keys: list[TrustedKey],
    required: list[str],
    keep_history: int,
    min_age: timedelta,
    delete: bool,
    now: datetime,
) -> GcReport:
    found = _list_channels(store, project_id)
    _check_required(store, project_id, found, required)
    prefix = bundles_prefix(project_id)
    objects = store.list(prefix)
    if not found.pointers and objects:
        raise ConfigError(
            f"no channel of project {project_id} has a pointer in {store.url}, yet it holds "
            f"{len(objects)} objects under {prefix}; refusing to delete them all (a wrong "
            "store URL or project id looks the same)"
        )
    seen = _read_pointers(store, project_id, keys, found)
    named = _named_paths(store, project_id, keys, found, seen, keep_history)

    ignored = [key for key in objects if not is_bundle_name(key[len(prefix) :])]
    unnamed = [key for key in objects if key not in named and is_bundle_name(key[len(prefix) :])]
    described = [_describe(store, key) for key in unnamed]
    old_enough = [o for o in described if o.modified is not None and now - o.modified >= min_age]
    too_recent = [o for o in described if o not in old_enough]
    deleted: list[str] = []
    if delete and old_enough:
        # A publish between our reads and now could name an object we are about to delete.
        if not _unchanged(store, project_id, found, seen):
            raise StoreError(
                f"the channels of project {project_id} changed while gc ran; nothing was "
                "deleted: run it again"
            )
        for obj in old_enough:
            store.delete(obj.path)
            deleted.append(obj.path)
    return GcReport(
        project_id=project_id,
        store_url=store.url,
        dry_run=not delete,
        keep_history=keep_history,
        channels=found.names,
        kept=tuple(sorted(key for key in objects if key in named)),
        unreferenced=tuple(old_enough),
        too_recent=tuple(too_recent),
        ignored=tuple(ignored),
        deleted=tuple(deleted),
    )


def _check_required(
    store: ObjectStore, project_id: str, found: _Channels, required: list[str]
) -> None:
    """Raises: ConfigError: if a channel named on the command line has no pointer."""
    for channel in required:
        if channel not in found.pointers:
            raise ConfigError(
                f"channel {channel!r} has no pointer in {store.url} for project {project_id}; "
                "refusing to collect garbage (check --store and --project-id)"
            )


def _named_paths(
    store: ObjectStore,
    project_id: str,
    keys: list[TrustedKey],
    found: _Channels,
    seen: Mapping[str, tuple[bytes, Pointer]],
    keep_history: int,
) -> set[str]:
    """The object paths the pointers and each channel's last ``keep_history`` history entries
    name, every history entry verified.

    Raises:
        VerificationError: if a history entry does not verify or holds another sequence.
    """
    named: set[str] = set()
    for _, pointer in seen.values():
        named.update(release.object.path for release in pointer.all_releases())
    for channel, entries in found.histories.items():
        for sequence, key in entries[max(0, len(entries) - keep_history) :]:
            _, pointer = _verified(store, key, keys, project_id, channel, f"history entry {key}")
            if pointer.sequence != sequence:
                raise VerificationError(
                    f"history entry {key} in {store.url} holds sequence {pointer.sequence}; "
                    "refusing to collect garbage on inconsistent history"
                )
            named.update(release.object.path for release in pointer.all_releases())
    return named


def _list_channels(store: ObjectStore, project_id: str) -> _Channels:
    """Channel names from ``projects/{p}/channels/``, each key recognised by the wire layout."""
    root = posixpath.dirname(pointer_key(project_id, "x")) + "/"
    pointers: dict[str, str] = {}
    histories: dict[str, list[tuple[int, str]]] = {}
    for key in store.list(root):
        name = key[len(root) :].split("/", 1)[0].removesuffix(".json")
        if not CHANNEL_RE.match(name):
            continue
        if key == pointer_key(project_id, name):
            pointers[name] = key
            continue
        history = history_prefix(project_id, name)
        match = HISTORY_NAME_RE.match(key[len(history) :]) if key.startswith(history) else None
        if match is not None:
            histories.setdefault(name, []).append((int(match.group(1)), key))
    return _Channels(
        pointers=dict(sorted(pointers.items())),
        histories={name: sorted(entries) for name, entries in sorted(histories.items())},
    )


def _read_pointers(
    store: ObjectStore, project_id: str, keys: list[TrustedKey], found: _Channels
) -> dict[str, tuple[bytes, Pointer]]:
    """Each channel's pointer: the bytes read and the pointer verified from them."""
    return {
        key: _verified(store, key, keys, project_id, channel, f"the pointer of channel {channel!r}")
        for channel, key in found.pointers.items()
    }


def _unchanged(
    store: ObjectStore, project_id: str, found: _Channels, seen: Mapping[str, tuple[bytes, Pointer]]
) -> bool:
    """Whether the channel keys and every pointer's bytes are still what gc read."""
    if _list_channels(store, project_id) != found:
        return False
    for key, (data, _) in seen.items():
        try:
            if store.get(key, max_size=POINTER_MAX_SIZE).data != data:
                return False
        except NotFound:
            return False
    return True


def _verified(
    store: ObjectStore,
    key: str,
    keys: list[TrustedKey],
    project_id: str,
    channel: str,
    what: str,
) -> tuple[bytes, Pointer]:
    try:
        data = store.get(key, max_size=POINTER_MAX_SIZE).data
        return data, verify_pointer(data, keys, project_id=project_id, channel=channel)
    except NotFound as e:
        raise StoreError(
            f"{what} vanished from {store.url} while gc ran; nothing was deleted: run it again"
        ) from e
    except StoreError:
        raise
    except AnvilError as e:
        raise VerificationError(
            f"{what} in {store.url} does not verify with the trusted keys ({e}); refusing to "
            "collect garbage: nothing is deleted on unverified data"
        ) from e


def _describe(store: ObjectStore, key: str) -> GcObject:
    """Size and modification time of an object, from the store's own metadata."""
    if isinstance(store, FileStore):
        try:
            info = os.lstat(store.root / key)
        except FileNotFoundError:
            return GcObject(key, None, None)
        if not stat.S_ISREG(info.st_mode):
            return GcObject(key, None, None)
        return GcObject(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))
    bucket, prefix, client = (getattr(store, name, None) for name in ("bucket", "prefix", "client"))
    if isinstance(bucket, str) and isinstance(prefix, str) and client is not None:
        full = f"{prefix}/{key}" if prefix else key
        try:
            head = client.head_object(Bucket=bucket, Key=full)
        except Exception as e:  # botocore's errors, mapped where they enter
            raise StoreError(f"HEAD {key} in {store.url} failed: {e}") from e
        modified = head.get("LastModified")
        return GcObject(
            key,
            int(head.get("ContentLength", 0)),
            modified.astimezone(UTC) if isinstance(modified, datetime) else None,
        )
    return GcObject(key, None, None)  # unknown age: kept as too recent
