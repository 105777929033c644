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
raised as :class:`PublishError`, one sentence for the user, and leave the database untouched.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from anvil_client.errors import (
    AnvilError,
    ConfigError,
    DecryptionError,
    NotFound,
    PreconditionFailed,
    SignatureError,
    StoreError,
    StoreUnavailable,
    ValidationError,
)
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import (
    CHANNEL_RE,
    POINTER_MAX_SIZE,
    Pointer,
    Release,
    TrustedKey,
    fetch_object,
    history_key,
    key_id,
    load_private_key,
    load_private_key_file,
    open_object,
    pointer_key,
    public_key_text,
    recipient_ids,
    verify_pointer,
)
from forge_app.audit import record_event
from forge_app.extensions import db
from forge_app.models import (
    Project,
    PromptSet,
    PromptSetVersion,
    Role,
    SetStatus,
    User,
    utcnow,
)
from forge_app.models.distribution import (
    DEFAULT_CHANNELS,
    AccessToken,
    Channel,
    Publication,
)
from forge_app.services.tokens import active_tokens, wire_token
from publisher import (
    BuiltBundle,
    BundleSource,
    HistoryEntry,
    PromptIdClash,
    Publisher,
    PublishResult,
    build_bundle,
)

__all__ = [
    "ChannelEntry",
    "ChannelState",
    "HistoryRow",
    "PlanRow",
    "PublishError",
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
    "forge_key_id",
    "forge_public_key_text",
    "forge_signing_key",
    "forge_store",
    "get_channel",
    "history_pointer",
    "project_channels",
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

log = logging.getLogger("forge.publishing")

_PRERELEASE_RE = re.compile(r"^(\d+\.\d+\.\d+)-(rc|dev)\.(\d+)$")


class PublishError(Exception):
    """A publish-side action that did not happen; ``str()`` is one sentence for the user.

    ``status`` is the HTTP status a view answers with: 403 for a rule about who may act or what
    a channel accepts, 409 for a state the user can fix, 503 when the store failed.
    """

    def __init__(self, message: str, *, status: int = 409, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or []


# --------------------------------------------------------------------------- key and store


def forge_signing_key() -> Ed25519PrivateKey:
    """The FORGE's Ed25519 signing key (``FORGE_SIGNING_KEY``: PEM text or a PEM file path).

    Raises:
        ConfigError: if the key cannot be loaded.
    """
    cached = current_app.extensions.get("forge_signing_key")
    if isinstance(cached, Ed25519PrivateKey):
        return cached
    value = str(current_app.config["FORGE_SIGNING_KEY"])
    if value.lstrip().startswith("-----BEGIN"):
        key = load_private_key(value)
    else:
        key = load_private_key_file(value)
    current_app.extensions["forge_signing_key"] = key
    return key


def forge_public_key_text() -> str:
    """The public key clients trust, as ``ed25519:<base64>``."""
    return public_key_text(forge_signing_key().public_key())


def forge_key_id() -> str:
    """The key id (hex SHA-256 of the raw public key) of the FORGE's signing key."""
    return key_id(forge_signing_key().public_key())


def _store_url() -> str:
    return str(current_app.config["FORGE_STORE_URL"])


def forge_store() -> ObjectStore:
    """A new store client for ``FORGE_STORE_URL``; the caller closes it.

    Raises:
        ConfigError: if the URL is not a store URL.
    """
    return open_store(_store_url())


def store_root() -> Path | None:
    """The local directory of a ``file://`` store (served at ``/store/``), else None."""
    parts = urlsplit(_store_url())
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.path)).resolve()


@contextmanager
def _publisher(project: Project, action: str = "changed") -> Iterator[Publisher]:
    """A publisher on the FORGE's store. ``action`` words the error if the store is gone.

    Raises:
        PublishError: for a misconfigured store or key, or a local store directory that is
            gone (a file store reads a missing directory as an empty store, which would make
            every channel look unpublished).
    """
    problem = _local_store_problem(project)
    if problem is not None:
        raise _explain(StoreUnavailable(problem), action)
    try:
        pub = Publisher(_store_url(), project_id=str(project.id), signing_key=forge_signing_key())
    except AnvilError as e:
        raise PublishError(
            f"The FORGE's store or signing key is misconfigured: {e}", status=503
        ) from e
    with pub:
        yield pub


