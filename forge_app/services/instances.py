"""LIVE instances out: "what does each instance serve, and should it?" (archiving and
forgetting silent ones: :mod:`forge_app.services.instance_archive`).

The instances page and the publish status page ask :func:`describe_instances` which entry list
each instance should serve — its channel's ``releases``, or ``rollout.previous`` outside the
rollout bucket, exactly as :func:`anvil_client.wire.select_releases` picks — whether it does, and
whether it went silent. Heartbeats come in through :mod:`forge_app.services.heartbeats`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from anvil_client.wire import (
    Pointer,
    in_rollout,
    rollout_key,
)
from forge_app.models import utcnow
from forge_app.models.instances import LiveInstance

__all__ = [
    "DEFAULT_STALE_SECONDS",
    "ChannelTarget",
    "Entry",
    "InstanceView",
    "describe_instances",
    "label_entries",
    "publication_state",
    "summarise",
]

#: An instance not heard from for this long is shown as stale (FORGE_INSTANCE_STALE_SECONDS).
#: Clients report every 300 s by default, so 15 minutes is three missed heartbeats.
DEFAULT_STALE_SECONDS = 15 * 60


@dataclass(frozen=True)
class Entry:
    """One entry of an entry list (``name`` is the prompt set's name when known)."""

    prompt_set_id: str
    version: str
    content_sha256: str
    name: str = ""

    def label(self, names: Mapping[str, str] | None = None) -> str:
        name = self.name or (names or {}).get(self.prompt_set_id) or self.prompt_set_id[:8]
        return f"{name} {self.version}"

    def to_json(self, names: Mapping[str, str] | None = None) -> dict[str, str]:
        return {
            "prompt_set_id": self.prompt_set_id,
            "name": self.name or (names or {}).get(self.prompt_set_id, ""),
            "version": self.version,
            "content_sha256": self.content_sha256,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        return cls(
            prompt_set_id=str(data.get("prompt_set_id", "")),
            version=str(data.get("version", "")),
            content_sha256=str(data.get("content_sha256", "")),
            name=str(data.get("name") or ""),
        )


def label_entries(entries: Sequence[Entry] | None, names: Mapping[str, str] | None = None) -> str:
    """``Support bot 1.2.3, Checkout helper 0.4.0`` (empty for no entries)."""
    return ", ".join(entry.label(names) for entry in entries or ())


def _served_key(entries: Iterable[Entry]) -> frozenset[tuple[str, str]]:
    return frozenset((e.prompt_set_id, e.content_sha256) for e in entries)


@dataclass(frozen=True)
class ChannelTarget:
    """The entry lists a channel's pointer at ``sequence`` tells instances to serve.

    Without a rollout every instance serves ``releases``; with one, an instance inside the
    rollout bucket (DESIGN §4, key :func:`~anvil_client.wire.rollout_key` of ``releases``)
    serves them and the others ``previous`` — :func:`anvil_client.wire.select_releases`'s
    rule. ``previous`` is None when unknown.
    """

    channel: str
    sequence: int
    releases: tuple[Entry, ...]
    rollout_percent: int | None = None
    previous: tuple[Entry, ...] | None = None

    @classmethod
    def from_pointer(cls, pointer: Pointer) -> ChannelTarget:
        def entries(releases: Iterable[Any]) -> tuple[Entry, ...]:
            return tuple(
                Entry(r.prompt_set_id, r.version, r.content_sha256, r.name) for r in releases
            )

        rollout = pointer.rollout
        return cls(
            channel=pointer.channel,
            sequence=pointer.sequence,
            releases=entries(pointer.releases),
            rollout_percent=rollout.percent if rollout is not None else None,
            previous=entries(rollout.previous) if rollout is not None else None,
        )

    @classmethod
    def from_records(
        cls,
        channel: str,
        sequence: int,
        releases: Sequence[Mapping[str, Any]],
        *,
        rollout_percent: int | None = None,
        previous: Sequence[Mapping[str, Any]] | None = None,
    ) -> ChannelTarget:
        return cls(
            channel=channel,
            sequence=sequence,
            releases=tuple(Entry.from_json(e) for e in releases),
            rollout_percent=rollout_percent,
            previous=None if previous is None else tuple(Entry.from_json(e) for e in previous),
        )

    def in_rollout(self, instance_id: str) -> bool:
        percent = self.rollout_percent
        return percent is None or in_rollout(instance_id, rollout_key(self.releases), percent)

    def expected_for(self, instance_id: str) -> tuple[Entry, ...] | None:
        """The entries ``instance_id`` should serve (None if unknown)."""
        return self.releases if self.in_rollout(instance_id) else self.previous

    def names(self) -> dict[str, str]:
        found = {e.prompt_set_id: e.name for e in self.previous or () if e.name}
        found.update({e.prompt_set_id: e.name for e in self.releases if e.name})
        return found


State = Literal["applied", "pending", "error", "superseded"]


def served_entries(instance: LiveInstance) -> tuple[Entry, ...]:
    return tuple(Entry.from_json(e) for e in instance.releases)


@dataclass(frozen=True)
class InstanceView:
    """One instance as the FORGE shows it, judged against its channel's entry lists."""

    instance: LiveInstance
    stale: bool
    revoked: bool
    served: tuple[Entry, ...]
    expected: tuple[Entry, ...] | None
    drift: bool
    behind: bool
    names: Mapping[str, str] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.revoked:
            found.append("revoked")
        if self.stale:
            found.append("stale")
        if self.drift:
            found.append("drift")
        if self.instance.last_error:
            found.append("error")
        return found

    @property
    def serving(self) -> list[dict[str, str]]:
        """``[{prompt_set_id, name, version, content_sha256}]`` for the page."""
        return [entry.to_json(self.names) for entry in self.served]

    @property
    def version(self) -> str:
        return label_entries(self.served, self.names)

    @property
    def expected_version(self) -> str | None:
        return label_entries(self.expected, self.names) if self.expected else None

    @property
    def drift_note(self) -> str:
        """What differs: the entries it should serve but does not, and the ones it should
        not serve."""
        expected = self.expected or ()
        served = _served_key(self.served)
        missing = [e for e in expected if (e.prompt_set_id, e.content_sha256) not in served]
        wanted = {e.prompt_set_id for e in expected}
        extra = [e for e in self.served if e.prompt_set_id not in wanted]
        parts = []
        if missing:
            parts.append(f"should serve {label_entries(missing, self.names)}")
        if extra:
            parts.append(f"should not serve {label_entries(extra, self.names)}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        instance = self.instance
        return {
            "instance_id": instance.instance_id,
            "hostname": instance.hostname,
            "channel": instance.channel,
            "mode": instance.mode,
            "sequence": instance.sequence,
            "releases": self.serving,
            "version": self.version or None,
            "last_error": instance.last_error,
            "client_version": instance.client_version,
            "first_seen_at": _iso(instance.first_seen_at),
            "last_seen_at": _iso(instance.last_seen_at),
            "token_id": instance.token_id,
            "archived": instance.archived_at is not None,
            "stale": self.stale,
            "revoked": self.revoked,
            "drift": self.drift,
            "behind": self.behind,
            "expected": [e.to_json(self.names) for e in self.expected or ()],
            "expected_version": self.expected_version,
        }


def describe_instances(
    instances: Iterable[LiveInstance],
    *,
    targets: Mapping[str, ChannelTarget],
    revoked_tokens: set[str],
    stale_after: timedelta,
    names: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[InstanceView]:
    """Judge each instance against its channel's entry lists (``targets`` by channel).

    Drift compares whole lists: an instance drifts when the set of entries it serves differs
    from the list its channel gives it (its rollout bucket's).
    """
    now = now or utcnow()
    all_names: dict[str, str] = {}
    for known in targets.values():
        all_names.update(known.names())
    all_names.update(names or {})
    views = []
    for instance in instances:
        target = targets.get(instance.channel)
        expected = target.expected_for(instance.instance_id) if target is not None else None
        served = served_entries(instance)
        drift = expected is not None and _served_key(served) != _served_key(expected)
        behind = (
            target is not None
            and not drift
            and (instance.sequence is None or instance.sequence < target.sequence)
        )
        views.append(
            InstanceView(
                instance=instance,
                stale=now - instance.last_seen_at > stale_after,
                revoked=instance.token_id in revoked_tokens
                or instance.token_rejected_at is not None,
                served=served,
                expected=expected,
                drift=drift,
                behind=behind,
                names=all_names,
            )
        )
    return views


def publication_state(view: InstanceView, target: ChannelTarget) -> tuple[State, str | None]:
    """Whether ``view``'s instance applied the publication ``target``, and a short note.

    Applied: it accepted a pointer at least as new and serves the whole entry list meant for
    it (its rollout bucket's). Superseded: it moved on to a newer publication with other
    entries. Error: it accepted this very pointer but serves another list than its bucket's,
    or it has not applied it and reports an error (its message is the note). Pending otherwise.
    """
    instance = view.instance
    expected = target.expected_for(instance.instance_id)
    names = view.names
    sequence = instance.sequence if instance.sequence is not None else -1
    if sequence >= target.sequence:
        if expected is None or _served_key(view.served) == _served_key(expected):
            return "applied", None
        if sequence > target.sequence:
            return "superseded", (
                f"now on sequence {sequence} ({label_entries(view.served, names) or 'nothing'})"
            )
        return "error", (
            f"serves {label_entries(view.served, names) or 'nothing'} where this publication "
            f"gives it {label_entries(expected, names) or 'nothing'}"
        )
    if instance.last_error:
        return "error", instance.last_error
    if view.revoked:
        return "error", "its ACCESS_TOKEN was revoked"
    if view.stale:
        return "pending", "silent: no heartbeat for a while"
    if expected:
        return "pending", f"waiting for {label_entries(expected, names)}"
    return "pending", None


def summarise(states: Sequence[str]) -> dict[str, int]:
    counts = {"applied": 0, "pending": 0, "error": 0, "superseded": 0}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    counts["total"] = len(states)
    return counts


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")
