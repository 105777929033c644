"""The prompt set workflow: LIVE → REVIEW → LOCKED (a version) and back, checked on the server.

    >>> version = approve(session, prompt_set, reviewer, role=Role.REVIEWER,
    ...                   expected_revision=prompt_set.revision)      # doctest: +SKIP

Every transition starts with one conditional ``UPDATE … WHERE status = … AND revision = …`` on
the prompt set: it takes the row's write lock and proves nobody changed the set since the user
looked at it, so two concurrent transitions (or an edit racing a submit) cannot both win, on
SQLite or PostgreSQL. Functions add audit events and leave committing to the caller; after a
``ForgeError`` the caller must roll the session back (a transition may have been half done).

Four eyes: every content change (an edit, a restore, an import) goes through
:func:`forge_app.services.drafts.touch_live_set`, which records its author as a contributor of
the set until the next version; neither the submitter nor a contributor may approve
(:func:`four_eyes_problem`). The draft's content lives in :mod:`forge_app.services.drafts`,
the versions in :mod:`forge_app.services.versions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from anvil_client.errors import ValidationError
from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import rows_changed
from forge_app.models import Project, PromptSet, PromptSetVersion, Role, SetStatus, User, utcnow
from forge_app.models.audit import PromptSetContributor
from forge_app.services.drafts import contributor_ids, draft_prompts, replace_prompts
from forge_app.services.versions import (
    BUMPS,
    latest_release,
    new_version,
    next_version,
    snapshot_prompts,
)

__all__ = [
    "Attempt",
    "approve",
    "four_eyes_problem",
    "record_refusal",
    "request_changes",
    "require_role",
    "restore_version",
    "submit",
    "unlock",
    "withdraw",
]


def require_role(
    role: Role, minimum: Role, action: str, *, error: type[ForgeError] = ForgeError
) -> None:
    """Raises: ``error`` (forbidden): if ``role`` is below ``minimum`` (to do ``action``)."""
    if role < minimum:
        raise error(
            f"Only members with the {minimum.label} role or higher can {action}.",
            kind=Kind.FORBIDDEN,
        )


class Attempt(TypedDict):
    """Who tries a transition: their role in the project, and the set's revision they saw
    (``None``: do not check it)."""

    role: Role
    expected_revision: int | None


#: The columns of a submission, cleared when it leaves review.
_NO_SUBMISSION: dict[str, Any] = dict.fromkeys(
    ("pending_version", "pending_bump", "pending_changelog", "submitted_by_id", "submitted_at")
)
#: The columns of a reviewer's comment, cleared by a submit or an unlock.
_NO_COMMENT: dict[str, Any] = dict.fromkeys(
    ("review_comment", "review_comment_by_id", "review_comment_at")
)


@dataclass(frozen=True)
class _Move:
    """One transition of the set: from a status to another, what the user tried to do, its
    audit action, and the columns it clears."""

    before: SetStatus
    after: SetStatus
    what: str
    action: str
    cleared: Mapping[str, Any]


_SUBMIT = _Move(SetStatus.LIVE, SetStatus.REVIEW, "submit", "prompt_set.submit", _NO_COMMENT)
_WITHDRAW = _Move(
    SetStatus.REVIEW,
    SetStatus.LIVE,
    "withdraw the submission",
    "prompt_set.withdraw",
    _NO_SUBMISSION,
)
_APPROVE = _Move(
    SetStatus.REVIEW, SetStatus.LOCKED, "approve", "prompt_set.approve", _NO_SUBMISSION
)
_REQUEST_CHANGES = _Move(
    SetStatus.REVIEW,
    SetStatus.LIVE,
    "request changes",
    "prompt_set.request_changes",
    _NO_SUBMISSION,
)
_UNLOCK = _Move(SetStatus.LOCKED, SetStatus.LIVE, "unlock", "prompt_set.unlock", _NO_COMMENT)


def _claim(
    session: Session,
    prompt_set: PromptSet,
    move: _Move,
    expected_revision: int | None,
    **values: Any,
) -> None:
    """Make ``move`` atomically (setting ``values`` and clearing its columns), or explain why
    it cannot."""
    query = update(PromptSet).where(
        PromptSet.id == prompt_set.id, PromptSet.status == move.before.value
    )
    if expected_revision is not None:
        query = query.where(PromptSet.revision == expected_revision)
    result = session.execute(
        query.values(
            revision=PromptSet.revision + 1, status=move.after.value, **move.cleared, **values
        ).execution_options(synchronize_session=False)
    )
    if rows_changed(result) != 1:
        session.refresh(prompt_set)
        if prompt_set.status != move.before.value:
            raise ForgeError(
                f"Cannot {move.what}: the prompt set is {prompt_set.status} now, not "
                f"{move.before.value}. Reload to see its current state."
            )
        raise ForgeError(
            f"Cannot {move.what}: the prompt set changed since you opened it. "
            "Reload, look at the changes, and try again."
        )
    session.refresh(prompt_set)


def _record(
    session: Session, action: str, prompt_set: PromptSet, user: User, **details: Any
) -> None:
    record_event(
        action,
        prompt_set,
        project=prompt_set.project,
        actor=user,
        details=details or None,
        session=session,
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
    _record(
        session,
        error.refused,
        prompt_set,
        user,
        reason=str(error)[:500],
        version=prompt_set.pending_version,
    )
    return True


def submit(
    session: Session,
    prompt_set: PromptSet,
    user: User,
    *,
    bump: str,
    changelog: str,
    **attempt: Unpack[Attempt],
) -> str:
    """LIVE → REVIEW. Returns the version the set will get when approved.

    Raises:
        ForgeError: for a viewer, an empty or invalid set, no change since the last
            version, or a set that is not LIVE or changed meanwhile.
    """
    require_role(attempt["role"], Role.EDITOR, "submit a prompt set for review")
    if bump not in BUMPS:
        raise ForgeError("Choose patch, minor or major.", kind=Kind.INVALID)
    changelog = changelog.strip()
    if not changelog:
        raise ForgeError(
            "Describe the change in the changelog for the reviewer.", kind=Kind.INVALID
        )
    latest = latest_release(session, prompt_set)
    version = next_version(latest.version if latest else None, bump)
    _claim(
        session,
        prompt_set,
        _SUBMIT,
        attempt["expected_revision"],
        pending_version=version,
        pending_bump=bump,
        pending_changelog=changelog,
        submitted_by_id=user.id,
        submitted_at=utcnow(),
    )
    prompts = draft_prompts(session, prompt_set)
    problem = _content_problem(prompts, prompt_set.project, prompt_set, latest)
    if problem is not None:
        raise ForgeError(problem[0], kind=Kind.INVALID, problems=problem[1])
    _record(
        session,
        _SUBMIT.action,
        prompt_set,
        user,
        version=version,
        bump=bump,
        changelog=changelog[:500],
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


def _back_to_live(
    session: Session, prompt_set: PromptSet, user: User, move: _Move, attempt: Attempt, what: str
) -> None:
    """Make ``move`` (back to LIVE) as an editor, who may ``what``."""
    require_role(attempt["role"], Role.EDITOR, what)
    _claim(session, prompt_set, move, attempt["expected_revision"])
    _record(session, move.action, prompt_set, user)


def withdraw(
    session: Session, prompt_set: PromptSet, user: User, **attempt: Unpack[Attempt]
) -> None:
    """REVIEW → LIVE, by an editor (typically the submitter, to fix something).

    Raises:
        ForgeError: for a viewer, or a set that is not in review.
    """
    _back_to_live(session, prompt_set, user, _WITHDRAW, attempt, "withdraw a submission")


def approve(
    session: Session, prompt_set: PromptSet, user: User, **attempt: Unpack[Attempt]
) -> PromptSetVersion:
    """REVIEW → LOCKED, creating the immutable version (the exact bundle bytes, DESIGN §3).

    Raises:
        ForgeError: for a role below reviewer, the submitter or a contributor approving
            (``refused="prompt_set.approve_refused"``), a set that is not in review or
            changed since the reviewer opened it, or a snapshot that does not validate.
    """
    require_role(attempt["role"], Role.REVIEWER, "approve a prompt set")
    expected_revision = attempt["expected_revision"]
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
    _claim(session, prompt_set, _APPROVE, expected_revision)
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
    _record(
        session,
        _APPROVE.action,
        prompt_set,
        user,
        version=version,
        content_sha256=record.content_sha256,
    )
    return record


def request_changes(
    session: Session,
    prompt_set: PromptSet,
    user: User,
    *,
    comment: str,
    **attempt: Unpack[Attempt],
) -> None:
    """REVIEW → LIVE with the reviewer's comment (shown on the set until the next submit).

    Raises:
        ForgeError: for a role below reviewer, an empty comment, or a set not in review.
    """
    require_role(attempt["role"], Role.REVIEWER, "request changes")
    comment = comment.strip()
    if not comment:
        raise ForgeError("Say what should change, so the editor knows.", kind=Kind.INVALID)
    _claim(
        session,
        prompt_set,
        _REQUEST_CHANGES,
        attempt["expected_revision"],
        review_comment=comment,
        review_comment_by_id=user.id,
        review_comment_at=utcnow(),
    )
    _record(session, _REQUEST_CHANGES.action, prompt_set, user, comment=comment[:500])


def unlock(session: Session, prompt_set: PromptSet, user: User, **attempt: Unpack[Attempt]) -> None:
    """LOCKED → LIVE; its versions stay as they are.

    Raises:
        ForgeError: for a viewer or a set that is not locked.
    """
    _back_to_live(session, prompt_set, user, _UNLOCK, attempt, "unlock a prompt set")


def restore_version(
    session: Session, prompt_set: PromptSet, version: PromptSetVersion, user: User, *, role: Role
) -> dict[str, list[str]]:
    """Replace the LIVE draft's content with a version's snapshot (the version stays as it is).

    Raises:
        ForgeError: for a viewer, or a set that is not LIVE.
    """
    require_role(role, Role.EDITOR, "restore a version")
    summary = replace_prompts(
        session, prompt_set, snapshot_prompts(version), user, remove_missing=True
    )
    _record(
        session,
        "prompt_set.restore",
        prompt_set,
        user,
        version=version.version,
        **{k: len(v) for k, v in summary.items()},
    )
    return summary
