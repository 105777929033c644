"""How each publisher operation builds a channel's next entry list from the pointer just read.

    >>> draft = removing("production", "set-1", expires=None, keep_expiry=True)  # doctest: +SKIP
    >>> draft(latest).releases  # the list without set-1's entry  # doctest: +SKIP

A draft function is called once per compare-and-swap attempt, with the latest verified pointer
(None for a new channel), so a publisher that lost a race rebuilds its list on what the winner
wrote. Everything a draft reads or writes goes through one :class:`~publisher._entries.Entries`,
which caches it across attempts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from anvil_client.errors import ConfigError
from anvil_client.wire import RELEASE_NAME_MAX, RELEASES_MAX, ObjectRef, Pointer, Release, Rollout
from publisher._bundle import BuiltBundle
from publisher._entries import PENDING, Entries
from publisher._errors import NoRolloutInProgress, RemovalRefused

__all__ = [
    "Draft",
    "DraftFn",
    "aborting_rollout",
    "check_count",
    "check_name",
    "check_percent",
    "completing_rollout",
    "describe_list",
    "others_than",
    "promoting",
    "publishing",
    "reencrypting",
    "removing",
    "restoring",
    "setting_rollout",
    "sorted_releases",
]


@dataclass(frozen=True)
class Draft:
    """The next pointer's content: its entries, rollout and expiry."""

    releases: list[Release]
    rollout: Rollout | None
    expires_at: str | None
    entry: Release | None = None
    """The entry this operation is about, for the single-entry fields of the result."""


DraftFn = Callable[[Pointer | None], Draft]


# ------------------------------------------------------------------------- operations


def publishing(
    built: BuiltBundle,
    channel: str,
    entries: Entries,
    *,
    name: str | None,
    default_name: str,
    expires: str | None,
    percent: int | None,
) -> DraftFn:
    """Replace (or add) the entry of ``built``'s prompt set; with ``percent``, as a rollout."""
    stored: list[ObjectRef] = []  # the bundle's object once written: retries reuse it

    def draft(latest: Pointer | None) -> Draft:
        existing = None if latest is None else latest.entry(built.prompt_set_id)
        entry = Release(
            prompt_set_id=built.prompt_set_id,
            name=name if name is not None else (existing.name if existing else default_name),
            version=built.version,
            content_sha256=built.content_sha256,
            object=stored[0] if stored else PENDING,
        )
        others = others_than(latest, built.prompt_set_id)
        entries.check_clash(entry, others, channel)  # before anything is written
        check_count(channel, len(others) + 1)
        candidates = [] if latest is None else latest.all_releases()
        if not stored:
            stored.append(entries.store_new(entry, built.data, candidates).object)
        entry = entry.model_copy(update={"object": stored[0]})
        kept = [entries.conform(r, candidates) for r in others]
        rollout = None
        if percent is not None:
            rollout = _rollout_from(channel, latest, percent, entries, candidates)
        return Draft(sorted_releases([*kept, entry]), rollout, expires, entry)

    return draft


def removing(
    channel: str, prompt_set_id: str, *, expires: str | None, keep_expiry: bool
) -> DraftFn:
    """Drop one prompt set's entry; never the last one, never during a rollout."""

    def draft(latest: Pointer | None) -> Draft:
        assert latest is not None
        gone = latest.entry(prompt_set_id)
        if gone is None:
            raise RemovalRefused(
                "not_served",
                channel,
                f"channel {channel!r} serves no prompt set {prompt_set_id[:128]!r}; "
                f"it serves {describe_list(latest.releases)}",
            )
        if latest.rollout is not None:
            raise RemovalRefused(
                "rollout",
                channel,
                f"channel {channel!r} has a rollout in progress; complete or abort it "
                "before removing a prompt set",
                gone,
            )
        if len(latest.releases) == 1:
            raise RemovalRefused(
                "last",
                channel,
                f"{gone.describe()} is the only prompt set on {channel!r}; a channel never "
                "serves nothing, so its last entry cannot be removed (publish another set "
                "first)",
                gone,
            )
        kept = others_than(latest, prompt_set_id)
        return Draft(kept, None, latest.expires_at if keep_expiry else expires)

    return draft


def restoring(old: Pointer, entries: Entries, *, expires: str | None) -> DraftFn:
    """Serve the whole list of ``old`` (a history entry) again, conformed to the recipients."""

    def draft(latest: Pointer | None) -> Draft:
        candidates = [] if latest is None else latest.all_releases()
        restored = [entries.conform(r, candidates) for r in old.releases]
        return Draft(restored, None, expires, _only(restored))

    return draft


def promoting(
    source: Pointer,
    copied: Release | None,
    to_channel: str,
    entries: Entries,
    *,
    expires: str | None,
) -> DraftFn:
    """Serve ``source``'s whole list, or (with ``copied``) only add that entry to the list."""

    def draft(latest: Pointer | None) -> Draft:
        candidates = [*source.releases, *([] if latest is None else latest.all_releases())]
        if copied is None:
            listed = [entries.conform(r, candidates) for r in source.releases]
            return Draft(listed, None, expires, _only(listed))
        others = others_than(latest, copied.prompt_set_id)
        entries.check_clash(copied, others, to_channel)
        if entries.as_is:
            _check_same_recipients(entries, copied, others, to_channel)
        entry = entries.conform(copied, candidates)
        kept = [entries.conform(r, candidates) for r in others]
        return Draft(sorted_releases([*kept, entry]), None, expires, entry)

    return draft


