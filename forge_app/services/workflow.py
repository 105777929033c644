"""The prompt set workflow: LIVE → REVIEW → LOCKED (a version) and back, checked on the server.

    >>> version = approve(session, prompt_set, reviewer, role=Role.REVIEWER,
    ...                   expected_revision=prompt_set.revision)      # doctest: +SKIP

Every transition starts with one conditional ``UPDATE … WHERE status = … AND revision = …`` on
the prompt set: it takes the row's write lock and proves nobody changed the set since the user
looked at it, so two concurrent transitions (or an edit racing a submit) cannot both win, on
SQLite or PostgreSQL. Functions add audit events and leave committing to the caller; after a
``ForgeError`` the caller must roll the session back (a transition may have been half done).

Four eyes: every content change (an edit, a restore, an import) goes through
:func:`touch_live_set`, which records its author as a contributor of the set until the next
version; neither the submitter nor a contributor may approve (:func:`four_eyes_problem`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from anvil_client.errors import ValidationError
from anvil_client.wire import SEMVER_RE
from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import insert_ignore
from forge_app.models import (
    Project,
    Prompt,
    PromptSet,
    PromptSetVersion,
    Role,
    SetStatus,
    User,
    utcnow,
)
from forge_app.models.audit import PromptSetContributor
from forge_app.services.editing import prompt_file_entry, search_text_of

__all__ = [
    "BUMPS",
    "approve",
    "contributor_ids",
    "draft_prompts",
    "four_eyes_problem",
    "latest_release",
    "new_version",
    "next_version",
    "record_refusal",
    "replace_prompts",
    "request_changes",
    "restore_version",
    "snapshot_prompts",
    "submit",
    "touch_live_set",
    "unlock",
    "withdraw",
]

BUMPS = ("patch", "minor", "major")


def _require(role: Role, minimum: Role, action: str) -> None:
    if role < minimum:
        raise ForgeError(
            f"Only members with the {minimum.label} role or higher can {action}.",
            kind=Kind.FORBIDDEN,
        )


def _claim(
    session: Session,
    prompt_set: PromptSet,
    *,
    from_status: SetStatus,
    expected_revision: int | None,
    what: str,
    **values: Any,
) -> None:
    """Move the set out of ``from_status`` atomically, or explain why it cannot."""
    query = update(PromptSet).where(
        PromptSet.id == prompt_set.id, PromptSet.status == from_status.value
    )
    if expected_revision is not None:
        query = query.where(PromptSet.revision == expected_revision)
    result = session.execute(
        query.values(revision=PromptSet.revision + 1, **values).execution_options(
            synchronize_session=False
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(prompt_set)
        if prompt_set.status != from_status.value:
            raise ForgeError(
                f"Cannot {what}: the prompt set is {prompt_set.status} now, not "
                f"{from_status.value}. Reload to see its current state."
            )
        raise ForgeError(
            f"Cannot {what}: the prompt set changed since you opened it. "
            "Reload, look at the changes, and try again."
        )
    session.refresh(prompt_set)


def touch_live_set(session: Session, prompt_set: PromptSet, user: User) -> None:
    """Record a content change on a LIVE set (revision, who, when), atomically refusing if the
    set left LIVE meanwhile.

    Raises:
        ForgeError: if the set is not LIVE (it was submitted or locked meanwhile).
    """
    result = session.execute(
        update(PromptSet)
        .where(PromptSet.id == prompt_set.id, PromptSet.status == SetStatus.LIVE.value)
        .values(revision=PromptSet.revision + 1, updated_at=utcnow(), updated_by_id=user.id)
        .execution_options(synchronize_session=False)
    )
    session.expire(prompt_set, ["revision", "updated_at", "updated_by_id"])
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(prompt_set)
        raise ForgeError(
            f"This prompt set is {prompt_set.status} now, so it cannot be edited. "
            + (
                "Unlock it for editing first."
                if prompt_set.status == SetStatus.LOCKED.value
                else "Wait for the review, or withdraw it."
            )
        )
    insert_ignore(
        session,
        PromptSetContributor,
        prompt_set_id=prompt_set.id,
        user_id=user.id,
        since=utcnow(),
    )


def contributor_ids(session: Session, prompt_set: PromptSet) -> set[int]:
    """The users who changed the set's content since its last version."""
    return set(
        session.scalars(
            select(PromptSetContributor.user_id).where(
                PromptSetContributor.prompt_set_id == prompt_set.id
            )
        )
    )


def four_eyes_problem(session: Session, prompt_set: PromptSet, user: User) -> str | None:
    """Why ``user`` may not approve the submission under review, or None if they may."""
    if prompt_set.submitted_by_id == user.id:
        return "You submitted this change, so another reviewer has to approve it."
    if user.id in contributor_ids(session, prompt_set):
        latest = latest_release(session, prompt_set)
        since = f"since version {latest.version}" if latest else "before its first version"
        return (
            f"You changed this prompt set {since} (an edit, a restore or an import), "
            "so another reviewer has to approve it."
        )
    return None


