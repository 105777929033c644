"""Prompt sets: their prompts, the review workflow, versions, diffs, import and export."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer, joinedload

from anvil_client.errors import ValidationError
from forge_app.audit import record_event
from forge_app.authz import load_prompt_set, require_project_role, signed_in_user
from forge_app.diffing import SetDiff, diff_prompt_sets
from forge_app.extensions import db
from forge_app.forms import PromptSetForm, save_name_and_description
from forge_app.models import (
    Project,
    Prompt,
    PromptSet,
    PromptSetVersion,
    Role,
    SetStatus,
    User,
)
from forge_app.workflow import (
    BUMPS,
    WorkflowError,
    approve,
    draft_prompts,
    four_eyes_problem,
    latest_release,
    next_version,
    record_refusal,
    replace_prompts,
    request_changes,
    restore_version,
    snapshot_prompts,
    submit,
    unlock,
    withdraw,
)

bp = Blueprint("prompt_sets", __name__, url_prefix="/projects/<uuid:project_id>/sets")

DRAFT = "draft"
MAX_IMPORT_BYTES = 8 * 1024 * 1024


def _set_url(project: Project, prompt_set: PromptSet, endpoint: str = "show", **kw: Any) -> str:
    return url_for(f"prompt_sets.{endpoint}", project_id=project.id, set_id=prompt_set.id, **kw)


def _expected_revision() -> int | None:
    value = request.form.get("revision", "")
    return int(value) if value.isdigit() else None


def _workflow_failed(error: WorkflowError, target: str) -> ResponseReturnValue:
    """A rule about who may act is a 403 page; anything the user can fix is a flash + redirect."""
    db.session.rollback()
    if error.status == 403:
        abort(403, str(error))
    flash(str(error), "error")
    for problem in error.problems[:20]:
        flash(problem, "error")
    return redirect(target)


@bp.route("/new", methods=["GET", "POST"])
@require_project_role(Role.EDITOR)
def create(project: Project) -> ResponseReturnValue:
    form = PromptSetForm()
    if form.validate_on_submit():
        name = (form.name.data or "").strip()
        if db.session.scalar(
            select(PromptSet.id).where(PromptSet.project_id == project.id, PromptSet.name == name)
        ):
            form.name.errors = [f"This project already has a prompt set named {name!r}."]
        else:
            user = signed_in_user()
            prompt_set = PromptSet(
                project_id=project.id,
                name=name,
                description=(form.description.data or "").strip(),
                status=SetStatus.LIVE.value,
                revision=1,
                updated_by_id=user.id,
            )
            try:
                db.session.add(prompt_set)
                db.session.flush()
                record_event("prompt_set.create", prompt_set, project=project)
                db.session.commit()
            except IntegrityError:  # created by someone else since the check above
                db.session.rollback()
                form.name.errors = [f"This project already has a prompt set named {name!r}."]
            else:
                flash(f"Prompt set {name} is created. Add its first prompt.", "success")
                return redirect(_set_url(project, prompt_set))
    return render_template("prompt_sets/create.html", project=project, form=form, nav="projects")


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
    return render_template(
        "prompt_sets/show.html",
        project=project,
        prompt_set=prompt_set,
        rows=rows,
        versions=versions,
        latest=latest,
        people=people,
        nav="projects",
    )


def _people(*ids: int | None) -> dict[int, User]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(wanted)))}


def _versions(prompt_set: PromptSet, limit: int | None = None) -> list[PromptSetVersion]:
    query = (
        select(PromptSetVersion)
        .options(
            defer(PromptSetVersion.bundle_json),
            joinedload(PromptSetVersion.submitted_by),
            joinedload(PromptSetVersion.approved_by),
        )
        .where(PromptSetVersion.prompt_set_id == prompt_set.id)
        .order_by(PromptSetVersion.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    return list(db.session.scalars(query))


@bp.route("/<uuid:set_id>/settings", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def settings(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    form = PromptSetForm(obj=prompt_set)
    if request.method == "POST":
        if g.role < Role.EDITOR:
            abort(403)
        if form.validate_on_submit() and save_name_and_description(
            prompt_set,
            form,
            action="prompt_set.update",
            project=project,
            taken="Another prompt set is already named {name!r}.",
        ):
            flash("Prompt set settings are saved.", "success")
            return redirect(_set_url(project, prompt_set))
    has_versions = (
        db.session.scalar(
            select(PromptSetVersion.id).where(PromptSetVersion.prompt_set_id == prompt_set.id)
        )
        is not None
    )
    return render_template(
        "prompt_sets/settings.html",
        project=project,
        prompt_set=prompt_set,
        form=form,
        has_versions=has_versions,
        nav="projects",
    )


@bp.post("/<uuid:set_id>/delete")
@require_project_role(Role.OWNER)
def delete(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    if db.session.scalar(
        select(PromptSetVersion.id).where(PromptSetVersion.prompt_set_id == prompt_set.id)
    ):
        flash(
            "A prompt set with versions cannot be deleted: its versions may be in production.",
            "error",
        )
        return redirect(_set_url(project, prompt_set, "settings"))
    record_event("prompt_set.delete", prompt_set, project=project)
    db.session.delete(prompt_set)
    db.session.commit()
    flash(f"Prompt set {prompt_set.name} is deleted.", "success")
    return redirect(url_for("projects.show", project_id=project.id))


# --- workflow -----------------------------------------------------------------------------


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
            version = submit(
                db.session,
                prompt_set,
                signed_in_user(),
                role=g.role,
                bump=request.form.get("bump", ""),
                changelog=request.form.get("changelog", ""),
                expected_revision=_expected_revision(),
            )
        except WorkflowError as e:
            db.session.rollback()
            db.session.refresh(prompt_set)
            if e.status == 400 and prompt_set.status == SetStatus.LIVE.value and not e.problems:
                flash(str(e), "error")
                return _render_submit(project, prompt_set, latest, 400)
            return _workflow_failed(e, _set_url(project, prompt_set))
        db.session.commit()
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
        render_template(
            "prompt_sets/submit.html",
            project=project,
            prompt_set=prompt_set,
            latest=latest,
            choices=choices,
            selected=request.form.get("bump") or ("minor" if latest is None else "patch"),
            changelog=request.form.get("changelog", ""),
            errors=errors or {},
            diff=diff,
            nav="projects",
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
    return render_template(
        "prompt_sets/review.html",
        project=project,
        prompt_set=prompt_set,
        latest=latest,
        diff=diff,
        submitter=_people(prompt_set.submitted_by_id).get(prompt_set.submitted_by_id or -1),
        four_eyes=four_eyes_problem(db.session, prompt_set, user),
        nav="projects",
    )


@bp.post("/<uuid:set_id>/approve")
@require_project_role(Role.REVIEWER)
def approve_view(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    user = signed_in_user()
    try:
        version = approve(
            db.session, prompt_set, user, role=g.role, expected_revision=_expected_revision()
        )
        db.session.commit()
    except WorkflowError as e:
        db.session.rollback()
        if record_refusal(db.session, prompt_set, user, e):
            db.session.commit()  # the refusal is on record, apart from the rolled-back attempt
        return _workflow_failed(e, _set_url(project, prompt_set))
    except IntegrityError:  # a concurrent approval created the same version first
        db.session.rollback()
        flash("Someone approved this prompt set at the same moment.", "info")
        return redirect(_set_url(project, prompt_set))
    flash(f"Approved. Version {version.version} is locked and ready to publish.", "success")
    return redirect(_set_url(project, prompt_set, "version", version=version.version))


@bp.post("/<uuid:set_id>/request-changes")
@require_project_role(Role.REVIEWER)
def request_changes_view(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    try:
        request_changes(
            db.session,
            prompt_set,
            signed_in_user(),
            role=g.role,
            comment=request.form.get("comment", ""),
            expected_revision=_expected_revision(),
        )
    except WorkflowError as e:
        target = _set_url(project, prompt_set, "review")
        if prompt_set.status != SetStatus.REVIEW.value:
            target = _set_url(project, prompt_set)
        return _workflow_failed(e, target)
    db.session.commit()
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
        action(
            db.session,
            prompt_set,
            signed_in_user(),
            role=g.role,
            expected_revision=_expected_revision(),
        )
    except WorkflowError as e:
        return _workflow_failed(e, _set_url(project, prompt_set))
    db.session.commit()
    flash(done, "success")
    return redirect(_set_url(project, prompt_set))


# --- versions and diffs -------------------------------------------------------------------


@bp.get("/<uuid:set_id>/versions")
@require_project_role(Role.VIEWER)
def versions(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    return render_template(
        "prompt_sets/versions.html",
        project=project,
        prompt_set=prompt_set,
        versions=_versions(prompt_set),
        nav="projects",
    )


def _load_version(prompt_set: PromptSet, version: str) -> PromptSetVersion:
    record = db.session.scalar(
        select(PromptSetVersion)
        .options(
            joinedload(PromptSetVersion.submitted_by), joinedload(PromptSetVersion.approved_by)
        )
        .where(PromptSetVersion.prompt_set_id == prompt_set.id, PromptSetVersion.version == version)
    )
    if record is None:
        abort(404)
    return record


@bp.get("/<uuid:set_id>/versions/<version>")
@require_project_role(Role.VIEWER)
def version(project: Project, set_id: str, version: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    record = _load_version(prompt_set, version)
    document = json.loads(record.bundle_json)
    previous = db.session.scalar(
        select(PromptSetVersion.version)
        .where(PromptSetVersion.prompt_set_id == prompt_set.id, PromptSetVersion.id < record.id)
        .order_by(PromptSetVersion.id.desc())
        .limit(1)
    )
    return render_template(
        "prompt_sets/version.html",
        project=project,
        prompt_set=prompt_set,
        version=record,
        document=document,
        previous=previous,
        nav="projects",
    )


HISTORY_VERSIONS = 200


@dataclass
class PromptChange:
    """One step in a prompt's history: ``label`` (a version or the draft) changed it."""

    label: str
    record: PromptSetVersion | None
    status: str  # "added", "changed" or "removed"
    diff: SetDiff