def _local_store_problem(project: Project) -> str | None:
    """Why a ``file://`` store cannot be used now, or None (also for other stores)."""
    root = store_root()
    if root is None or root.is_dir():
        return None
    if root.exists():
        return f"{root} is not a directory"
    published = db.session.scalar(
        select(Publication.id).where(Publication.project_id == project.id).limit(1)
    )
    # A new FORGE has no store directory until its first publication creates it.
    return None if published is None else f"the store directory {root} is missing"


def _explain(error: AnvilError, action: str) -> PublishError:
    """One sentence for the user; nothing was changed when this is raised."""
    if isinstance(error, PromptIdClash):
        return PublishError(_clash_sentence(error, error.incoming, error.channel, action))
    if isinstance(error, StoreUnavailable):
        return PublishError(
            f"The store cannot be reached, so nothing was {action}: {error}. "
            "Try again when it is back.",
            status=503,
        )
    if isinstance(error, PreconditionFailed):
        return PublishError(
            f"The channel changed while it was being {action} by someone else; nothing was "
            f"{action}. Reload and try again.",
        )
    if isinstance(error, SignatureError):
        return PublishError(
            f"The channel's pointer in the store is not signed by this FORGE's key, so nothing "
            f"was {action}: {error}",
        )
    if isinstance(error, ValidationError):
        return PublishError(
            f"The bundle does not validate, so nothing was {action}.",
            problems=list(error.problems),
        )
    if isinstance(error, StoreError):
        return PublishError(
            f"The store refused the write, so nothing was {action}: {error}", status=503
        )
    return PublishError(f"Nothing was {action}: {error}")


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
    """Raises: PublishError (403): if ``channel`` does not accept ``status`` (DESIGN §1)."""
    if status not in channel.accepts:
        accepted = " or ".join(channel.accepts)
        raise PublishError(
            f"Channel {channel.name} accepts only {accepted} prompt sets; this one is {status}.",
            status=403,
        )


def required_role(channel: Channel) -> Role:
    """Owners publish to channels that take LOCKED sets only; reviewers to the others."""
    return Role.OWNER if channel.policy == "locked" else Role.REVIEWER


def can_publish(role: Role | None, channel: Channel) -> bool:
    return role is not None and role >= required_role(channel)


def _check_role(role: Role | None, channel: Channel, action: str) -> None:
    needed = required_role(channel)
    if role is None or role < needed:
        raise PublishError(
            f"Only members with the {needed.label} role can {action} channel {channel.name}.",
            status=403,
        )


# --------------------------------------------------------------------------- pre-releases


def snapshot_prerelease(prompt_set: PromptSet, *, user: User) -> PromptSetVersion:
    """Snapshot a REVIEW or LIVE set as ``X.Y.Z-rc.N`` / ``X.Y.Z-dev.N`` (added, flushed).

    ``X.Y.Z`` is the version under review (REVIEW) or the next patch after the latest release
    (LIVE); ``N`` grows per base version. If the newest such snapshot has the same prompts, it
    is reused instead of making another.

    Raises:
        PublishError: for a LOCKED set, an empty set, or prompts that do not validate.
    """
    from forge_app.workflow import draft_prompts, latest_release, next_version, snapshot_prompts

    if prompt_set.status == SetStatus.REVIEW.value and prompt_set.pending_version:
        base, kind = prompt_set.pending_version, "rc"
    elif prompt_set.status == SetStatus.LIVE.value:
        latest = latest_release(db.session, prompt_set)
        base, kind = next_version(latest.version if latest else None, "patch"), "dev"
    else:
        raise PublishError(
            f"Prompt set {prompt_set.name} is {prompt_set.status}; publish a version."
        )
    prompts = draft_prompts(db.session, prompt_set)
    if not prompts:
        raise PublishError(f"Prompt set {prompt_set.name} has no prompts to publish yet.")
    prefix = f"{base}-{kind}."
    existing = list(
        db.session.scalars(
            select(PromptSetVersion).where(
                PromptSetVersion.prompt_set_id == prompt_set.id,
                PromptSetVersion.version.startswith(prefix, autoescape=True),
            )
        )
    )
    numbered = [
        (int(m.group(3)), v) for v in existing if (m := _PRERELEASE_RE.match(v.version)) is not None
    ]
    if numbered:
        number, newest = max(numbered, key=lambda pair: pair[0])
        if snapshot_prompts(newest) == prompts:
            return newest
    else:
        number = 0
    version = f"{prefix}{number + 1}"
    created_at = utcnow()
    try:
        built = build_bundle(
            prompts,
            project_id=str(prompt_set.project_id),
            version=version,
            prompt_set_id=str(prompt_set.id),
            created_at=created_at,
        )
    except ValidationError as e:
        raise PublishError(
            f"Prompt set {prompt_set.name} has invalid prompts; fix them before publishing.",
            problems=list(e.problems),
        ) from e
    label = "in review" if kind == "rc" else "being edited"
    record = PromptSetVersion(
        prompt_set_id=prompt_set.id,
        version=version,
        bundle_json=built.data.decode("utf-8"),
        content_sha256=built.content_sha256,
        prompt_count=built.prompt_count,
        changelog=f"Pre-release snapshot of the set while {label}.",
        created_at=created_at,
        submitted_by_id=user.id,
        approved_by_id=None,
    )
    db.session.add(record)
    try:
        db.session.flush()
    except IntegrityError as e:
        db.session.rollback()
        raise PublishError(
            f"Someone else snapshotted {version} at the same moment; try again."
        ) from e
    record_event(
        "prompt_set.snapshot",
        prompt_set,
        project=prompt_set.project,
        actor=user,
        details={"version": version, "content_sha256": built.content_sha256},
    )
    return record