def reencrypting(entries: Entries, *, expires: str | None, keep_expiry: bool) -> DraftFn:
    """Every entry, of both lists of a rollout, with a new object for the recipients."""

    def draft(latest: Pointer | None) -> Draft:
        assert latest is not None
        listed = [entries.conform(r) for r in latest.releases]
        rollout = None
        if latest.rollout is not None:
            previous = [entries.conform(r) for r in latest.rollout.previous]
            rollout = Rollout(percent=latest.rollout.percent, previous=previous)
        kept = latest.expires_at if keep_expiry else expires
        return Draft(listed, rollout, kept, _only(listed))

    return draft


def setting_rollout(channel: str, percent: int | None) -> DraftFn:
    """The same lists, the rollout in progress at ``percent``."""
    return _on_rollout(
        channel,
        lambda latest, rollout: (latest.releases, rollout.model_copy(update={"percent": percent})),
    )


def completing_rollout(channel: str) -> DraftFn:
    """The rolled-out list for every instance."""
    return _on_rollout(channel, lambda latest, _: (latest.releases, None))


def aborting_rollout(channel: str) -> DraftFn:
    """The rollout's ``previous`` list for every instance again."""
    return _on_rollout(channel, lambda _, rollout: (rollout.previous, None))


# ------------------------------------------------------------------------------ rules


def check_name(name: str | None) -> None:
    """Raises: ConfigError: if ``name`` is not a text of at most RELEASE_NAME_MAX characters."""
    if name is None:
        return
    if not isinstance(name, str) or len(name) > RELEASE_NAME_MAX:
        raise ConfigError(
            f"a prompt set name must be a text of at most {RELEASE_NAME_MAX} characters"
        )


def check_count(channel: str, count: int) -> None:
    """Raises: ConfigError: if ``count`` entries do not fit in one pointer."""
    if count > RELEASES_MAX:
        raise ConfigError(
            f"channel {channel!r} would serve {count} prompt sets; at most {RELEASES_MAX} fit "
            "in one pointer (remove a set first)"
        )


def check_percent(percent: int | None) -> int | None:
    """Raises: ConfigError: if ``percent`` is given and not an integer from 0 to 100."""
    if percent is None:
        return None
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ConfigError(f"rollout percent must be an integer from 0 to 100, got {percent!r}")
    return percent


def sorted_releases(releases: Iterable[Release]) -> list[Release]:
    """A pointer's entries in their one order: by prompt set id."""
    return sorted(releases, key=lambda r: r.prompt_set_id)


def others_than(latest: Pointer | None, prompt_set_id: str) -> list[Release]:
    """The entries of ``latest`` other than ``prompt_set_id``'s."""
    if latest is None:
        return []
    return [r for r in latest.releases if r.prompt_set_id != prompt_set_id]


def describe_list(releases: Iterable[Release]) -> str:
    return ", ".join(f"{r.describe()} ({r.prompt_set_id})" for r in releases)


def _only(releases: Sequence[Release]) -> Release | None:
    return releases[0] if len(releases) == 1 else None


def _settled(pointer: Pointer) -> list[Release]:
    """The list every instance had before ``pointer``'s unfinished rollout (or its list)."""
    if pointer.rollout is not None and pointer.rollout.percent < 100:
        return list(pointer.rollout.previous)
    return list(pointer.releases)


def _rollout_from(
    channel: str,
    latest: Pointer | None,
    percent: int,
    entries: Entries,
    candidates: Iterable[Release],
) -> Rollout:
    """A rollout to ``percent`` whose ``previous`` is the list everyone has now."""
    if latest is None:
        raise ConfigError(f"channel {channel!r} has no release to roll out from")
    previous = [entries.conform(r, candidates) for r in _settled(latest)]
    return Rollout(percent=percent, previous=previous)


def _check_same_recipients(
    entries: Entries, copied: Release, others: Iterable[Release], channel: str
) -> None:
    """Entries copied as they are must share the recipients of the target's other entries."""
    wanted = entries.recipients_of(copied)
    for other in others:
        if entries.recipients_of(other) != wanted:
            raise ConfigError(
                f"{other.describe()} on {channel!r} is encrypted for other recipients than "
                f"{copied.describe()}; every entry of a channel has the same recipients: give "
                "the recipients (--recipient) to re-encrypt them"
            )


def _on_rollout(
    channel: str,
    serve: Callable[[Pointer, Rollout], tuple[Sequence[Release], Rollout | None]],
) -> DraftFn:
    """A move of the rollout in progress: ``serve`` gives the new list and rollout."""

    def draft(latest: Pointer | None) -> Draft:
        if latest is None or latest.rollout is None:
            raise NoRolloutInProgress(channel)
        releases, rollout = serve(latest, latest.rollout)
        return Draft(list(releases), rollout, latest.expires_at, _only(releases))

    return draft
