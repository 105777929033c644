"""Prompt set pages: create, show, settings, delete."""

from __future__ import annotations

from flask import flash, redirect, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from forge_app.authz import load_prompt_set, require_project_role, signed_in_user
from forge_app.blueprints._common import created, posted_by, project_page, saved
from forge_app.blueprints.prompt_sets._shared import _people, _set_url, _versions, bp
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.forms import NameForm
from forge_app.models import Project, Prompt, PromptSetVersion, Role, User
from forge_app.services.naming import create_prompt_set, delete_prompt_set, update_prompt_set


@bp.route("/new", methods=["GET", "POST"])
@require_project_role(Role.EDITOR)
def create(project: Project) -> ResponseReturnValue:
    form = NameForm()
    if (prompt_set := created(form, create_prompt_set, project, user=signed_in_user())) is None:
        return project_page("prompt_sets/create.html", project, form=form)
    flash(f"Prompt set {prompt_set.name} is created. Add its first prompt.", "success")
    return redirect(_set_url(project, prompt_set))


@bp.get("/<uuid:set_id>")
@require_project_role(Role.VIEWER)
def show(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    rows = db.session.execute(
        select(Prompt, User)
        .outerjoin(User, User.id == Prompt.updated_by_id)
        .where(Prompt.prompt_set_id == prompt_set.id)
        .order_by(Prompt.key)
    ).all()
    versions = _versions(prompt_set, limit=5)
    latest = next((v for v in versions if not v.is_prerelease), None)
    people = _people(
        prompt_set.submitted_by_id, prompt_set.review_comment_by_id, prompt_set.updated_by_id
    )
    return project_page(
        "prompt_sets/show.html",
        project,
        prompt_set=prompt_set,
        rows=rows,
        versions=versions,
        latest=latest,
        people=people,
    )


@bp.route("/<uuid:set_id>/settings", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def settings(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    form = NameForm(obj=prompt_set)
    if posted_by(Role.EDITOR) and saved(form, update_prompt_set, prompt_set):
        flash("Prompt set settings are saved.", "success")
        return redirect(_set_url(project, prompt_set))
    has_versions = (
        db.session.scalar(
            select(PromptSetVersion.id).where(PromptSetVersion.prompt_set_id == prompt_set.id)
        )
        is not None
    )
    return project_page(
        "prompt_sets/settings.html",
        project,
        prompt_set=prompt_set,
        form=form,
        has_versions=has_versions,
    )


@bp.post("/<uuid:set_id>/delete")
@require_project_role(Role.OWNER)
def delete(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    try:
        delete_prompt_set(prompt_set)
    except ForgeError as e:
        return flash_and_redirect(e, _set_url(project, prompt_set, "settings"))
    flash(f"Prompt set {prompt_set.name} is deleted.", "success")
    return redirect(url_for("projects.show", project_id=project.id))