# ------------------------------------------------------------------------------- publish


def _keks(project: Project, *, excluding: AccessToken | None = None) -> dict[str, bytes]:
    tokens = [t for t in active_tokens(project.id) if excluding is None or t.id != excluding.id]
    try:
        return {t.token_id: wire_token(t).kek() for t in tokens}
    except ConfigError as e:
        raise PublishError(str(e), status=503) from e


def _require_keks(project: Project) -> dict[str, bytes]:
    keks = _keks(project)
    if not keks:
        raise PublishError(
            "This project has no ACCESS_TOKEN yet, and every release is encrypted for the "
            "project's tokens: generate one in Tokens first.",
        )
    return keks


def _version_for(project: Project, content_sha256: str) -> PromptSetVersion | None:
    return db.session.scalar(
        select(PromptSetVersion)
        .join(PromptSet, PromptSet.id == PromptSetVersion.prompt_set_id)
        .where(
            PromptSet.project_id == project.id,
            PromptSetVersion.content_sha256 == content_sha256,
        )
        .order_by(PromptSetVersion.id.desc())
        .limit(1)
    )


def entry_json(release: Release) -> dict[str, str]:
    """An entry as the Publication rows keep it (``Publication.releases``)."""
    return {
        "prompt_set_id": release.prompt_set_id,
        "name": release.name,
        "version": release.version,
        "content_sha256": release.content_sha256,
        "object_path": release.object.path,
    }


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


def _summary(result: PublishResult, fallback: str) -> str:
    changes = [str(c) for c in getattr(result, "changes", ()) or ()]
    text = "; ".join(changes) if changes else fallback
    return text[:500]


def _record(
    project: Project,
    channel: Channel,
    result: PublishResult,
    *,
    kind: str,
    user: User | None,
    summary: str,
    version: PromptSetVersion | None = None,
) -> Publication:
    """The Publication row of a move that succeeded. Only a publish changes one entry; the
    single-entry columns stay empty for moves of the whole list."""
    pointer = result.pointer
    single = kind == "publish"
    content = result.content_sha256
    if single and content is not None and (version is None or version.content_sha256 != content):
        version = _version_for(project, content)
    previous = pointer.rollout.previous if pointer.rollout is not None else None
    publication = Publication(
        project_id=project.id,
        channel_id=channel.id,
        sequence=result.sequence,
        version=result.version if single else None,
        prompt_set_id=result.prompt_set_id if single else None,
        prompt_set_version_id=version.id if single and version is not None else None,
        content_sha256=result.content_sha256 if single else None,
        object_path=result.object_path if single else None,
        releases_json=json.dumps([entry_json(r) for r in pointer.releases]),
        previous_json=(
            json.dumps([entry_json(r) for r in previous]) if previous is not None else None
        ),
        summary=summary[:500],
        kind=kind,
        rollout_percent=result.rollout_percent,
        published_by_id=user.id if user is not None else None,  # None: the guard
        published_at=utcnow(),
    )
    db.session.add(publication)
    return publication