def record_refusal(session: Session, prompt_set: PromptSet, user: User, error: ForgeError) -> bool:
    """After the caller rolled back: add the audit event of a refusal that must be on record
    (``error.refused``); the caller commits. Returns whether there was one."""
    if error.refused is None:
        return False
    record_event(
        error.refused,
        prompt_set,
        project=prompt_set.project,
        actor=user,
        details={"reason": str(error)[:500], "version": prompt_set.pending_version},
        session=session,
    )
    return True


def draft_prompts(session: Session, prompt_set: PromptSet) -> dict[str, dict[str, Any]]:
    """The set's current prompts in prompt-file shape, ordered by id."""
    rows = session.execute(
        select(Prompt.key, Prompt.kind, Prompt.template, Prompt.messages, Prompt.meta)
        .where(Prompt.prompt_set_id == prompt_set.id)
        .order_by(Prompt.key)
    ).all()
    return {
        key: prompt_file_entry(kind, template, messages, meta or {})
        for key, kind, template, messages, meta in rows
    }


def snapshot_prompts(version: PromptSetVersion) -> dict[str, dict[str, Any]]:
    """A version's prompts in prompt-file shape (the bundle's snapshot without ``variables``)."""
    snapshot = json.loads(version.bundle_json)["snapshot"]
    out = {}
    for key, prompt in snapshot.items():
        entry = {k: v for k, v in prompt.items() if k != "variables"}
        entry.setdefault("metadata", {})
        out[key] = entry
    return out


def latest_release(session: Session, prompt_set: PromptSet) -> PromptSetVersion | None:
    """The newest version that is not a pre-release (``-rc.N``/``-dev.N`` are not)."""
    return session.scalar(
        select(PromptSetVersion)
        .where(
            PromptSetVersion.prompt_set_id == prompt_set.id,
            ~PromptSetVersion.version.contains("-"),
        )
        .order_by(PromptSetVersion.id.desc())
        .limit(1)
    )


def next_version(current: str | None, bump: str) -> str:
    """The version after ``current`` (``None``: no version yet, counted from 0.0.0).

    Raises:
        ValueError: for an unknown bump or a ``current`` that is not semver.
    """
    if bump not in BUMPS:
        raise ValueError(f"bump must be one of {', '.join(BUMPS)}")
    major = minor = patch = 0
    if current is not None:
        match = SEMVER_RE.match(current)
        if match is None:
            raise ValueError(f"{current!r} is not a semantic version")
        major, minor, patch = (int(match.group(i)) for i in (1, 2, 3))
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def submit(
    session: Session,
    prompt_set: PromptSet,
    user: User,
    *,
    role: Role,
    bump: str,
    changelog: str,
    expected_revision: int | None,
) -> str:
    """LIVE → REVIEW. Returns the version the set will get when approved.

    Raises:
        ForgeError: for a viewer, an empty or invalid set, no change since the last
            version, or a set that is not LIVE or changed meanwhile.
    """
    _require(role, Role.EDITOR, "submit a prompt set for review")
    if bump not in BUMPS:
        raise ForgeError("Choose patch, minor or major.", kind=Kind.INVALID)
    changelog = changelog.strip()
    if not changelog:
        raise ForgeError(
            "Describe the change in the changelog for the reviewer.", kind=Kind.INVALID
        )
    project = prompt_set.project
    latest = latest_release(session, prompt_set)
    version = next_version(latest.version if latest else None, bump)
    _claim(
        session,
        prompt_set,
        from_status=SetStatus.LIVE,
        expected_revision=expected_revision,
        what="submit",
        status=SetStatus.REVIEW.value,
        pending_version=version,
        pending_bump=bump,
        pending_changelog=changelog,
        submitted_by_id=user.id,
        submitted_at=utcnow(),
        review_comment=None,
        review_comment_by_id=None,
        review_comment_at=None,
    )
    prompts = draft_prompts(session, prompt_set)
    problem = _content_problem(prompts, project, prompt_set, latest)
    if problem is not None:
        raise ForgeError(problem[0], kind=Kind.INVALID, problems=problem[1])
    record_event(
        "prompt_set.submit",
        prompt_set,
        project=project,
        actor=user,
        details={"version": version, "bump": bump, "changelog": changelog[:500]},
        session=session,
    )
    return version


