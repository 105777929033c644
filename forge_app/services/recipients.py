"""Recipients: re-encrypting a project's channels for its active ACCESS_TOKENs, and revoking a
token.

One part of the publishing services; :mod:`forge_app.services.publishing` gathers their API.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anvil_client.errors import (
    AnvilError,
    StoreError,
)
from anvil_client.wire import (
    CHANNEL_RE,
    pointer_key,
)
from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.models import (
    Project,
    User,
    utcnow,
)
from forge_app.models.distribution import (
    AccessToken,
    Channel,
    Publication,
)
from forge_app.services.bundles import _bundle_source, _keks
from forge_app.services.channels import (
    _needs_reencryption,
    _served,
    _set_names,
    pointer_details,
    project_channels,
)
from forge_app.services.publish import _audit, _record
from forge_app.services.store import _explain, _publisher
from forge_app.services.tokens import active_tokens, record_token_event
from publisher import (
    Publisher,
)

# -------------------------------------------------------------- recipients and revocation


@dataclass
class RecipientsReport:
    """What :func:`sync_recipients` did: channels re-encrypted, already right, or failed."""

    reencrypted: list[Publication] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _all_channels(project: Project, pub: Publisher) -> list[Channel]:
    """The project's channels, plus any channel found only in the store (e.g. published by
    ``anvil-publish`` in CI), which gets a row so its re-publications can be recorded."""
    channels = {c.name: c for c in project_channels(project)}
    prefix, suffix = pointer_key(str(project.id), "x").rsplit("x", 1)
    try:
        keys = pub.store.list(prefix)
    except StoreError:
        keys = []  # read-only or unlistable stores: the FORGE's own channels only
    for key in keys:
        name = key[len(prefix) : -len(suffix)] if key.endswith(suffix) else ""
        if key.startswith(prefix) and CHANNEL_RE.match(name) and name not in channels:
            channel = Channel(project_id=project.id, name=name, policy=Channel.default_policy(name))
            db.session.add(channel)
            db.session.flush()
            channels[name] = channel
    return list(channels.values())


def sync_recipients(
    project: Project,
    *,
    user: User,
    reason: str,
    excluding: AccessToken | None = None,
    only: Channel | None = None,
) -> RecipientsReport:
    """Re-encrypt every entry of every channel (both lists during a rollout) when their
    recipients are not exactly the project's active tokens (DESIGN §5): same content, new CEK,
    new sequence. Channels that already match are left alone; a failing channel does not stop
    the others (it is listed in ``failed``).

    Raises:
        ForgeError: if the store cannot be opened or listed at all.
    """
    report = RecipientsReport()
    keks = _keks(project, excluding=excluding)
    wanted = set(keks)
    with _publisher(project, "re-encrypted") as pub:
        channels = [only] if only is not None else _all_channels(project, pub)
        for channel in channels:
            try:
                pointer = pub.current(channel.name)
                if pointer is None or not _needs_reencryption(pub, pointer, wanted):
                    report.unchanged.append(channel.name)
                    continue
                if not keks:
                    report.failed.append(
                        (channel.name, "no active ACCESS_TOKEN is left to encrypt it for")
                    )
                    continue
                source = _bundle_source(project, pub, pointer.all_releases())
                result = pub.reencrypt(channel.name, recipients=keks, bundle_source=source)
            except ForgeError as e:
                report.failed.append((channel.name, str(e)))
                continue
            except AnvilError as e:
                report.failed.append((channel.name, str(_explain(e, "re-encrypted"))))
                continue
            names = _set_names(project)
            served = _served(result.pointer.releases, names)
            publication = _record(
                project,
                channel,
                result,
                kind="reencrypt",
                user=user,
                summary=f"Re-encrypted for {len(keks)} token{'' if len(keks) == 1 else 's'}: "
                f"{served}",
            )
            report.reencrypted.append(publication)
            _audit(
                "channel.reencrypt",
                channel,
                project,
                user,
                reason=reason,
                **pointer_details(result, names),
                recipients=len(keks),
            )
    return report


def revoke_token(token: AccessToken, *, user: User) -> RecipientsReport:
    """Revoke ``token`` and at once re-encrypt every entry of every channel for the remaining
    tokens (DESIGN §5). Once the store has answered, the revocation is added to the session
    even if some channel then fails (a leaked token must stop working); the report lists the
    failures.

    Raises:
        ForgeError: if the token is already revoked, the store cannot be reached (nothing is
            revoked then), or it is the last active token while channels serve releases
            encrypted for it (generate the replacement first).
    """
    if token.revoked_at is not None:
        raise ForgeError(f"Token {token.name} is already revoked.")
    project = token.project
    remaining = [t for t in active_tokens(project.id) if t.id != token.id]
    # The store must answer first: revoking while it is unreachable would leave every channel
    # encrypted for the token with nothing re-encrypted, so nothing is done then.
    with _publisher(project, "revoked") as pub:
        try:
            served = [c.name for c in project_channels(project) if pub.current(c.name) is not None]
        except AnvilError as e:
            raise _explain(e, "revoked") from e
    if not remaining and served:
        raise ForgeError(
            f"{token.name} is the last active token and channels {', '.join(served)} serve "
            "releases encrypted for it. Generate the replacement token first, deploy it, "
            "then revoke this one.",
        )
    token.revoked_at = utcnow()
    token.revoked_by_id = user.id
    record_token_event("token.revoke", token, user=user, project=project)
    db.session.flush()
    return sync_recipients(project, user=user, reason=f"revoked token {token.token_id}")