def _audit(
    action: str, channel: Channel, project: Project, user: User | None, **details: Any
) -> None:
    record_event(action, channel, project=project, actor=user, details=details)


def _clash_sentence(clash: PromptIdClash, incoming: str, channel: str, action: str) -> str:
    return (
        f"Prompt {clash.prompt_id!r} is in both {clash.existing.describe()} (on {channel}) and "
        f"{incoming}; a channel serves all its prompt sets at once, so a prompt id may be in "
        f"only one of them. Rename or remove it in one set; nothing was {action}."
    )


def _bundle_of(version: PromptSetVersion) -> BuiltBundle:
    try:
        return BuiltBundle.from_bytes(
            version.bundle_bytes, project_id=str(version.prompt_set.project_id)
        )
    except ValidationError as e:
        raise PublishError(
            f"Version {version.version} does not validate, so it cannot be published.",
            problems=list(e.problems),
        ) from e


def publish_version(
    version: PromptSetVersion,
    channel: Channel,
    *,
    user: User | None,
    role: Role | None = None,
    rollout_percent: int | None = None,
) -> Publication:
    """Publish a stored version to ``channel`` for every active ACCESS_TOKEN: its set's entry
    is replaced (or added); every other set on the channel stays.

    ``role`` (the user's role in the project) is checked against the channel when given.
    ``rollout_percent`` 1-99 starts a gradual rollout; None or 100 serves everyone.

    Raises:
        PublishError: for a role or status the channel does not take, a project without
            tokens, a bad percentage, a prompt id another set on the channel has, or a store
            failure (then nothing changed).
    """
    project = channel.project
    if role is not None:
        _check_role(role, channel, "publish to")
    check_policy(channel, version_status(version))
    if version.prompt_set.project_id != project.id:
        raise PublishError("This version belongs to another project.", status=404)
    if rollout_percent == 100:
        rollout_percent = None
    if rollout_percent is not None and not 1 <= rollout_percent <= 99:
        raise PublishError("A gradual rollout starts at 1 to 99 percent of instances.", status=400)
    keks = _require_keks(project)
    built = _bundle_of(version)
    name = version.prompt_set.name
    with _publisher(project, "published") as pub:
        try:
            result = pub.publish(
                built,
                channel=channel.name,
                name=name,
                recipients=keks,
                rollout_percent=rollout_percent,
                bundle_source=_bundle_source(project, pub),
            )
        except PromptIdClash as e:
            raise PublishError(
                _clash_sentence(e, f"{name} {version.version}", channel.name, "published")
            ) from e
        except ConfigError as e:
            if rollout_percent is not None and pub.current(channel.name) is None:
                raise PublishError(
                    f"Channel {channel.name} has nothing published yet, so there is nothing to "
                    "roll out from: publish to all instances first.",
                    status=400,
                ) from e
            raise _explain(e, "published") from e
        except AnvilError as e:
            raise _explain(e, "published") from e
    summary = _summary(result, f"{name} {version.version} published")
    publication = _record(
        project, channel, result, kind="publish", user=user, version=version, summary=summary
    )
    _audit(
        "channel.publish",
        channel,
        project,
        user,
        prompt_set=name,
        prompt_set_id=result.prompt_set_id,
        version=result.version,
        sequence=result.sequence,
        content_sha256=result.content_sha256,
        rollout_percent=result.rollout_percent,
        recipients=len(keks),
        changes=summary,
    )
    log.info(
        "published %s %s to %s/%s as sequence %d",
        name,
        result.version,
        project.id,
        channel.name,
        result.sequence,
    )
    return publication


def publish_prompt_set(
    prompt_set: PromptSet,
    channel: Channel,
    *,
    user: User,
    role: Role | None = None,
    rollout_percent: int | None = None,
) -> Publication:
    """Publish a set as it is now: its latest release (LOCKED) or a pre-release snapshot.

    Raises:
        PublishError: as for :func:`publish_version`; for a LOCKED set without a release.
    """
    from forge_app.workflow import latest_release

    if role is not None:
        _check_role(role, channel, "publish to")
    check_policy(channel, prompt_set.status)
    if prompt_set.status == SetStatus.LOCKED.value:
        version = latest_release(db.session, prompt_set)
        if version is None:
            raise PublishError(f"Prompt set {prompt_set.name} has no released version.")
    else:
        version = snapshot_prerelease(prompt_set, user=user)
    return publish_version(version, channel, user=user, role=role, rollout_percent=rollout_percent)


