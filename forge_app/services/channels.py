"""Channels: the defaults, their policies and who may publish, and what they serve (state,
history, plans' labels).

One part of the publishing services; :mod:`forge_app.services.publishing` gathers their API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from anvil_client.errors import (
    AnvilError,
)
from anvil_client.wire import (
    CHANNEL_RE,
    Pointer,
    Release,
    fetch_object,
    recipient_ids,
)
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, PromptSetVersion, Role, SetStatus, User
from forge_app.models.distribution import (
    DEFAULT_CHANNELS,
    Channel,
    Publication,
)
from forge_app.services.store import _explain, _publisher
from forge_app.services.tokens import active_tokens
from publisher import (
    HistoryEntry,
    Publisher,
    PublishResult,
    release_json,
)

_PRERELEASE_RE = re.compile(r"^(\d+\.\d+\.\d+)-(rc|dev)\.(\d+)$")


# ------------------------------------------------------------------------------ channels


def ensure_default_channels(project: Project) -> None:
    """Create the project's missing default channels and commit them; call it at the start of
    a request, before any other change (a concurrent request creating them too is fine)."""
    have = set(db.session.scalars(select(Channel.name).where(Channel.project_id == project.id)))
    missing = [name for name in DEFAULT_CHANNELS if name not in have]
    if not missing:
        return
    for name in missing:
        db.session.add(Channel(project_id=project.id, name=name, policy=DEFAULT_CHANNELS[name]))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # another request created them first


def project_channels(project: Project) -> list[Channel]:
    """The project's channels: the defaults first (production, staging, development)."""
    channels = list(db.session.scalars(select(Channel).where(Channel.project_id == project.id)))
    order = list(DEFAULT_CHANNELS)
    return sorted(
        channels, key=lambda c: (order.index(c.name) if c.name in order else len(order), c.name)
    )


def get_channel(project: Project, name: str) -> Channel | None:
    if not isinstance(name, str) or not CHANNEL_RE.match(name):
        return None
    return db.session.scalar(
        select(Channel).where(Channel.project_id == project.id, Channel.name == name)
    )


def version_status(version: PromptSetVersion) -> str:
    """The status a version's content had: ``-rc.N`` REVIEW, ``-dev.N`` LIVE, else LOCKED."""
    match = _PRERELEASE_RE.match(version.version)
    if match is None:
        return SetStatus.REVIEW.value if version.is_prerelease else SetStatus.LOCKED.value
    return SetStatus.REVIEW.value if match.group(2) == "rc" else SetStatus.LIVE.value


def check_policy(channel: Channel, status: str) -> None:
    """Raises: ForgeError (403): if ``channel`` does not accept ``status`` (DESIGN §1)."""
    if status not in channel.accepts:
        accepted = " or ".join(channel.accepts)
        raise ForgeError(
            f"Channel {channel.name} accepts only {accepted} prompt sets; this one is {status}.",
            kind=Kind.FORBIDDEN,
        )


def required_role(channel: Channel) -> Role:
    """Owners publish to channels that take LOCKED sets only; reviewers to the others."""
    return Role.OWNER if channel.policy == "locked" else Role.REVIEWER


def can_publish(role: Role | None, channel: Channel) -> bool:
    return role is not None and role >= required_role(channel)


def _check_role(role: Role | None, channel: Channel, action: str) -> None:
    needed = required_role(channel)
    if role is None or role < needed:
        raise ForgeError(
            f"Only members with the {needed.label} role can {action} channel {channel.name}.",
            kind=Kind.FORBIDDEN,
        )


# ------------------------------------------------------------------------ reading channels


def current_release(channel: Channel) -> Pointer | None:
    """The channel's verified pointer, or None when nothing is published.

    Raises:
        ForgeError: if the store fails or the pointer does not verify.
    """
    with _publisher(channel.project, "read") as pub:
        try:
            return pub.current(channel.name)
        except AnvilError as e:
            raise _explain(e, "read") from e


@dataclass(frozen=True)
class ChannelEntry:
    """One prompt set a channel serves, for its page: who put this content there, and when
    (None when it was published outside the FORGE)."""

    release: Release
    name: str
    status: str
    prompt_set: PromptSet | None
    publication: Publication | None

    @property
    def published_by(self) -> User | None:
        return self.publication.published_by if self.publication else None

    @property
    def published_at(self) -> datetime | None:
        return self.publication.published_at if self.publication else None


