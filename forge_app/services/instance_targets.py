"""Which entry lists each channel tells its LIVE instances to serve (for the instances pages).

A channel's current target is its signed store pointer, else the FORGE's newest Publication
record. A publication's target is the FORGE's record; a rollout recorded without its previous
list falls back to the signed history copy, verified with the FORGE's key by
:func:`anvil_client.wire.verify_pointer` and remembered per process in a small LRU cache. The
cache is correct with any number of gunicorn workers: a history entry (store, project, channel,
sequence) is written once and never changes, so each worker may remember its own copy.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from flask import current_app
from sqlalchemy import func, select

from anvil_client.errors import AnvilError
from anvil_client.wire import (
    POINTER_MAX_SIZE,
    Pointer,
    TrustedKey,
    history_key,
    key_id,
    verify_pointer,
)
from forge_app.extensions import db
from forge_app.models import Project
from forge_app.models.distribution import Channel, Publication
from forge_app.services.instances import ChannelTarget

__all__ = ["channel_targets", "target_of_publication"]

log = logging.getLogger("forge.instances")


class _HistoryCache:
    """Verified history pointers by (store, project, channel, sequence): they never change."""

    def __init__(self, size: int = 512) -> None:
        self._items: OrderedDict[tuple[str, str, str, int], Pointer] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str, int]) -> Pointer | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str, str, int], pointer: Pointer) -> None:
        with self._lock:
            self._items[key] = pointer
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_history = _HistoryCache()


def _history_pointer(project: Project, channel: str, sequence: int) -> Pointer | None:
    """The signed history copy of ``sequence``, verified with the FORGE's key by
    :func:`anvil_client.wire.verify_pointer` (None if it cannot be read or verified)."""
    from forge_app.services.publishing import forge_signing_key, forge_store

    store_url = str(current_app.config["FORGE_STORE_URL"])
    cache_key = (store_url, str(project.id), channel, sequence)
    cached = _history.get(cache_key)
    if cached is not None:
        return cached
    path = history_key(str(project.id), channel, sequence)
    try:
        public = forge_signing_key().public_key()
        store = forge_store()
        try:
            data = store.get(path, max_size=POINTER_MAX_SIZE).data
        finally:
            store.close()
        pointer = verify_pointer(
            data,
            [TrustedKey(key_id(public), public)],
            project_id=str(project.id),
            channel=channel,
        )
    except AnvilError as e:
        log.warning("cannot read history entry %s: %s", path, e)
        return None
    if pointer.sequence != sequence:
        log.warning("history entry %s holds another pointer", path)
        return None
    _history.put(cache_key, pointer)
    return pointer


def target_of_publication(
    project: Project, channel: str, publication: Publication
) -> ChannelTarget:
    """What ``publication`` told instances to serve: the FORGE's record of the whole list
    (and of a rollout's previous list); when the record lacks the previous list, the signed
    history copy."""
    previous = publication.previous_releases
    if publication.rollout_percent is not None and previous is None:
        pointer = _history_pointer(project, channel, publication.sequence)
        if pointer is not None:
            return ChannelTarget.from_pointer(pointer)
    return ChannelTarget.from_records(
        channel,
        publication.sequence,
        publication.releases,
        rollout_percent=publication.rollout_percent,
        previous=previous if publication.rollout_percent is not None else None,
    )


def _latest_publications(project: Project) -> dict[str, Publication]:
    """The newest Publication of each of the project's channels, by channel name."""
    newest = (
        select(Publication.channel_id, func.max(Publication.sequence).label("sequence"))
        .where(Publication.project_id == project.id)
        .group_by(Publication.channel_id)
        .subquery()
    )
    rows = db.session.execute(
        select(Channel.name, Publication)
        .join(Publication, Publication.channel_id == Channel.id)
        .join(
            newest,
            (newest.c.channel_id == Publication.channel_id)
            & (newest.c.sequence == Publication.sequence),
        )
        .where(Channel.project_id == project.id)
    ).all()
    return {row[0]: row[1] for row in rows}


def channel_targets(
    project: Project, channels: set[str]
) -> tuple[dict[str, ChannelTarget], list[str]]:
    """The current entry lists of each channel (from the store's signed pointer, else the
    FORGE's records), and one sentence per channel whose store pointer could not be read."""
    from forge_app.errors import ForgeError
    from forge_app.services.publishing import current_release

    targets: dict[str, ChannelTarget] = {}
    problems: list[str] = []
    if not channels:
        return targets, problems
    # All of the project's channels (a few, made by owners), not an IN list of the names
    # instances report (any number of made-up ones).
    known = {
        channel.name: channel
        for channel in db.session.scalars(select(Channel).where(Channel.project_id == project.id))
        if channel.name in channels
    }
    latest = _latest_publications(project) if known else {}
    for name in sorted(known):
        pointer: Pointer | None = None
        try:
            pointer = current_release(known[name])
        except ForgeError as e:
            problems.append(f"Channel {name}: {e}")
        if pointer is not None:
            targets[name] = ChannelTarget.from_pointer(pointer)
        elif name in latest:
            targets[name] = target_of_publication(project, name, latest[name])
    return targets, problems
