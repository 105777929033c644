"""Changing what a channel serves without a new version: remove a set, roll back, and
gradual rollouts.

One part of the publishing services; :mod:`forge_app.services.publishing` gathers their API.
"""

from __future__ import annotations

from collections.abc import Callable

import publisher
from anvil_client.errors import (
    AnvilError,
    ConfigError,
    NotFound,
)
from anvil_client.wire import (
    POINTER_MAX_SIZE,
    Pointer,
    TrustedKey,
    history_key,
    verify_pointer,
)
from forge_app.errors import ForgeError, Kind, NoRolloutInProgress
from forge_app.models import (
    Role,
    User,
)
from forge_app.models.distribution import (
    Channel,
    Publication,
)
from forge_app.services.bundles import _bundle_source, _require_keks
from forge_app.services.channels import (
    _check_role,
    _served,
    _set_names,
    pointer_details,
    release_changes,
)
from forge_app.services.publish import _audit, _record, _summary
from forge_app.services.store import _explain, _publisher, forge_signing_key
from publisher import (
    Publisher,
    PublishResult,
)

# ------------------------------------------------------------------ remove and rollback


def remove_from_channel(
    channel: Channel, prompt_set_id: str, *, user: User, role: Role | None = None
) -> Publication:
    """Stop serving one prompt set on ``channel``: a new sequence without its entry; the other
    sets stay as they are. Owners only.

    Raises:
        ForgeError: for a role other than owner, a set the channel does not serve, the only
            set of the channel, a rollout in progress, or a store failure.
    """
    project = channel.project
    if role is not None and role < Role.OWNER:
        raise ForgeError(
            f"Only members with the owner role can remove prompt sets from {channel.name}.",
            kind=Kind.FORBIDDEN,
        )
    with _publisher(project, "removed") as pub:
        try:
            pointer = pub.current(channel.name)
            entry = pointer.entry(prompt_set_id) if pointer is not None else None
            if pointer is None or entry is None:
                raise _not_served(channel)
            result = pub.remove(channel.name, prompt_set_id)
        except publisher.RemovalRefused as e:
            raise _removal_refused(channel, e) from e
        except ConfigError as e:
            raise ForgeError(f"Nothing was removed: {e}.") from e
        except AnvilError as e:
            raise _explain(e, "removed") from e
    summary = _summary(result, f"{entry.name or prompt_set_id} removed")
    publication = _record(project, channel, result, kind="remove", user=user, summary=summary)
    _audit(
        "channel.remove_set",
        channel,
        project,
        user,
        prompt_set=entry.name,
        prompt_set_id=prompt_set_id,
        version=entry.version,
        sequence=result.sequence,
        changes=summary,
    )
    return publication


def _removal_refused(channel: Channel, refused: publisher.RemovalRefused) -> ForgeError:
    """The FORGE's sentence for a removal the publisher refused (it re-checks on the pointer
    it swaps against, so a rollout started meanwhile is caught too)."""
    if refused.reason == "rollout":
        return ForgeError(
            f"Channel {channel.name} has a rollout in progress; complete or abort it "
            "before removing a prompt set."
        )
    if refused.reason == "last" and refused.entry is not None:
        return ForgeError(
            f"{refused.entry.describe()} is the only prompt set on {channel.name}, and a "
            "channel always serves at least one; publish another set first."
        )
    return _not_served(channel)


def _not_served(channel: Channel) -> ForgeError:
    return ForgeError(
        f"Channel {channel.name} does not serve that prompt set.", kind=Kind.NOT_FOUND
    )


def history_pointer(channel: Channel, sequence: int) -> Pointer:
    """History entry ``sequence`` of ``channel``, verified like any pointer.

    Raises:
        ForgeError: (404) for an unknown entry, else for a store or verification failure.
    """
    with _publisher(channel.project, "read") as pub:
        return _history_entry(pub, channel, sequence)


def _history_entry(pub: Publisher, channel: Channel, sequence: int) -> Pointer:
    try:
        got = pub.store.get(
            history_key(pub.project_id, channel.name, sequence), max_size=POINTER_MAX_SIZE
        )
        pointer = verify_pointer(
            got.data,
            [TrustedKey(keyid=pub.keyid, key=forge_signing_key().public_key())],
            project_id=pub.project_id,
            channel=channel.name,
        )
    except NotFound as e:
        raise _no_entry(channel, sequence) from e
    except AnvilError as e:
        raise _explain(e, "rolled back") from e
    if pointer.sequence != sequence:
        raise ForgeError(
            f"History entry {sequence} of {channel.name} holds another pointer.",
            kind=Kind.NOT_FOUND,
        )
    return pointer