@bp.get("/<uuid:set_id>/prompts/<key>/history")
@require_project_role(Role.VIEWER)
def prompt_history(project: Project, set_id: str, key: str) -> ResponseReturnValue:
    """Which versions changed one prompt (added, edited, removed it), each with its diff;
    the draft comes first when it differs from the newest version."""
    prompt_set = load_prompt_set(project, set_id)
    records = list(
        db.session.scalars(
            select(PromptSetVersion)
            .options(
                joinedload(PromptSetVersion.submitted_by),
                joinedload(PromptSetVersion.approved_by),
            )
            .where(PromptSetVersion.prompt_set_id == prompt_set.id)
            .order_by(PromptSetVersion.id.desc())
            .limit(HISTORY_VERSIONS)
        )
    )
    records.reverse()
    steps: list[tuple[str, PromptSetVersion | None, dict[str, Any] | None]] = [
        (r.version, r, snapshot_prompts(r).get(key)) for r in records
    ]
    steps.append((DRAFT, None, draft_prompts(db.session, prompt_set).get(key)))
    changes: list[PromptChange] = []
    before: dict[str, Any] | None = None
    for label, record, entry in steps:
        result = diff_prompt_sets(
            {key: before} if before is not None else {}, {key: entry} if entry is not None else {}
        )
        if not result.empty:
            changes.append(PromptChange(label, record, result.prompts[0].status, result))
        before = entry
    if not changes:
        abort(404)
    changes.reverse()
    return render_template(
        "prompt_sets/prompt_history.html",
        project=project,
        prompt_set=prompt_set,
        key=key,
        changes=changes,
        exists=before is not None,
        capped=len(records) == HISTORY_VERSIONS,
        DRAFT=DRAFT,
        nav="projects",
    )


