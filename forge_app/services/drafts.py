"""The LIVE draft of a prompt set: its prompts, every content change and who made it.

Every content change (an edit, a restore, an import) goes through :func:`touch_live_set`,
which bumps the set's revision, refuses atomically if the set left LIVE meanwhile and records
its author as a contributor of the set until the next version (the four-eyes rule of
:func:`forge_app.services.workflow.four_eyes_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from anvil_client.errors import ValidationError
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import insert_ignore, rows_changed
from forge_app.models import Prompt, PromptSet, SetStatus, User, utcnow
from forge_app.models.audit import PromptSetContributor
from forge_app.services.editing import prompt_file_entry, search_text_of

__all__ = [
    "apply_entry",
    "contributor_ids",
    "draft_prompts",
    "replace_prompts",
    "touch_live_set",
]


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
    if rows_changed(result) != 1:
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