@dataclass
class ChannelState:
    """What a channel serves now, for its page."""

    pointer: Pointer | None
    error: str | None = None
    stale_recipients: bool = False
    entries: list[ChannelEntry] = field(default_factory=list)
    previous: list[ChannelEntry] = field(default_factory=list)


def _status_of_version(text: str) -> str:
    match = _PRERELEASE_RE.match(text)
    if match is None:
        return SetStatus.REVIEW.value if "-" in text else SetStatus.LOCKED.value
    return SetStatus.REVIEW.value if match.group(2) == "rc" else SetStatus.LIVE.value


def _entries(
    channel: Channel, releases: Sequence[Release], publications: Sequence[Publication]
) -> list[ChannelEntry]:
    """``releases`` with the FORGE's set and the publication that put each content there:
    the oldest of the unbroken run of newest publications whose list has that content."""
    sets = {
        str(s.id): s
        for s in db.session.scalars(
            select(PromptSet).where(PromptSet.project_id == channel.project_id)
        )
    }
    entries = []
    for release in releases:
        origin: Publication | None = None
        for publication in publications:  # newest first
            lists = [publication.releases, publication.previous_releases or []]
            if any(
                e.get("prompt_set_id") == release.prompt_set_id
                and e.get("content_sha256") == release.content_sha256
                for entries_list in lists
                for e in entries_list
            ):
                origin = publication
            else:
                break
        prompt_set = sets.get(release.prompt_set_id)
        entries.append(
            ChannelEntry(
                release=release,
                name=prompt_set.name if prompt_set else _label(release),
                status=_status_of_version(release.version),
                prompt_set=prompt_set,
                publication=origin,
            )
        )
    return entries


def channel_state(channel: Channel) -> ChannelState:
    """The channel's pointer, the sets it serves, and whether its recipients differ from the
    active tokens."""
    project = channel.project
    wanted = {t.token_id for t in active_tokens(project.id)}
    try:
        with _publisher(project, "read") as pub:
            pointer = pub.current(channel.name)
            stale = pointer is not None and _needs_reencryption(pub, pointer, wanted, every=False)
    except ForgeError as e:
        return ChannelState(None, str(e))
    except AnvilError as e:
        return ChannelState(None, str(_explain(e, "read")))
    if pointer is None:
        return ChannelState(None, None, False)
    publications = list(
        db.session.scalars(
            select(Publication)
            .where(Publication.channel_id == channel.id, Publication.sequence <= pointer.sequence)
            .order_by(Publication.sequence.desc())
            .limit(200)
        )
    )
    return ChannelState(
        pointer,
        None,
        stale,
        _entries(channel, pointer.releases, publications),
        _entries(channel, pointer.rollout.previous, publications) if pointer.rollout else [],
    )


@dataclass
class HistoryRow:
    """One history entry of a channel, with who published it when the FORGE did."""

    sequence: int
    entry: HistoryEntry | None
    publication: Publication | None
    changes: str = ""
    names: dict[str, str] = field(default_factory=dict)

    @property
    def releases(self) -> list[dict[str, Any]]:
        """The entries served after this move, as ``{name, version, ...}`` dicts."""
        if self.entry is not None and self.entry.pointer is not None:
            return [entry_json(r) for r in self.entry.pointer.releases]
        return self.publication.releases if self.publication else []

    @property
    def served(self) -> str:
        return ", ".join(f"{_label(e, self.names)} {e.get('version')}" for e in self.releases)

    @property
    def summary(self) -> str:
        """What changed: the FORGE's own wording, else computed from the history."""
        if self.publication is not None and self.publication.summary:
            return self.publication.summary
        return self.changes


