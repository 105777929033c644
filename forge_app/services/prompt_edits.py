"""Creating, changing and deleting the prompts of a LIVE draft (the editor and the REST API).

Each function takes an entry already checked by :func:`forge_app.services.editing.check_draft`,
records the change on the set (:func:`forge_app.services.drafts.touch_live_set`), audits it and
commits; on failure it rolls back and raises:

- :class:`~forge_app.errors.ForgeError` when the set left LIVE meanwhile;
- :class:`PromptTaken` when another prompt of the set has the id (found first, or a race);
- :class:`PromptChanged` when someone saved the same prompt at the same moment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import Project, Prompt, PromptSet, User, utcnow
from forge_app.services.drafts import apply_entry, replace_prompts, touch_live_set
from forge_app.services.editing import prompt_file_entry

__all__ = [
    "PromptChanged",
    "PromptTaken",
    "create_prompt",
    "delete_prompt",
    "import_prompts",
    "key_taken",
    "update_prompt",
]

Saved = Literal["unchanged", "samples", "saved"]


class PromptTaken(ForgeError):
    """Another prompt of the set has this id."""

    default_kind = Kind.CONFLICT

    def __init__(self, key: str) -> None:
        super().__init__(f"This prompt set already has a prompt {key!r}.")
        self.key = key


class PromptChanged(ForgeError):
    """Someone saved the same prompt at the same moment (nothing was changed)."""

    default_kind = Kind.CONFLICT


def key_taken(prompt_set: PromptSet, key: str) -> bool:
    """Whether the set has a prompt ``key``."""
    query = select(Prompt.id).where(Prompt.prompt_set_id == prompt_set.id, Prompt.key == key)
    return db.session.scalar(query) is not None


@contextmanager
def _committed(key: str) -> Iterator[None]:
    try:
        yield
        db.session.commit()
    except ForgeError:
        db.session.rollback()
        raise
    except StaleDataError:
        db.session.rollback()
        raise PromptChanged(f"Someone saved prompt {key} at the same moment.") from None
    except IntegrityError:
        db.session.rollback()
        raise PromptTaken(key) from None


def _details(prompt_set: PromptSet, via: str | None, **more: Any) -> dict[str, Any]:
    return {"set": prompt_set.name, **more, **({"via": via} if via else {})}


def create_prompt(
    project: Project,
    prompt_set: PromptSet,
    key: str,
    checked: tuple[dict[str, Any], list[str]],
    user: User,
    *,
    samples: dict[str, str] | None = None,
    via: str | None = None,
) -> Prompt:
    """Add prompt ``key`` with the ``checked`` ``(entry, variables)`` to the LIVE draft."""
    with _committed(key):
        touch_live_set(db.session, prompt_set, user)
        prompt = Prompt(
            prompt_set_id=prompt_set.id, key=key, samples=samples or {}, created_at=utcnow()
        )
        apply_entry(prompt, *checked, user)
        db.session.add(prompt)
        db.session.flush()
        record_event("prompt.create", prompt, project=project, details=_details(prompt_set, via))
    return prompt


def update_prompt(
    project: Project,
    prompt_set: PromptSet,
    prompt: Prompt,
    checked: tuple[dict[str, Any], list[str]],
    user: User,
    *,
    key: str | None = None,
    samples: dict[str, str] | None = None,
    via: str | None = None,
) -> Saved:
    """Give ``prompt`` the ``checked`` entry (and the id ``key``, and the sample values
    ``samples``, when given). A change of the entry or the id is a content change, audited;
    new sample values alone are not. Nothing is written when nothing changes."""
    old_key = prompt.key
    new_key = old_key if key is None else key
    current = prompt_file_entry(prompt.kind, prompt.template, prompt.messages, prompt.meta or {})
    changed = current != checked[0] or old_key != new_key
    if not changed and (samples is None or samples == prompt.samples):
        return "unchanged"
    with _committed(new_key):
        if changed:
            touch_live_set(db.session, prompt_set, user)
            prompt.key = new_key
            apply_entry(prompt, *checked, user)
        if samples is not None:
            prompt.samples = samples
        if changed:
            renamed = {"renamed": {"from": old_key, "to": new_key}} if old_key != new_key else {}
            details = _details(prompt_set, via, **renamed)
            record_event("prompt.update", prompt, project=project, details=details)
    return "saved" if changed else "samples"


def delete_prompt(project: Project, prompt_set: PromptSet, prompt: Prompt, user: User) -> None:
    """Remove ``prompt`` from the LIVE draft (it stays in earlier versions)."""
    with _committed(prompt.key):
        touch_live_set(db.session, prompt_set, user)
        record_event("prompt.delete", prompt, project=project, details={"set": prompt_set.name})
        db.session.delete(prompt)


def import_prompts(
    project: Project,
    prompt_set: PromptSet,
    text: str,
    filename: str,
    user: User,
    *,
    replace: bool,
) -> dict[str, list[str]]:
    """Merge the prompts of a prompt file into the LIVE draft (or replace the draft with them:
    prompts missing from the file are removed); audited and committed. Returns the ids
    ``added``, ``changed`` and ``removed``.

    Raises:
        ValidationError: the file's problems (nothing is changed).
        ForgeError: when the set is not LIVE, or with the problems of the prompts.
    """
    from publisher import parse_prompt_file

    parsed = parse_prompt_file(text, filename)
    summary = replace_prompts(db.session, prompt_set, parsed, user, remove_missing=replace)
    record_event(
        "prompt_set.import",
        prompt_set,
        project=project,
        details={
            "file": filename[:100],
            "mode": "replace" if replace else "merge",
            **{k: len(v) for k, v in summary.items()},
        },
    )
    db.session.commit()
    return summary
