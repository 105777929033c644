"""The prompt editor: text and chat prompts, metadata, validation at the line, live preview.

Saving is optimistic: the form carries the prompt's ``revision``; if someone else saved in the
meantime the save is refused, the editor's text is kept on the page, and the other version is
shown next to it. Nothing is ever overwritten silently.

Previews are bounded (settings of :mod:`forge_app.config`): each user may ask
``FORGE_PREVIEW_LIMIT`` previews per ``FORGE_PREVIEW_WINDOW`` seconds (default 120 a minute),
and each server process runs at most ``FORGE_PREVIEW_CONCURRENCY`` forked previews at once
(default 4). Beyond either, the preview endpoint answers 429 with ``Retry-After`` and a JSON
error, and the editor page shows its preview as busy.
"""

from __future__ import annotations

import math
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from forge_app.authz import load_prompt_set, require_project_role, signed_in_user
from forge_app.blueprints._common import project_page
from forge_app.config import ForgeSettings
from forge_app.diffing import diff_prompt_sets
from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.isolation import IsolationBusy, Slots
from forge_app.models import Project, Prompt, PromptSet, Role, SetStatus, User
from forge_app.services.editing import (
    MessageDraft,
    Problem,
    PromptDraft,
    check_draft,
    prompt_file_entry,
)
from forge_app.services.heartbeat_limits import SlidingWindowLimiter
from forge_app.services.previews import Preview, render_preview
from forge_app.services.prompt_edits import (
    PromptChanged,
    PromptTaken,
    create_prompt,
    delete_prompt,
    key_taken,
    update_prompt,
)

bp = Blueprint(
    "prompts", __name__, url_prefix="/projects/<uuid:project_id>/sets/<uuid:set_id>/prompts"
)

MAX_SAMPLE_CHARS = 10_000
_LIMITER_KEY = "anvil.preview_limiter"
_SLOTS_KEY = "anvil.preview_slots"


def preview_limiter(app: Flask) -> SlidingWindowLimiter:
    """The app's per-user preview limiter, made on first use from its settings."""
    limiter = app.extensions.get(_LIMITER_KEY)
    if limiter is None:
        settings: ForgeSettings = app.config["FORGE_SETTINGS"]
        limiter = app.extensions[_LIMITER_KEY] = SlidingWindowLimiter(
            settings.preview_limit, settings.preview_window
        )
    assert isinstance(limiter, SlidingWindowLimiter)
    return limiter


def preview_slots(app: Flask) -> Slots:
    """How many forked previews this process may run at once."""
    slots = app.extensions.get(_SLOTS_KEY)
    if slots is None:
        settings: ForgeSettings = app.config["FORGE_SETTINGS"]
        slots = app.extensions[_SLOTS_KEY] = Slots(settings.preview_concurrency)
    assert isinstance(slots, Slots)
    return slots


def _page_preview(draft: PromptDraft) -> Preview:
    try:
        return render_preview(draft, slots=preview_slots(current_app))
    except IsolationBusy:
        message = "The preview is busy right now; it shows again when you reload the page."
        return Preview([], [], [], [Problem("preview", message)])


def _too_many(message: str, retry_after: float) -> ResponseReturnValue:
    response = jsonify(error=message)
    response.status_code = 429
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    response.headers["Cache-Control"] = "no-store"
    return response


def _entry(prompt: Prompt) -> dict[str, Any]:
    return prompt_file_entry(prompt.kind, prompt.template, prompt.messages, prompt.meta)


def _load_prompt(prompt_set: PromptSet, key: str) -> Prompt:
    prompt = db.session.scalar(
        select(Prompt).where(Prompt.prompt_set_id == prompt_set.id, Prompt.key == key)
    )
    if prompt is None:
        abort(404)
    return prompt