def clash_for(
    prompt_set: PromptSet, version: PromptSetVersion | None, channel: Channel
) -> str | None:
    """The sentence naming a prompt id that the set (this version, or its draft prompts when
    ``version`` is None) shares with another set on ``channel``; None when there is none or the
    channel cannot be read (the publish itself then says why). Writes nothing.

    Uses :meth:`publisher.Publisher.check_publish`, the same check the publish runs.
    """
    from forge_app.workflow import draft_prompts

    project = channel.project
    if version is not None:
        incoming = f"{prompt_set.name} {version.version}"
        try:
            built = _bundle_of(version)
        except PublishError:
            return None
    else:
        incoming = f"{prompt_set.name} (its current prompts)"
        prompts = draft_prompts(db.session, prompt_set)
        if not prompts:
            return None
        try:
            built = build_bundle(
                prompts,
                project_id=str(project.id),
                version="0.0.0-dev.1",
                prompt_set_id=str(prompt_set.id),
            )
        except ValidationError:
            return None
    try:
        with _publisher(project, "published") as pub:
            pub.check_publish(
                built, channel=channel.name, bundle_source=_bundle_source(project, pub)
            )
    except PromptIdClash as e:
        return _clash_sentence(e, incoming, channel.name, "published")
    except (AnvilError, PublishError):
        return None
    return None


@dataclass(frozen=True)
class PlanRow:
    """One prompt set of a channel before and after a change (for confirmation pages)."""

    name: str
    before: str | None
    after: str | None
    change: str  # "unchanged", "updated", "added", "removed"

    @property
    def changed(self) -> bool:
        return self.change != "unchanged"


def _set_names(project: Project) -> dict[str, str]:
    """The FORGE's current names of the project's sets, by their pointer id (UUID text)."""
    rows = db.session.execute(
        select(PromptSet.id, PromptSet.name).where(PromptSet.project_id == project.id)
    ).all()
    return {str(set_id): name for set_id, name in rows}


def _plan(
    before: Sequence[Release],
    after: Sequence[tuple[str, str, str | None, str]],
    names: dict[str, str],
) -> list[PlanRow]:
    """Rows for every set in either list; ``after`` is ``(prompt_set_id, name, version,
    content_sha256)``, sorted like a pointer."""
    old = {r.prompt_set_id: r for r in before}
    rows: list[PlanRow] = []
    for set_id, name, version, content in after:
        was = old.pop(set_id, None)
        label = names.get(set_id) or name or set_id
        if was is None:
            rows.append(PlanRow(label, None, version, "added"))
        elif was.content_sha256 == content:
            rows.append(PlanRow(label, was.version, was.version, "unchanged"))
        else:
            rows.append(PlanRow(label, was.version, version, "updated"))
    for was in old.values():
        rows.append(
            PlanRow(names.get(was.prompt_set_id) or _label(was), was.version, None, "removed")
        )
    return rows


def publish_plan(
    pointer: Pointer | None, prompt_set: PromptSet, new_version: str, content_sha256: str | None
) -> list[PlanRow]:
    """What the channel serves per set before and after publishing ``new_version`` of
    ``prompt_set`` (``content_sha256`` None: a snapshot not made yet)."""
    before = list(pointer.releases) if pointer is not None else []
    set_id = str(prompt_set.id)
    after = [
        (r.prompt_set_id, r.name, r.version, r.content_sha256)
        for r in before
        if r.prompt_set_id != set_id
    ]
    after.append((set_id, prompt_set.name, new_version, content_sha256 or "(new)"))
    after.sort(key=lambda row: row[0])
    return _plan(before, after, _set_names(prompt_set.project))


def rollback_plan(channel: Channel, pointer: Pointer | None, target: Pointer) -> list[PlanRow]:
    """What the channel serves per set now and after rolling back to ``target``."""
    before = list(pointer.releases) if pointer is not None else []
    after = [(r.prompt_set_id, r.name, r.version, r.content_sha256) for r in target.releases]
    return _plan(before, after, _set_names(channel.project))


# ---------------------------------------------------------------- recovering the plaintext