def channel_history(channel: Channel, *, limit: int = 100) -> tuple[list[HistoryRow], str | None]:
    """The channel's history, newest first: store history entries merged with the FORGE's
    Publication rows (so entries written by CI show too). Returns ``(rows, error)``."""
    publications = {
        p.sequence: p
        for p in db.session.scalars(select(Publication).where(Publication.channel_id == channel.id))
    }
    error = None
    entries: dict[int, HistoryEntry] = {}
    try:
        with _publisher(channel.project, "read") as pub:
            for entry in pub.history(channel.name):
                entries[entry.sequence] = entry
    except ForgeError as e:
        error = str(e)
    except AnvilError as e:
        error = str(_explain(e, "read"))
    rows: list[HistoryRow] = []
    before: list[Release] | None = None
    names = _set_names(channel.project)
    for sequence in sorted(set(entries) | set(publications)):
        found = entries.get(sequence)
        pointer = found.pointer if found is not None else None
        changes = ""
        if pointer is not None:
            changes = "; ".join(release_changes(before, pointer.releases, names))
            before = list(pointer.releases)
        rows.append(HistoryRow(sequence, found, publications.get(sequence), changes, names))
    rows.reverse()
    return rows[:limit], error


def latest_publication(channel: Channel) -> Publication | None:
    return db.session.scalar(
        select(Publication)
        .where(Publication.channel_id == channel.id)
        .order_by(Publication.sequence.desc())
        .limit(1)
    )


def entry_json(release: Release) -> dict[str, Any]:
    """An entry as the Publication rows keep it (``Publication.releases``): the publisher's
    ``--json`` form without the object's encoding."""
    entry = release_json(release)
    del entry["encoding"]
    return entry


def _label(entry: Release | dict[str, Any], names: dict[str, str] | None = None) -> str:
    """An entry's display name: its own, else the FORGE's name of its set, else its id."""
    if isinstance(entry, Release):
        set_id, name = entry.prompt_set_id, entry.name
    else:
        set_id, name = str(entry.get("prompt_set_id") or "?"), str(entry.get("name") or "")
    return name or (names or {}).get(set_id) or set_id


def release_changes(
    before: Sequence[Release] | None,
    after: Sequence[Release],
    names: dict[str, str] | None = None,
) -> list[str]:
    """What changed between two entry lists, per set: new versions first, then added sets,
    then removed ones, each in list order: ``Support bot 0.2.0 → 0.3.0``, ``Checkout helper
    added``, ``Onboarding removed`` (the publisher's wording). Entries with the same content
    (only re-encrypted) are not mentioned."""
    old = {r.prompt_set_id: r for r in before or ()}
    updated: list[str] = []
    added: list[str] = []
    for release in after:
        was = old.pop(release.prompt_set_id, None)
        if was is None:
            added.append(f"{_label(release, names)} added")
        elif was.content_sha256 != release.content_sha256:
            updated.append(f"{_label(release, names)} {was.version} → {release.version}")
    return [*updated, *added, *(f"{_label(r, names)} removed" for r in old.values())]


def _set_names(project: Project) -> dict[str, str]:
    """The FORGE's current names of the project's sets, by their pointer id (UUID text)."""
    rows = db.session.execute(
        select(PromptSet.id, PromptSet.name).where(PromptSet.project_id == project.id)
    ).all()
    return {str(set_id): name for set_id, name in rows}


def served_labels(releases: Iterable[Release], names: dict[str, str] | None = None) -> list[str]:
    """What the entries serve, one ``"<set name> <version>"`` each (as audit details show)."""
    return [f"{_label(r, names)} {r.version}" for r in releases]


def pointer_details(result: PublishResult, names: dict[str, str] | None = None) -> dict[str, Any]:
    """The audit details of a pointer write: its new sequence and what it serves."""
    return {"sequence": result.sequence, "releases": served_labels(result.pointer.releases, names)}


def _served(releases: Iterable[Release], names: dict[str, str] | None = None) -> str:
    return ", ".join(served_labels(releases, names))


def _recipients_of(pub: Publisher, release: Release) -> set[str] | None:
    """The token ids that can read an entry's object (None for a plaintext object)."""
    if release.object.encoding == "json":
        return None
    return set(recipient_ids(fetch_object(pub.store, release)))


def _needs_reencryption(
    pub: Publisher, pointer: Pointer, wanted: set[str], *, every: bool = True
) -> bool:
    """Whether an entry's object is not encrypted for exactly ``wanted``. Publishers keep every
    entry of a pointer encrypted for the same recipients (DESIGN §4), so a page may look at the
    first entry only (``every=False``); re-encryption itself checks them all."""
    releases = pointer.all_releases()
    for release in releases if every else releases[:1]:
        readers = _recipients_of(pub, release)
        if readers is not None and readers != wanted:
            return True
    return False