def _content_problem(
    prompts: dict[str, dict[str, Any]],
    project: Project,
    prompt_set: PromptSet,
    latest: PromptSetVersion | None,
) -> tuple[str, list[str]] | None:
    if not prompts:
        return "Add at least one prompt before submitting.", []
    from publisher import validate_prompts

    try:
        validate_prompts(prompts)
    except ValidationError as e:
        return "Some prompts are invalid; fix them before submitting.", e.problems
    if latest is not None and snapshot_prompts(latest) == prompts:
        return f"Nothing changed since version {latest.version}.", []
    return None


def withdraw(
    session: Session,
    prompt_set: PromptSet,
    user: User,
    *,
    role: Role,
    expected_revision: int | None,
) -> None:
    """REVIEW → LIVE, by an editor (typically the submitter, to fix something).

    Raises:
        ForgeError: for a viewer, or a set that is not in review.
    """
    _require(role, Role.EDITOR, "withdraw a submission")
    _claim(
        session,
        prompt_set,
        from_status=SetStatus.REVIEW,
        expected_revision=expected_revision,
        what="withdraw the submission",
        status=SetStatus.LIVE.value,
        **_cleared_submission(),
    )
    record_event(
        "prompt_set.withdraw", prompt_set, project=prompt_set.project, actor=user, session=session
    )


def _cleared_submission() -> dict[str, Any]:
    return {
        "pending_version": None,
        "pending_bump": None,
        "pending_changelog": None,
        "submitted_by_id": None,
        "submitted_at": None,
    }


def approve(
    session: Session,
    prompt_set: PromptSet,
    user: User,
    *,
    role: Role,
    expected_revision: int | None,
) -> PromptSetVersion:
    """REVIEW → LOCKED, creating the immutable version (the exact bundle bytes, DESIGN §3).

    Raises:
        ForgeError: for a role below reviewer, the submitter or a contributor approving
            (``refused="prompt_set.approve_refused"``), a set that is not in review or
            changed since the reviewer opened it, or a snapshot that does not validate.
    """
    _require(role, Role.REVIEWER, "approve a prompt set")
    if expected_revision is None:
        raise ForgeError(
            "Approve from the review page, after looking at the changes.", kind=Kind.INVALID
        )
    problem = four_eyes_problem(session, prompt_set, user)
    if problem is not None:
        raise ForgeError(problem, kind=Kind.FORBIDDEN, refused="prompt_set.approve_refused")
    version = prompt_set.pending_version
    submitted_by_id = prompt_set.submitted_by_id
    changelog = prompt_set.pending_changelog or ""
    _claim(
        session,
        prompt_set,
        from_status=SetStatus.REVIEW,
        expected_revision=expected_revision,
        what="approve",
        status=SetStatus.LOCKED.value,
        **_cleared_submission(),
    )
    if version is None or session.scalar(
        select(PromptSetVersion.id).where(
            PromptSetVersion.prompt_set_id == prompt_set.id, PromptSetVersion.version == version
        )
    ):
        raise ForgeError(f"Version {version} already exists; withdraw and submit again.")
    record = new_version(
        prompt_set,
        draft_prompts(session, prompt_set),
        version,
        invalid="The prompts do not validate; request changes instead.",
        changelog=changelog,
        submitted_by_id=submitted_by_id,
        approved_by_id=user.id,
    )
    session.add(record)
    session.execute(
        delete(PromptSetContributor).where(PromptSetContributor.prompt_set_id == prompt_set.id)
    )
    session.flush()
    record_event(
        "prompt_set.approve",
        prompt_set,
        project=prompt_set.project,
        actor=user,
        details={"version": version, "content_sha256": record.content_sha256},
        session=session,
    )
    return record


def new_version(
    prompt_set: PromptSet,
    prompts: dict[str, dict[str, Any]],
    version: str,
    *,
    invalid: str,
    changelog: str,
    submitted_by_id: int | None,
    approved_by_id: int | None,
) -> PromptSetVersion:
    """A version of ``prompts`` (its bundle built now), not yet added to the session.

    Raises:
        ForgeError: with ``invalid`` and the problems found, if the prompts do not validate.
    """
    from publisher import build_bundle

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
        raise ForgeError(invalid, problems=list(e.problems)) from e
    return PromptSetVersion(
        prompt_set_id=prompt_set.id,
        version=version,
        bundle_json=built.data.decode("utf-8"),
        content_sha256=built.content_sha256,
        prompt_count=built.prompt_count,
        changelog=changelog,
        created_at=created_at,
        submitted_by_id=submitted_by_id,
        approved_by_id=approved_by_id,
    )