@bp.get("/<uuid:set_id>/versions/<version>/bundle.json")
@require_project_role(Role.VIEWER)
def version_bundle(project: Project, set_id: str, version: str) -> ResponseReturnValue:
    """The exact stored bundle bytes (what ``content_sha256`` names)."""
    prompt_set = load_prompt_set(project, set_id)
    record = _load_version(prompt_set, version)
    response = Response(record.bundle_bytes, mimetype="application/json")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{_file_stem(prompt_set)}-{record.version}.bundle.json"'
    )
    response.headers["X-Content-SHA256"] = record.content_sha256
    return response


@bp.post("/<uuid:set_id>/versions/<version>/restore")
@require_project_role(Role.EDITOR)
def restore(project: Project, set_id: str, version: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    record = _load_version(prompt_set, version)
    try:
        summary = restore_version(db.session, prompt_set, record, signed_in_user(), role=g.role)
    except WorkflowError as e:
        return _workflow_failed(e, _set_url(project, prompt_set, "version", version=version))
    db.session.commit()
    changes = sum(len(v) for v in summary.values())
    if changes:
        flash(
            f"Version {version} is restored into the draft "
            f"({len(summary['added'])} added, {len(summary['changed'])} changed, "
            f"{len(summary['removed'])} removed). Submit it for review to lock it again.",
            "success",
        )
    else:
        flash(f"The draft already matches version {version}.", "info")
    return redirect(_set_url(project, prompt_set))


@bp.get("/<uuid:set_id>/diff")
@require_project_role(Role.VIEWER)
def diff(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    all_versions = _versions(prompt_set)
    names = [v.version for v in all_versions]
    default_to = DRAFT if prompt_set.status != SetStatus.LOCKED.value or not names else names[0]
    to_name = request.args.get("to") or default_to
    from_default = next((n for n in names if n != to_name), None)
    from_name = request.args.get("from") or from_default
    sides: dict[str, dict[str, dict[str, Any]]] = {}
    for side, name in (("from", from_name), ("to", to_name)):
        if name is None:
            sides[side] = {}
        elif name == DRAFT:
            sides[side] = draft_prompts(db.session, prompt_set)
        else:
            sides[side] = snapshot_prompts(_load_version(prompt_set, name))
    result = diff_prompt_sets(sides["from"], sides["to"])
    return render_template(
        "prompt_sets/diff.html",
        project=project,
        prompt_set=prompt_set,
        names=names,
        from_name=from_name,
        to_name=to_name,
        diff=result,
        DRAFT=DRAFT,
        nav="projects",
    )


# --- import and export --------------------------------------------------------------------


def _file_stem(prompt_set: PromptSet) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt_set.name.lower()).strip("-") or "prompts"


def _prompt_file_response(prompts: dict[str, dict[str, Any]], filename: str) -> Response:
    from publisher import dump_prompt_file

    response = Response(dump_prompt_file(prompts), mimetype="application/yaml")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/<uuid:set_id>/export")
@require_project_role(Role.VIEWER)
def export(project: Project, set_id: str) -> ResponseReturnValue:
    """The draft as a prompt file (YAML)."""
    prompt_set = load_prompt_set(project, set_id)
    prompts = draft_prompts(db.session, prompt_set)
    return _prompt_file_response(prompts, f"{_file_stem(prompt_set)}-draft.yaml")


@bp.get("/<uuid:set_id>/versions/<version>/export")
@require_project_role(Role.VIEWER)
def export_version(project: Project, set_id: str, version: str) -> ResponseReturnValue:
    """A version as a prompt file: ``anvil-publish build`` of it gives the same snapshot."""
    prompt_set = load_prompt_set(project, set_id)
    record = _load_version(prompt_set, version)
    return _prompt_file_response(
        snapshot_prompts(record), f"{_file_stem(prompt_set)}-{record.version}.yaml"
    )


@bp.route("/<uuid:set_id>/import", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def import_view(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    problems: list[str] = []
    text = ""
    filename = "pasted.yaml"
    replace = False
    if request.method == "POST":
        if g.role < Role.EDITOR:
            abort(403)
        replace = request.form.get("mode") == "replace"
        upload = request.files.get("file")
        if upload is not None and upload.filename:
            filename = upload.filename.rsplit("/", 1)[-1]
            raw = upload.read(MAX_IMPORT_BYTES + 1)
            if len(raw) > MAX_IMPORT_BYTES:
                problems.append("The file is larger than 8 MiB.")
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    problems.append(f"{filename} is not UTF-8 text.")
        else:
            text = request.form.get("text", "")
            filename = "pasted.json" if text.lstrip().startswith("{") else "pasted.yaml"
        if not problems and not text.strip():
            problems.append("Choose a prompt file or paste its content.")
        if not problems:
            from publisher import parse_prompt_file

            try:
                parsed = parse_prompt_file(text, filename)
                summary = replace_prompts(
                    db.session, prompt_set, parsed, signed_in_user(), remove_missing=replace
                )
            except ValidationError as e:
                problems.extend(e.problems)
            except WorkflowError as e:
                if e.problems:
                    problems.extend(e.problems)
                else:
                    return _workflow_failed(e, _set_url(project, prompt_set))
            else:
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
                flash(
                    f"Imported {filename}: {len(summary['added'])} added, "
                    f"{len(summary['changed'])} changed, {len(summary['removed'])} removed.",
                    "success",
                )
                return redirect(_set_url(project, prompt_set))
    status = 400 if problems else 200
    return (
        render_template(
            "prompt_sets/import.html",
            project=project,
            prompt_set=prompt_set,
            problems=problems,
            text=text if len(text) < 200_000 else "",
            replace=replace,
            nav="projects",
        ),
        status,
    )


def version_label(name: str | None) -> str:
    return "the draft (LIVE)" if name == DRAFT else (name or "nothing")


bp.add_app_template_filter(version_label, "version_label")