def _render(
    project: Project,
    prompt_set: PromptSet,
    draft: PromptDraft,
    *,
    prompt: Prompt | None,
    problems: list[Problem] | None = None,
    conflict: dict[str, Any] | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    editable = prompt_set.editable and g.role >= Role.EDITOR
    preview = _page_preview(draft)
    by_field: dict[str, list[Problem]] = {}
    for problem in problems or []:
        by_field.setdefault(problem.field, []).append(problem)
    updated_by = (
        db.session.get(User, prompt.updated_by_id) if prompt and prompt.updated_by_id else None
    )
    return (
        project_page(
            "prompts/edit.html",
            project,
            prompt_set=prompt_set,
            prompt=prompt,
            draft=draft,
            preview=preview,
            problems=problems or [],
            by_field=by_field,
            conflict=conflict,
            editable=editable,
            updated_by=updated_by,
        ),
        status,
    )


def _form_draft() -> tuple[PromptDraft, str]:
    draft = PromptDraft.from_form(request.form)
    draft.samples = {k: v[:MAX_SAMPLE_CHARS] for k, v in list(draft.samples.items())[:200]}
    action = request.form.get("action", "save")
    if action == "add_message":
        rows = draft.messages or []
        last_role = rows[-1].role if rows else "system"
        draft.messages = [
            *rows,
            MessageDraft("assistant" if last_role == "user" else "user", ""),
        ]
        draft.kind = "chat"
    return draft, action


@bp.route("/new", methods=["GET", "POST"])
@require_project_role(Role.EDITOR)
def new(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    if not prompt_set.editable:
        flash(_not_editable(prompt_set), "error")
        return redirect(url_for("prompt_sets.show", project_id=project.id, set_id=prompt_set.id))
    if request.method == "GET":
        kind = "chat" if request.args.get("kind") == "chat" else "text"
        return _render(project, prompt_set, PromptDraft(kind=kind), prompt=None)
    draft, action = _form_draft()
    if action != "save":
        return _render(project, prompt_set, draft, prompt=None)
    checked = check_draft(draft)
    problems = list(checked.problems)
    if draft.key and key_taken(prompt_set, draft.key):
        problems.append(Problem("key", _taken(draft.key)))
    if problems or checked.entry is None:
        return _render(project, prompt_set, draft, prompt=None, problems=problems, status=400)
    try:
        prompt = create_prompt(
            project,
            prompt_set,
            draft.key,
            (checked.entry, checked.variables),
            signed_in_user(),
            samples=_kept_samples(draft, checked.variables),
        )
    except PromptTaken:  # someone created the same prompt id since the check above
        problem = Problem("key", _taken(draft.key))
        return _render(project, prompt_set, draft, prompt=None, problems=[problem], status=409)
    except ForgeError as e:
        problem = Problem("prompt", str(e))
        return _render(project, prompt_set, draft, prompt=None, problems=[problem], status=409)
    flash(f"Prompt {prompt.key} is saved.", "success")
    return redirect(_edit_url(project, prompt_set, prompt.key))


def _taken(key: str) -> str:
    return f"This prompt set already has a prompt {key!r}. Your text is kept: choose another id."


def _edit_url(project: Project, prompt_set: PromptSet, key: str) -> str:
    return url_for("prompts.edit", project_id=project.id, set_id=prompt_set.id, key=key)


def _kept_samples(draft: PromptDraft, variables: list[str]) -> dict[str, str]:
    return {name: draft.samples[name] for name in variables if name in draft.samples}


def _not_editable(prompt_set: PromptSet) -> str:
    if prompt_set.status == SetStatus.REVIEW.value:
        return "This prompt set is in review, so it is read-only until it is approved or sent back."
    return "This prompt set is locked. Unlock it for editing to change its prompts."


@bp.route("/<key>", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def edit(project: Project, set_id: str, key: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    prompt = _load_prompt(prompt_set, key)
    if request.method == "GET":
        return _render(project, prompt_set, _stored_draft(prompt), prompt=prompt)
    if g.role < Role.EDITOR:
        if request.form.get("action") != "preview":
            abort(403)
        # A viewer may try sample values (the page without JavaScript posts them): the stored
        # prompt is previewed with them, and nothing is stored.
        samples = PromptDraft.from_form(request.form).samples
        draft = _stored_draft(prompt, samples)
        return _render(project, prompt_set, draft, prompt=prompt)
    draft, action = _form_draft()
    if action != "save":
        return _render(project, prompt_set, draft, prompt=prompt)
    if not prompt_set.editable:
        problem = Problem("prompt", _not_editable(prompt_set) + " Your text is kept below.")
        return _render(project, prompt_set, draft, prompt=prompt, problems=[problem], status=409)
    if draft.revision != prompt.revision:
        return _conflict(project, prompt_set, prompt, draft)
    return _save(project, prompt_set, prompt, draft)


def _stored_draft(prompt: Prompt, samples: dict[str, str] | None = None) -> PromptDraft:
    """The stored prompt as a draft, with its sample values or the ``samples`` given."""
    if samples is not None:
        samples = {k: v[:MAX_SAMPLE_CHARS] for k, v in list(samples.items())[:200]}
    return PromptDraft.from_entry(
        prompt.key,
        _entry(prompt),
        samples=prompt.samples if samples is None else samples,
        revision=prompt.revision,
    )


def _save(
    project: Project, prompt_set: PromptSet, prompt: Prompt, draft: PromptDraft
) -> ResponseReturnValue:
    """Check and save an editor's draft of ``prompt`` (its text, id and sample values)."""
    checked = check_draft(draft)
    problems = list(checked.problems)
    if draft.key != prompt.key and key_taken(prompt_set, draft.key):
        problems.append(Problem("key", _taken(draft.key)))
    if problems or checked.entry is None:
        return _render(project, prompt_set, draft, prompt=prompt, problems=problems, status=400)
    old_key = prompt.key
    try:
        saved = update_prompt(
            project,
            prompt_set,
            prompt,
            (checked.entry, checked.variables),
            signed_in_user(),
            key=draft.key,
            samples=_kept_samples(draft, checked.variables),
        )
    except PromptChanged:
        return _conflict(project, prompt_set, _load_prompt(prompt_set, old_key), draft)
    except PromptTaken:  # the new id was taken by someone else since the check above
        problem = Problem("key", _taken(draft.key))
        stored = _load_prompt(prompt_set, old_key)
        return _render(project, prompt_set, draft, prompt=stored, problems=[problem], status=409)
    except ForgeError as e:
        problem = Problem("prompt", str(e) + " Your text is kept below.")
        return _render(project, prompt_set, draft, prompt=prompt, problems=[problem], status=409)
    if saved == "unchanged":
        flash("No changes to save.", "info")
    else:
        done = f"Prompt {prompt.key} is saved." if saved == "saved" else "Sample values are saved."
        flash(done, "success")
    return redirect(_edit_url(project, prompt_set, prompt.key))


def _conflict(
    project: Project, prompt_set: PromptSet, prompt: Prompt, draft: PromptDraft
) -> ResponseReturnValue:
    """Someone saved first: keep this editor's text, show theirs, and let them decide."""
    db.session.refresh(prompt)
    other = db.session.get(User, prompt.updated_by_id) if prompt.updated_by_id else None
    checked = check_draft(draft)
    mine = checked.entry or {"template": draft.template, "metadata": {}}
    diff = diff_prompt_sets({prompt.key: _entry(prompt)}, {prompt.key: mine})
    conflict = {"by": other, "at": prompt.updated_at, "diff": diff, "revision": prompt.revision}
    # Saving again from this page overwrites deliberately: the form now carries their revision.
    draft.revision = prompt.revision
    message = (
        f"{other.display_name if other else 'Someone'} saved this prompt while you were editing. "
        "Your changes are not saved yet: they are kept in the form below. Compare them with the "
        "saved version, then save again to replace it."
    )
    return _render(
        project,
        prompt_set,
        draft,
        prompt=prompt,
        problems=[Problem("prompt", message)],
        conflict=conflict,
        status=409,
    )


@bp.post("/<key>/delete")
@require_project_role(Role.EDITOR)
def delete(project: Project, set_id: str, key: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    prompt = _load_prompt(prompt_set, key)
    try:
        delete_prompt(project, prompt_set, prompt, signed_in_user())
    except ForgeError as e:
        flash(str(e), "error")
        return redirect(_edit_url(project, prompt_set, key))
    flash(f"Prompt {key} is deleted. It stays in earlier versions.", "success")
    return redirect(url_for("prompt_sets.show", project_id=project.id, set_id=prompt_set.id))


@bp.post("/preview")
@require_project_role(Role.VIEWER)
def preview(project: Project, set_id: str) -> ResponseReturnValue:
    """Validate and render a draft with sample values (JSON in, JSON out; CSRF header)."""
    load_prompt_set(project, set_id)
    wait = preview_limiter(current_app).hit(signed_in_user().id)
    if wait:
        return _too_many("Too many previews; wait a moment before the next one.", wait)
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify(error="Send a JSON object."), 400
    form: dict[str, str] = {
        "key": str(data.get("key", "")),
        "kind": str(data.get("kind", "text")),
        "template": str(data.get("template", "")),
    }
    messages = data.get("messages") or []
    if isinstance(messages, list):
        for index, message in enumerate(messages[:100]):
            if isinstance(message, dict):
                form[f"messages-{index}-role"] = str(message.get("role", "user"))
                form[f"messages-{index}-template"] = str(message.get("template", ""))
    samples = data.get("samples") or {}
    if isinstance(samples, dict):
        for name, value in list(samples.items())[:200]:
            form[f"sample-{name}"] = str(value)[:MAX_SAMPLE_CHARS]
    draft = PromptDraft.from_form(form)
    try:
        preview = render_preview(draft, slots=preview_slots(current_app))
    except IsolationBusy as e:
        return _too_many(f"The FORGE is busy: {e}.", e.retry_after)
    return jsonify(preview.as_json())