def _no_entry(channel: Channel, sequence: int) -> ForgeError:
    return ForgeError(
        f"Channel {channel.name} has no history entry {sequence} to roll back to.",
        kind=Kind.NOT_FOUND,
    )


def rollback_to(
    channel: Channel, sequence: int, *, user: User | None, role: Role | None = None
) -> Publication:
    """Serve the whole list of history entry ``sequence`` again, as a new sequence,
    re-encrypted for the current tokens (DESIGN §5).

    Raises:
        ForgeError: for an unknown entry, a role too low, or a store failure.
    """
    project = channel.project
    if role is not None:
        _check_role(role, channel, "roll back")
    keks = _require_keks(project)
    with _publisher(project, "rolled back") as pub:
        entry = _history_entry(pub, channel, sequence)
        try:
            before = pub.current(channel.name)
            result = pub.rollback(
                channel.name,
                to_sequence=sequence,
                recipients=keks,
                bundle_source=_bundle_source(project, pub, entry.all_releases()),
            )
        except NotFound as e:
            raise _no_entry(channel, sequence) from e
        except AnvilError as e:
            raise _explain(e, "rolled back") from e
    names = _set_names(project)
    changes = release_changes(before.releases if before else None, result.pointer.releases, names)
    summary = f"Rolled back to sequence {sequence}" + (
        f": {'; '.join(changes)}" if changes else " (same content)"
    )
    publication = _record(project, channel, result, kind="rollback", user=user, summary=summary)
    _audit(
        "channel.rollback",
        channel,
        project,
        user,
        to_sequence=sequence,
        **pointer_details(result, names),
        changes=summary,
    )
    return publication


def _rollout_move(
    channel: Channel,
    *,
    user: User | None,
    role: Role | None,
    action: str,
    move: Callable[[Publisher], PublishResult],
    summary: Callable[[PublishResult], str],
) -> Publication:
    project = channel.project
    if role is not None:
        _check_role(role, channel, "change the rollout of")
    with _publisher(project, "changed") as pub:
        try:
            result = move(pub)
        except NotFound as e:
            raise ForgeError(f"Channel {channel.name} has nothing published.") from e
        except publisher.NoRolloutInProgress as e:
            raise NoRolloutInProgress(channel.name) from e
        except AnvilError as e:
            raise _explain(e, "changed") from e
    text = summary(result)
    publication = _record(project, channel, result, kind="rollout", user=user, summary=text)
    _audit(
        action,
        channel,
        project,
        user,
        sequence=result.sequence,
        rollout_percent=result.rollout_percent,
        changes=text,
    )
    return publication


def set_rollout(
    channel: Channel, percent: int, *, user: User | None, role: Role | None = None
) -> Publication:
    """Move the channel's rollout in progress to ``percent`` (1-99; 100 completes it).

    Raises:
        ForgeError: without a rollout in progress, for a bad percentage or a store failure.
    """
    if percent == 100:
        return complete_rollout(channel, user=user, role=role)
    if not isinstance(percent, int) or not 1 <= percent <= 99:
        raise ForgeError(
            "The rollout percentage must be a whole number from 1 to 100.", kind=Kind.INVALID
        )
    return _rollout_move(
        channel,
        user=user,
        role=role,
        action="rollout.update",
        move=lambda pub: pub.set_rollout(channel.name, percent),
        summary=lambda result: f"Rollout at {percent}%",
    )


def complete_rollout(
    channel: Channel, *, user: User | None, role: Role | None = None
) -> Publication:
    """Serve the rolled-out list to every instance.

    Raises:
        ForgeError: as for :func:`set_rollout`.
    """
    return _end_rollout(channel, "complete", user=user, role=role)


def abort_rollout(channel: Channel, *, user: User | None, role: Role | None = None) -> Publication:
    """Serve the list served before the rollout to every instance again.

    Raises:
        ForgeError: as for :func:`set_rollout`.
    """
    return _end_rollout(channel, "abort", user=user, role=role)


#: How a rollout ends: the publisher's move and the word of the summary.
_ENDINGS: dict[str, tuple[Callable[[Publisher, str], PublishResult], str]] = {
    "complete": (Publisher.complete_rollout, "completed"),
    "abort": (Publisher.abort_rollout, "aborted"),
}


def _end_rollout(
    channel: Channel, how: str, *, user: User | None, role: Role | None
) -> Publication:
    move, done = _ENDINGS[how]
    return _rollout_move(
        channel,
        user=user,
        role=role,
        action=f"rollout.{how}",
        move=lambda pub: move(pub, channel.name),
        summary=lambda result: (
            f"Rollout {done}: {_served(result.pointer.releases, _set_names(channel.project))}"
        ),
    )