def request_changes(
    session: Session,
    prompt_set: PromptSet,
    user: User,
    *,
    role: Role,
    comment: str,
    expected_revision: int | None,
) -> None:
    """REVIEW → LIVE with the reviewer's comment (shown on the set until the next submit).

    Raises:
        ForgeError: for a role below reviewer, an empty comment, or a set not in review.
    """
    _require(role, Role.REVIEWER, "request changes")
    comment = comment.strip()
    if not comment:
        raise ForgeError("Say what should change, so the editor knows.", kind=Kind.INVALID)
    _claim(
        session,
        prompt_set,
        from_status=SetStatus.REVIEW,
        expected_revision=expected_revision,
        what="request changes",
        status=SetStatus.LIVE.value,
        review_comment=comment,
        review_comment_by_id=user.id,
        review_comment_at=utcnow(),
        **_cleared_submission(),
    )
    record_event(
        "prompt_set.request_changes",
        prompt_set,
        project=prompt_set.project,
        actor=user,
        details={"comment": comment[:500]},
        session=session,
    )


def unlock(
    session: Session,
    prompt_set: PromptSet,
    user: User,
    *,
    role: Role,
    expected_revision: int | None,
) -> None:
    """LOCKED → LIVE; its versions stay as they are.

    Raises:
        ForgeError: for a viewer or a set that is not locked.
    """
    _require(role, Role.EDITOR, "unlock a prompt set")
    _claim(
        session,
        prompt_set,
        from_status=SetStatus.LOCKED,
        expected_revision=expected_revision,
        what="unlock",
        status=SetStatus.LIVE.value,
        review_comment=None,
        review_comment_by_id=None,
        review_comment_at=None,
    )
    record_event(
        "prompt_set.unlock", prompt_set, project=prompt_set.project, actor=user, session=session
    )


def replace_prompts(
    session: Session,
    prompt_set: PromptSet,
    prompts: Mapping[str, Mapping[str, Any]],
    user: User,
    *,
    remove_missing: bool,
) -> dict[str, list[str]]:
    """Write validated prompts (prompt-file shape) into a LIVE set's draft.

    Unchanged prompts are left alone (their revision stays); with ``remove_missing`` prompts
    not in ``prompts`` are deleted. Returns the ids ``added``, ``changed`` and ``removed``.

    Raises:
        ForgeError: if the prompts do not validate or the set is not LIVE.
    """
    from publisher import validate_prompts

    try:
        validated = validate_prompts(prompts)
    except ValidationError as e:
        raise ForgeError(
            "The prompts are not valid.", kind=Kind.INVALID, problems=e.problems
        ) from e
    touch_live_set(session, prompt_set, user)
    existing = {
        p.key: p
        for p in session.scalars(select(Prompt).where(Prompt.prompt_set_id == prompt_set.id))
    }
    summary: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    now = utcnow()
    for key, full in validated.items():
        entry = {k: v for k, v in full.items() if k != "variables"}
        prompt = existing.get(key)
        if prompt is None:
            prompt = Prompt(prompt_set_id=prompt_set.id, key=key, samples={}, created_at=now)
            session.add(prompt)
            summary["added"].append(key)
        elif prompt_file_entry(prompt.kind, prompt.template, prompt.messages, prompt.meta) == entry:
            continue
        else:
            summary["changed"].append(key)
        apply_entry(prompt, entry, full["variables"], user)
    if remove_missing:
        gone = sorted(set(existing) - set(validated))
        if gone:
            session.execute(
                delete(Prompt).where(Prompt.prompt_set_id == prompt_set.id, Prompt.key.in_(gone))
            )
        summary["removed"] = gone
    session.flush()
    return summary


def apply_entry(prompt: Prompt, entry: Mapping[str, Any], variables: list[str], user: User) -> None:
    """Copy a checked prompt-file entry onto a ``Prompt`` row."""
    if entry.get("messages") is not None:
        prompt.kind = "chat"
        prompt.template = None
        prompt.messages = [
            {"role": m["role"], "template": m["template"]} for m in entry["messages"]
        ]
    else:
        prompt.kind = "text"
        prompt.template = entry["template"]
        prompt.messages = None
    prompt.meta = dict(entry.get("metadata") or {})
    prompt.variables = list(variables)
    prompt.search_text = search_text_of(prompt.key, entry)
    prompt.updated_at = utcnow()
    prompt.updated_by_id = user.id


def restore_version(
    session: Session, prompt_set: PromptSet, version: PromptSetVersion, user: User, *, role: Role
) -> dict[str, list[str]]:
    """Replace the LIVE draft's content with a version's snapshot (the version stays as it is).

    Raises:
        ForgeError: for a viewer, or a set that is not LIVE.
    """
    _require(role, Role.EDITOR, "restore a version")
    summary = replace_prompts(
        session, prompt_set, snapshot_prompts(version), user, remove_missing=True
    )
    record_event(
        "prompt_set.restore",
        prompt_set,
        project=prompt_set.project,
        actor=user,
        details={"version": version.version, **{k: len(v) for k, v in summary.items()}},
        session=session,
    )
    return summary