def _project_tokens(project: Project) -> list[AccessToken]:
    return list(db.session.scalars(select(AccessToken).where(AccessToken.project_id == project.id)))


def _decrypt_from_store(project: Project, pub: Publisher, release: Release) -> bytes:
    """The exact bundle bytes of an entry the FORGE has no version of (published by CI): the
    object, fetched and checked with :func:`anvil_client.wire.fetch_object`, opened with one of
    the project's tokens (revoked ones too: the FORGE keeps their secrets).

    Raises:
        PublishError: if no token of the project opens it, or it does not check out.
    """
    try:
        data = fetch_object(pub.store, release)
        if release.object.encoding == "json":
            return open_object(release, data, None)
        readers = set(recipient_ids(data))
        for token in _project_tokens(project):
            if token.token_id in readers:
                return open_object(release, data, wire_token(token))
        raise DecryptionError("no token of this project can decrypt it")
    except AnvilError as e:
        raise PublishError(
            f"The FORGE cannot recover the content of {release.describe()} "
            f"({release.content_sha256[:12]}): {e}",
        ) from e


def _bundle_source(
    project: Project, pub: Publisher, releases: Iterable[Release] = ()
) -> BundleSource:
    """Plaintext by ``content_sha256`` for the publisher: from the FORGE's versions, else (for
    an entry published outside the FORGE) decrypted from the store. ``releases`` are entries
    that may need the latter; the channel's current entries are looked up when needed."""
    candidates = {r.content_sha256: r for r in releases}
    found: dict[str, bytes] = {}
    channels_read: list[bool] = []

    def source(content_sha256: str) -> bytes:
        if content_sha256 in found:
            return found[content_sha256]
        version = _version_for(project, content_sha256)
        if version is not None:
            data = version.bundle_bytes
        else:
            if content_sha256 not in candidates and not channels_read:
                channels_read.append(True)
                for channel in project_channels(project):
                    pointer = pub.current(channel.name)
                    if pointer is not None:
                        for entry in pointer.all_releases():
                            candidates.setdefault(entry.content_sha256, entry)
            release = candidates.get(content_sha256)
            if release is None:
                raise NotFound(f"the FORGE has no bundle with content {content_sha256[:12]}")
            data = _decrypt_from_store(project, pub, release)
        found[content_sha256] = data
        return data

    return source


# ------------------------------------------------------------------ remove and rollback


def remove_from_channel(
    channel: Channel, prompt_set_id: str, *, user: User, role: Role | None = None
) -> Publication:
    """Stop serving one prompt set on ``channel``: a new sequence without its entry; the other
    sets stay as they are. Owners only.

    Raises:
        PublishError: for a role other than owner, a set the channel does not serve, the only
            set of the channel, a rollout in progress, or a store failure.
    """
    project = channel.project
    if role is not None and role < Role.OWNER:
        raise PublishError(
            f"Only members with the owner role can remove prompt sets from {channel.name}.",
            status=403,
        )
    with _publisher(project, "removed") as pub:
        try:
            pointer = pub.current(channel.name)
            entry = pointer.entry(prompt_set_id) if pointer is not None else None
            if pointer is None or entry is None:
                raise PublishError(
                    f"Channel {channel.name} does not serve that prompt set.", status=404
                )
            if pointer.rollout is not None:
                raise PublishError(
                    f"Channel {channel.name} has a rollout in progress; complete or abort it "
                    "before removing a prompt set."
                )
            if len(pointer.releases) == 1:
                raise PublishError(
                    f"{entry.describe()} is the only prompt set on {channel.name}, and a channel "
                    "always serves at least one; publish another set first."
                )
            result = pub.remove(channel.name, prompt_set_id)
        except ConfigError as e:
            raise PublishError(f"Nothing was removed: {e}.") from e
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


