"""Publishing from the FORGE: channels, their policy, and every store write via the publisher.

    >>> publication = publish_version(version, channel, user=owner)   # doctest: +SKIP
    >>> publication.sequence                                          # doctest: +SKIP
    1

Every channel move goes through :class:`publisher.Publisher` (sign, encrypt for the project's
active ACCESS_TOKENs, compare-and-swap); this module never writes a pointer itself. A channel
serves every prompt set of the project (pointer v2: one entry per set): publishing a set
replaces its own entry and keeps the others, and the FORGE hands the publisher every plaintext
it needs (``bundle_source``) to re-encrypt the other entries. Pointers the FORGE reads itself
are checked with :func:`anvil_client.wire.verify_pointer`, the one verification. A
:class:`~forge_app.models.distribution.Publication` row and an audit event are added to the
session only after the pointer's compare-and-swap succeeded; the caller commits. Failures are
raised as :class:`ForgeError`, one sentence for the user, and leave the database untouched.

The code lives in one module per domain, all importable from here:

- :mod:`~forge_app.services.store`: the signing key, the object store and the publisher;
- :mod:`~forge_app.services.channels`: channels, their policies and read models;
- :mod:`~forge_app.services.publish`: publishing versions and prompt sets, pre-releases, plans;
- :mod:`~forge_app.services.rollouts`: removing a set, rolling back, gradual rollouts;
- :mod:`~forge_app.services.recipients`: re-encryption for the active tokens, revocation.
"""

from __future__ import annotations

from forge_app.services.channels import (
    ChannelEntry,
    ChannelState,
    HistoryRow,
    can_publish,
    channel_history,
    channel_state,
    check_policy,
    current_release,
    ensure_default_channels,
    entry_json,
    get_channel,
    latest_publication,
    project_channels,
    release_changes,
    required_role,
    version_status,
)
from forge_app.services.publish import (
    PlanRow,
    clash_for,
    publish_confirmed,
    publish_plan,
    publish_prompt_set,
    publish_version,
    rollback_plan,
    snapshot_prerelease,
)
from forge_app.services.recipients import (
    RecipientsReport,
    revoke_token,
    sync_recipients,
)
from forge_app.services.rollouts import (
    abort_rollout,
    complete_rollout,
    history_pointer,
    remove_from_channel,
    rollback_to,
    set_rollout,
)
from forge_app.services.store import (
    forge_key_id,
    forge_public_key_text,
    forge_signing_key,
    forge_store,
    store_root,
)

__all__ = [
    "ChannelEntry",
    "ChannelState",
    "HistoryRow",
    "PlanRow",
    "RecipientsReport",
    "abort_rollout",
    "can_publish",
    "channel_history",
    "channel_state",
    "check_policy",
    "clash_for",
    "complete_rollout",
    "current_release",
    "ensure_default_channels",
    "entry_json",
    "forge_key_id",
    "forge_public_key_text",
    "forge_signing_key",
    "forge_store",
    "get_channel",
    "history_pointer",
    "latest_publication",
    "project_channels",
    "publish_confirmed",
    "publish_plan",
    "publish_prompt_set",
    "publish_version",
    "release_changes",
    "remove_from_channel",
    "required_role",
    "revoke_token",
    "rollback_plan",
    "rollback_to",
    "set_rollout",
    "snapshot_prerelease",
    "store_root",
    "sync_recipients",
    "version_status",
]
