"""The review workflow: submit, review, approve, request changes, withdraw, unlock."""

from __future__ import annotations

from collections.abc import Callable

from flask import flash, redirect, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError

from forge_app.authz import load_prompt_set, require_project_role, signed_in_user
from forge_app.blueprints._common import project_page, transition
from forge_app.blueprints.prompt_sets._shared import _expected_revision, _people, _set_url, bp
from forge_app.diffing import diff_prompt_sets
from forge_app.errors import ForgeError, Kind, flash_and_redirect
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, PromptSetVersion, Role, SetStatus
from forge_app.services.drafts import draft_prompts
from forge_app.services.transaction import unit_of_work
from forge_app.services.versions import BUMPS, latest_release, next_version, snapshot_prompts
from forge_app.services.workflow import (
    approve,
    four_eyes_problem,
    record_refusal,
    request_changes,
    submit,
    unlock,
    withdraw,
)


@bp.route("/<uuid:set_id>/submit", methods=["GET", "POST"])
@require_project_role(Role.EDITOR)
def submit_view(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    latest = latest_release(db.session, prompt_set)
    if request.method == "POST":
        if not request.form.get("changelog", "").strip():
            # Checked here as well as by the browser, with the message next to the field.
            return _render_submit(
                project,
                prompt_set,
                latest,
                400,
                errors={"changelog": "Describe the change in the changelog for the reviewer."},
            )
        try:
            version = transition(
                submit,
                prompt_set,
                bump=request.form.get("bump", ""),
                changelog=request.form.get("changelog", ""),
                expected_revision=_expected_revision(),
            )
        except ForgeError as e:
            db.session.refresh(prompt_set)
            live = prompt_set.status == SetStatus.LIVE.value
            if e.kind is Kind.INVALID and live and not e.problems:
                flash(str(e), "error")
                return _render_submit(project, prompt_set, latest, 400)
            return flash_and_redirect(e, _set_url(project, prompt_set))
        flash(f"Submitted for review as {version}. A reviewer can now approve it.", "success")
        return redirect(_set_url(project, prompt_set, "review"))
    if prompt_set.status != SetStatus.LIVE.value:
        flash(
            f"This prompt set is {prompt_set.status}; only a draft (LIVE) can be submitted.", "info"
        )
        return redirect(_set_url(project, prompt_set))
    return _render_submit(project, prompt_set, latest, 200)


def _render_submit(
    project: Project,
    prompt_set: PromptSet,
    latest: PromptSetVersion | None,
    status: int,
    *,
    errors: dict[str, str] | None = None,
) -> ResponseReturnValue:
    current = latest.version if latest else None
    choices = [(bump, next_version(current, bump)) for bump in BUMPS]
    old = snapshot_prompts(latest) if latest else {}
    diff = diff_prompt_sets(old, draft_prompts(db.session, prompt_set))
    return (
        project_page(
            "prompt_sets/submit.html",
            project,
            prompt_set=prompt_set,
            latest=latest,
            choices=choices,
            selected=request.form.get("bump") or ("minor" if latest is None else "patch"),
            changelog=request.form.get("changelog", ""),
            errors=errors or {},
            diff=diff,
        ),
        status,
    )


@bp.get("/<uuid:set_id>/review")
@require_project_role(Role.VIEWER)
def review(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    if prompt_set.status != SetStatus.REVIEW.value:
        flash("This prompt set is not waiting for review.", "info")
        return redirect(_set_url(project, prompt_set))
    latest = latest_release(db.session, prompt_set)
    old = snapshot_prompts(latest) if latest else {}
    diff = diff_prompt_sets(old, draft_prompts(db.session, prompt_set))
    user = signed_in_user()
    return project_page(
        "prompt_sets/review.html",
        project,
        prompt_set=prompt_set,
        latest=latest,
        diff=diff,
        submitter=_people(prompt_set.submitted_by_id).get(prompt_set.submitted_by_id or -1),
        four_eyes=four_eyes_problem(db.session, prompt_set, user),
    )


@bp.post("/<uuid:set_id>/approve")
@require_project_role(Role.REVIEWER)
def approve_view(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    try:
        version = transition(approve, prompt_set, expected_revision=_expected_revision())
    except ForgeError as e:
        # The refusal is on record, apart from the rolled-back attempt.
        unit_of_work(record_refusal, db.session, prompt_set, signed_in_user(), e)
        return flash_and_redirect(e, _set_url(project, prompt_set))
    except IntegrityError:  # a concurrent approval created the same version first
        flash("Someone approved this prompt set at the same moment.", "info")
        return redirect(_set_url(project, prompt_set))
    flash(f"Approved. Version {version.version} is locked and ready to publish.", "success")
    return redirect(_set_url(project, prompt_set, "version", version=version.version))


@bp.post("/<uuid:set_id>/request-changes")
@require_project_role(Role.REVIEWER)
def request_changes_view(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    try:
        transition(
            request_changes,
            prompt_set,
            comment=request.form.get("comment", ""),
            expected_revision=_expected_revision(),
        )
    except ForgeError as e:
        target = _set_url(project, prompt_set, "review")
        if prompt_set.status != SetStatus.REVIEW.value:
            target = _set_url(project, prompt_set)
        return flash_and_redirect(e, target)
    flash("Changes requested. The prompt set is a draft (LIVE) again.", "success")
    return redirect(_set_url(project, prompt_set))


@bp.post("/<uuid:set_id>/withdraw")
@require_project_role(Role.EDITOR)
def withdraw_view(project: Project, set_id: str) -> ResponseReturnValue:
    return _transition(
        project, set_id, withdraw, "Withdrawn from review. You can edit the draft again."
    )


@bp.post("/<uuid:set_id>/unlock")
@require_project_role(Role.EDITOR)
def unlock_view(project: Project, set_id: str) -> ResponseReturnValue:
    return _transition(
        project, set_id, unlock, "Unlocked for editing. Its versions stay exactly as they were."
    )


def _transition(
    project: Project, set_id: str, action: Callable[..., object], done: str
) -> ResponseReturnValue:
    """Run a workflow transition that needs nothing but the expected revision."""
    prompt_set = load_prompt_set(project, set_id)
    try:
        transition(action, prompt_set, expected_revision=_expected_revision())
    except ForgeError as e:
        return flash_and_redirect(e, _set_url(project, prompt_set))
    flash(done, "success")
    return redirect(_set_url(project, prompt_set))
