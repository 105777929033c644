"""Errors of the publisher beyond the shared hierarchy of ``anvil_client.errors``.

>>> from publisher import PromptIdClash
>>> issubclass(PromptIdClash, Exception)
True
"""

from __future__ import annotations

from typing import Literal

from anvil_client.errors import AnvilError, ConfigError
from anvil_client.wire import Release

__all__ = ["NoRolloutInProgress", "PromptIdClash", "RemovalRefused"]


class PromptIdClash(AnvilError):
    """A prompt id would be in two entries of one channel's list (DESIGN §4).

    ``prompt_id`` is the shared id, ``existing`` the entry already on the channel that has it,
    ``incoming`` a description of the set being published (``Checkout helper 0.1.0``) and
    ``channel`` the channel, which is left untouched.
    """

    def __init__(self, prompt_id: str, existing: Release, incoming: str, channel: str) -> None:
        self.prompt_id = prompt_id
        self.existing = existing
        self.incoming = incoming
        self.channel = channel
        super().__init__(
            f"prompt {prompt_id!r} is in both {existing.describe()} (already on {channel!r}) "
            f"and {incoming}; a channel serves every prompt set at once, so each prompt id may "
            f"be in only one of them: rename or remove it in one set ({channel!r} was left "
            "unchanged)"
        )


class NoRolloutInProgress(ConfigError):
    """A rollout move (set, complete, abort) on a channel with no rollout in progress.

    A :class:`~anvil_client.errors.ConfigError`, so ``anvil-publish`` reports it as before;
    ``channel`` is the channel, which is left untouched.
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel
        super().__init__(f"channel {channel!r} has no rollout in progress")


RemovalReason = Literal["not_served", "rollout", "last"]


class RemovalRefused(ConfigError):
    """:meth:`Publisher.remove <publisher.Publisher.remove>` refused to drop an entry.

    A :class:`~anvil_client.errors.ConfigError`, so ``anvil-publish`` reports it as before.
    ``reason`` says why: ``"not_served"`` (the channel has no entry for the set), ``"rollout"``
    (a rollout is in progress) or ``"last"`` (it is the channel's only entry, and a pointer
    never has zero entries). ``entry`` is the set's entry (None when not served); ``channel``
    is the channel, which is left untouched.
    """

    def __init__(
        self, reason: RemovalReason, channel: str, message: str, entry: Release | None = None
    ) -> None:
        self.reason: RemovalReason = reason
        self.channel = channel
        self.entry = entry
        super().__init__(message)
