"""What a publisher operation returns: the result of a channel move, and one history copy.

    >>> result = publisher.publish(bundle, "staging", plaintext=True)  # doctest: +SKIP
    >>> result.changes  # doctest: +SKIP
    ('Support bot 1.0.0 → 1.1.0',)

``to_json`` gives the objects ``anvil-publish … --json`` prints; ``describe_changes`` words how
one entry list differs from the one before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from anvil_client.wire import Pointer, Release, Rollout, served_version
from publisher._entries import Entries

__all__ = [
    "HistoryEntry",
    "PublishResult",
    "describe_changes",
    "publish_result",
    "release_json",
]


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


def publish_result(
    *,
    project_id: str,
    pointer: Pointer,
    envelope: bytes,
    etag: str | None,
    entry: Release | None,
    before: Pointer | None,
    entries: Entries,
    attempts: int,
) -> PublishResult:
    """The result of writing ``pointer`` over ``before``; ``entry`` is the one it is about."""
    ref = None if entry is None else entry.object
    stored = None if ref is None else entries.stored.get(ref.path)
    return PublishResult(
        project_id=project_id,
        channel=pointer.channel,
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


def describe_changes(before: Pointer | None, after: Pointer) -> tuple[str, ...]:
    """Sentences saying how ``after``'s list differs from ``before``'s: ``Support bot 0.2.0 →
    0.3.0``, ``Checkout helper added``, ``Checkout helper removed``, …"""
    old = {} if before is None else {r.prompt_set_id: r for r in before.releases}
    new = {r.prompt_set_id: r for r in after.releases}
    changes: list[str] = []
    for release in after.releases:
        was = old.get(release.prompt_set_id)
        if was is None:
            changes.append(f"{release.name or release.prompt_set_id} added")
        else:
            changes += _entry_changes(was, release)
    for release in before.releases if before is not None else []:
        if release.prompt_set_id not in new:
            changes.append(f"{release.name or release.prompt_set_id} removed")
    rollout = _rollout_change(None if before is None else before.rollout, after.rollout)
    return tuple(changes if rollout is None else [*changes, rollout])


def _entry_changes(was: Release, release: Release) -> list[str]:
    """How one prompt set's entry changed: renamed, new version, new content, re-encrypted."""
    label = release.name or release.prompt_set_id
    changes = []
    if was.name != release.name:
        changes.append(f"{was.name or was.prompt_set_id} renamed to {label}")
    if was.version != release.version:
        changes.append(f"{label} {was.version} → {release.version}")
    elif was.content_sha256 != release.content_sha256:
        changes.append(f"{label} {release.version} has new content")
    elif was.object != release.object:
        changes.append(f"{label} {release.version} re-encrypted")
    return changes


def _rollout_change(was: Rollout | None, now: Rollout | None) -> str | None:
    if now is not None:
        if was is None or was.previous != now.previous:
            return f"rollout started at {now.percent}%"
        if was.percent != now.percent:
            return f"rollout {was.percent}% → {now.percent}%"
        return None
    return None if was is None else "rollout ended"
