"""Publishing a version or a prompt set to a channel, pre-releases, and the plan shown first.

One part of the publishing services; :mod:`forge_app.services.publishing` gathers their API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from anvil_client.errors import (
    AnvilError,
    ConfigError,
    ValidationError,
)
from anvil_client.wire import (
    Pointer,
    Release,
)
from forge_app.audit import record_event
from forge_app.compat import confirmed_warnings
from forge_app.errors import ForgeError, Kind
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
    Channel,
    Publication,
)
from forge_app.services.bundles import _bundle_of, _bundle_source, _require_keks, _version_for
from forge_app.services.channels import (
    _PRERELEASE_RE,
    _check_role,
    _label,
    _set_names,
    check_policy,
    entry_json,
    version_status,
)
from forge_app.services.store import _clash_sentence, _explain, _publisher
from publisher import (
    PromptIdClash,
    PublishResult,
    build_bundle,
)

log = logging.getLogger("forge.publishing")


# --------------------------------------------------------------------------- pre-releases


def snapshot_prerelease(prompt_set: PromptSet, *, user: User) -> PromptSetVersion:
    """Snapshot a REVIEW or LIVE set as ``X.Y.Z-rc.N`` / ``X.Y.Z-dev.N`` (added, flushed).

    ``X.Y.Z`` is the version under review (REVIEW) or the next patch after the latest release
    (LIVE); ``N`` grows per base version. If the newest such snapshot has the same prompts, it
    is reused instead of making another.

    Raises:
        ForgeError: for a LOCKED set, an empty set, or prompts that do not validate.
    """
    from forge_app.services.drafts import draft_prompts
    from forge_app.services.versions import (
        latest_release,
        new_version,
        next_version,
        snapshot_prompts,
    )

    if prompt_set.status == SetStatus.REVIEW.value and prompt_set.pending_version:
        base, kind = prompt_set.pending_version, "rc"
    elif prompt_set.status == SetStatus.LIVE.value:
        latest = latest_release(db.session, prompt_set)
        base, kind = next_version(latest.version if latest else None, "patch"), "dev"
    else:
        raise ForgeError(f"Prompt set {prompt_set.name} is {prompt_set.status}; publish a version.")
    prompts = draft_prompts(db.session, prompt_set)
    if not prompts:
        raise ForgeError(f"Prompt set {prompt_set.name} has no prompts to publish yet.")
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
    label = "in review" if kind == "rc" else "being edited"
    record = new_version(
        prompt_set,
        prompts,
        version,
        invalid=f"Prompt set {prompt_set.name} has invalid prompts; fix them before publishing.",
        changelog=f"Pre-release snapshot of the set while {label}.",
        submitted_by_id=user.id,
        approved_by_id=None,
    )
    db.session.add(record)
    try:
        db.session.flush()
    except IntegrityError as e:
        db.session.rollback()
        raise ForgeError(
            f"Someone else snapshotted {version} at the same moment; try again."
        ) from e
    record_event(
        "prompt_set.snapshot",
        prompt_set,
        project=prompt_set.project,
        actor=user,
        details={"version": version, "content_sha256": record.content_sha256},
    )
    return record


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


class PublishOptions(TypedDict, total=False):
    """How a publish is made: ``role`` (the user's role in the project) is checked against the
    channel when given; ``rollout_percent`` 1-99 starts a gradual rollout, None or 100 serves
    everyone."""

    role: Role | None
    rollout_percent: int | None


#: The fields of a publish's result that its audit event keeps, in this order.
_PUBLISHED = ("prompt_set_id", "version", "sequence", "content_sha256", "rollout_percent")


def _published_details(result: PublishResult, name: str) -> dict[str, Any]:
    """The audit details of a publish: the set's ``name``, then the entry it published."""
    return {"prompt_set": name, **{key: getattr(result, key) for key in _PUBLISHED}}


def publish_version(
    version: PromptSetVersion,
    channel: Channel,
    *,
    user: User | None,
    **options: Unpack[PublishOptions],
) -> Publication:
    """Publish a stored version to ``channel`` for every active ACCESS_TOKEN: its set's entry
    is replaced (or added); every other set on the channel stays (``options``: see
    :class:`PublishOptions`).

    Raises:
        ForgeError: for a role or status the channel does not take, a project without
            tokens, a bad percentage, a prompt id another set on the channel has, or a store
            failure (then nothing changed).
    """
    project = channel.project
    _check_publish_role(channel, options)
    check_policy(channel, version_status(version))
    if version.prompt_set.project_id != project.id:
        raise ForgeError("This version belongs to another project.", kind=Kind.NOT_FOUND)
    rollout_percent = options.get("rollout_percent")
    if rollout_percent == 100:
        rollout_percent = None
    if rollout_percent is not None and not 1 <= rollout_percent <= 99:
        raise ForgeError(
            "A gradual rollout starts at 1 to 99 percent of instances.", kind=Kind.INVALID
        )
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
            raise ForgeError(
                _clash_sentence(e, f"{name} {version.version}", channel.name, "published")
            ) from e
        except ConfigError as e:
            if rollout_percent is not None and pub.current(channel.name) is None:
                raise ForgeError(
                    f"Channel {channel.name} has nothing published yet, so there is nothing to "
                    "roll out from: publish to all instances first.",
                    kind=Kind.INVALID,
                ) from e
            raise _explain(e, "published") from e
        except AnvilError as e:
            raise _explain(e, "published") from e
    summary = _summary(result, f"{name} {version.version} published")
    publication = _record(
        project, channel, result, kind="publish", user=user, version=version, summary=summary
    )
    details = _published_details(result, name)
    _audit(
        "channel.publish", channel, project, user, **details, recipients=len(keks), changes=summary
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
    prompt_set: PromptSet, channel: Channel, *, user: User, **options: Unpack[PublishOptions]
) -> Publication:
    """Publish a set as it is now: its latest release (LOCKED) or a pre-release snapshot.

    Raises:
        ForgeError: as for :func:`publish_version`; for a LOCKED set without a release.
    """
    from forge_app.services.versions import latest_release

    _check_publish_role(channel, options)
    check_policy(channel, prompt_set.status)
    if prompt_set.status == SetStatus.LOCKED.value:
        version = latest_release(db.session, prompt_set)
        if version is None:
            raise ForgeError(f"Prompt set {prompt_set.name} has no released version.")
    else:
        version = snapshot_prerelease(prompt_set, user=user)
    return publish_version(version, channel, user=user, **options)


def _check_publish_role(channel: Channel, options: PublishOptions) -> None:
    role = options.get("role")
    if role is not None:
        _check_role(role, channel, "publish to")


def publish_confirmed(
    prompt_set: PromptSet,
    version: PromptSetVersion | None,
    channel: Channel,
    *,
    user: User,
    compat_confirmed: bool = False,
    **options: Unpack[PublishOptions],
) -> Publication:
    """A publish from the publish page, the REST API or a scheduled job: publish ``version``
    (None: the set as it is now) unless live instances' calls give compatibility warnings that
    an owner did not confirm (``compat_confirmed``); audit the confirmed warnings with it. The
    caller commits.

    Raises:
        ForgeError: for a role that may not publish to the channel, warnings not confirmed
            (conflict) or confirmed by someone below owner (forbidden), and as
            :func:`publish_version` and :func:`publish_prompt_set` do.
    """
    _check_publish_role(channel, options)
    warnings = confirmed_warnings(version, channel, options.get("role"), compat_confirmed)
    if version is None:
        publication = publish_prompt_set(prompt_set, channel, user=user, **options)
    else:
        publication = publish_version(version, channel, user=user, **options)
    if warnings:
        _audit(
            "channel.publish_compat_confirmed",
            channel,
            channel.project,
            user,
            sequence=publication.sequence,
            version=publication.version,
            warnings=[w.sentence for w in warnings],
        )
    return publication


def clash_for(
    prompt_set: PromptSet, version: PromptSetVersion | None, channel: Channel
) -> str | None:
    """The sentence naming a prompt id that the set (this version, or its draft prompts when
    ``version`` is None) shares with another set on ``channel``; None when there is none or the
    channel cannot be read (the publish itself then says why). Writes nothing.

    Uses :meth:`publisher.Publisher.check_publish`, the same check the publish runs.
    """
    from forge_app.services.drafts import draft_prompts

    project = channel.project
    if version is not None:
        incoming = f"{prompt_set.name} {version.version}"
        try:
            built = _bundle_of(version)
        except ForgeError:
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
    except (AnvilError, ForgeError):
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