def history_pointer(channel: Channel, sequence: int) -> Pointer:
    """History entry ``sequence`` of ``channel``, verified like any pointer.

    Raises:
        PublishError: (404) for an unknown entry, else for a store or verification failure.
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
        raise PublishError(
            f"Channel {channel.name} has no history entry {sequence} to roll back to.", status=404
        ) from e
    except AnvilError as e:
        raise _explain(e, "rolled back") from e
    if pointer.sequence != sequence:
        raise PublishError(
            f"History entry {sequence} of {channel.name} holds another pointer.", status=404
        )
    return pointer


def rollback_to(
    channel: Channel, sequence: int, *, user: User | None, role: Role | None = None
) -> Publication:
    """Serve the whole list of history entry ``sequence`` again, as a new sequence,
    re-encrypted for the current tokens (DESIGN §5).

    Raises:
        PublishError: for an unknown entry, a role too low, or a store failure.
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
            raise PublishError(
                f"Channel {channel.name} has no history entry {sequence} to roll back to.",
                status=404,
            ) from e
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
        sequence=result.sequence,
        releases=[f"{_label(r, names)} {r.version}" for r in result.pointer.releases],
        changes=summary,
    )
    return publication


# ------------------------------------------------------------------------------ rollouts


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
            raise PublishError(f"Channel {channel.name} has nothing published.") from e
        except ConfigError as e:
            raise PublishError(f"Channel {channel.name} has no rollout in progress.") from e
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


def _served(releases: Iterable[Release], names: dict[str, str] | None = None) -> str:
    return ", ".join(f"{_label(r, names)} {r.version}" for r in releases)


def set_rollout(
    channel: Channel, percent: int, *, user: User | None, role: Role | None = None
) -> Publication:
    """Move the channel's rollout in progress to ``percent`` (1-99; 100 completes it).

    Raises:
        PublishError: without a rollout in progress, for a bad percentage or a store failure.
    """
    if percent == 100:
        return complete_rollout(channel, user=user, role=role)
    if not isinstance(percent, int) or not 1 <= percent <= 99:
        raise PublishError(
            "The rollout percentage must be a whole number from 1 to 100.", status=400
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
        PublishError: as for :func:`set_rollout`.
    """
    return _rollout_move(
        channel,
        user=user,
        role=role,
        action="rollout.complete",
        move=lambda pub: pub.complete_rollout(channel.name),
        summary=lambda result: (
            f"Rollout completed: {_served(result.pointer.releases, _set_names(channel.project))}"
        ),
    )


def abort_rollout(channel: Channel, *, user: User | None, role: Role | None = None) -> Publication:
    """Serve the list served before the rollout to every instance again.

    Raises:
        PublishError: as for :func:`set_rollout`.
    """
    return _rollout_move(
        channel,
        user=user,
        role=role,
        action="rollout.abort",
        move=lambda pub: pub.abort_rollout(channel.name),
        summary=lambda result: (
            f"Rollout aborted: {_served(result.pointer.releases, _set_names(channel.project))}"
        ),
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
        PublishError: if the store cannot be opened or listed at all.
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
            except PublishError as e:
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
                sequence=result.sequence,
                releases=[f"{_label(r, names)} {r.version}" for r in result.pointer.releases],
                recipients=len(keks),
            )
    return report


def revoke_token(token: AccessToken, *, user: User) -> RecipientsReport:
    """Revoke ``token`` and at once re-encrypt every entry of every channel for the remaining
    tokens (DESIGN §5). Once the store has answered, the revocation is added to the session
    even if some channel then fails (a leaked token must stop working); the report lists the
    failures.

    Raises:
        PublishError: if the token is already revoked, the store cannot be reached (nothing is
            revoked then), or it is the last active token while channels serve releases
            encrypted for it (generate the replacement first).
    """
    if token.revoked_at is not None:
        raise PublishError(f"Token {token.name} is already revoked.")
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
        raise PublishError(
            f"{token.name} is the last active token and channels {', '.join(served)} serve "
            "releases encrypted for it. Generate the replacement token first, deploy it, "
            "then revoke this one.",
        )
    token.revoked_at = utcnow()
    token.revoked_by_id = user.id
    record_event(
        "token.revoke",
        token,
        project=project,
        actor=user,
        details={"token_id": token.token_id, "name": token.name},
    )
    db.session.flush()
    return sync_recipients(project, user=user, reason=f"revoked token {token.token_id}")


# ------------------------------------------------------------------------ reading channels


def current_release(channel: Channel) -> Pointer | None:
    """The channel's verified pointer, or None when nothing is published.

    Raises:
        PublishError: if the store fails or the pointer does not verify.
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
    except PublishError as e:
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
    except PublishError as e:
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


def publication_count(project: Project) -> int:
    return int(
        db.session.scalar(
            select(func.count(Publication.id)).where(Publication.project_id == project.id)
        )
        or 0
    )
