"""REST API v1: the prompts of a prompt set's draft (read, create, replace).

Validated exactly as the editor validates them (``check_draft``), written through the same
service calls (``touch_live_set``, ``apply_entry``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from forge_app.authz import signed_in_user
from forge_app.extensions import db
from forge_app.models import Project, Prompt, PromptSet, Role
from forge_app.rest import _schemas as s
from forge_app.rest._registry import (
    ApiError,
    Resource,
    committed,
    found_or_api_404,
    paged,
    read_body,
    require_set_role,
)
from forge_app.services import prompt_edits as edits
from forge_app.services.editing import PromptDraft, check_draft, prompt_file_entry

__all__: list[str] = []

PROMPTS = Resource("prompts", "/projects/<project_id>/sets/<set_id>/prompts")


def _prompt_model(prompt: Prompt) -> s.Prompt:
    entry = prompt_file_entry(prompt.kind, prompt.template, prompt.messages, prompt.meta or {})
    return s.Prompt(
        key=prompt.key,
        kind=prompt.kind,  # type: ignore[arg-type]
        variables=list(prompt.variables or []),
        revision=prompt.revision,
        updated_at=prompt.updated_at,
        **entry,
    )


@PROMPTS.get("", s.PromptList, "The prompts of a set's draft", paginated=True)
@require_set_role(Role.VIEWER)
def list_prompts(project: Project, prompt_set: PromptSet) -> s.PromptList:
    query = select(Prompt).where(Prompt.prompt_set_id == prompt_set.id).order_by(Prompt.key)
    return paged(
        s.PromptList, lambda page: db.session.scalars(page.window(query)).all(), _prompt_model
    )


def _load_prompt(prompt_set: PromptSet, key: str) -> Prompt:
    prompt = db.session.scalar(
        select(Prompt).where(Prompt.prompt_set_id == prompt_set.id, Prompt.key == key)
    )
    return found_or_api_404(prompt, f"Prompt set {prompt_set.name} has no prompt {key[:130]!r}.")


@PROMPTS.get("/<key>", s.Prompt, "One prompt of a set's draft")
@require_set_role(Role.VIEWER)
def get_prompt(project: Project, prompt_set: PromptSet, key: str) -> s.Prompt:
    return _prompt_model(_load_prompt(prompt_set, key))


def _checked_entry(
    key: str, body: s.PromptCreate | s.PromptUpdate
) -> tuple[dict[str, Any], list[str]]:
    """The editor's validation of a prompt-file entry: ``(entry, variables)``.

    Raises:
        ApiError: 400 with every problem the editor would show.
    """
    if (body.template is None) == (body.messages is None):
        raise ApiError(400, "Give exactly one of template (a text prompt) or messages (a chat).")
    entry: dict[str, Any] = {"metadata": dict(body.metadata)}
    if body.messages is not None:
        entry["messages"] = [m.model_dump() for m in body.messages]
    else:
        entry["template"] = body.template
    draft = PromptDraft.from_entry(key, entry)
    checked = check_draft(draft)
    if not checked.ok or checked.entry is None:
        problems = [p.as_json() for p in checked.problems]
        first = checked.problems[0].message if checked.problems else "The prompt is not valid."
        raise ApiError(400, first, code="invalid_prompt", details=problems)
    return checked.entry, checked.variables


def _require_editable(prompt_set: PromptSet) -> None:
    if not prompt_set.editable:
        raise ApiError(
            409,
            f"This prompt set is {prompt_set.status}, so its prompts cannot be changed.",
            code="not_editable",
        )


@PROMPTS.post("", s.Prompt, "Create a prompt in a LIVE draft", body=s.PromptCreate, status=201)
@require_set_role(Role.EDITOR)
def create_prompt(project: Project, prompt_set: PromptSet) -> s.Prompt:
    """Validated exactly as the editor validates it (template syntax, metadata, the id)."""
    body = read_body(s.PromptCreate)
    change = _checked_entry(body.key, body)
    _require_editable(prompt_set)
    taken = ApiError(409, f"This prompt set already has a prompt {body.key!r}.", code="exists")
    if edits.key_taken(prompt_set, body.key):
        raise taken
    prompt = committed(
        lambda: edits.create_prompt(
            project, prompt_set, body.key, change, signed_in_user(), via="api"
        ),
        race=(edits.PromptTaken, taken),
    )
    return _prompt_model(prompt)


@PROMPTS.put("/<key>", s.Prompt, "Replace a prompt of a LIVE draft", body=s.PromptUpdate)
@require_set_role(Role.EDITOR)
def update_prompt(project: Project, prompt_set: PromptSet, key: str) -> s.Prompt:
    """Optimistic, like the editor: send the ``revision`` you read; if someone saved since,
    the answer is 409 with the current revision in ``details`` and nothing is changed."""
    prompt = _load_prompt(prompt_set, key)
    body = read_body(s.PromptUpdate)
    change = _checked_entry(key, body)
    _require_editable(prompt_set)
    if body.revision != prompt.revision:
        raise ApiError(
            409,
            f"Someone saved prompt {key} since revision {body.revision}; read it again.",
            code="stale_revision",
            details={"revision": prompt.revision},
        )
    same_moment = ApiError(
        409, f"Someone saved prompt {key} at the same moment; read it again.", code="stale_revision"
    )
    committed(
        lambda: edits.update_prompt(
            project, prompt_set, prompt, change, signed_in_user(), via="api"
        ),
        race=(edits.PromptChanged, same_moment),
    )
    return _prompt_model(prompt)
