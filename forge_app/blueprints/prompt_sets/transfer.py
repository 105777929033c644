"""Import and export of a set's prompts (YAML files)."""

from __future__ import annotations

from typing import Any

from flask import (
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
)
from flask.typing import ResponseReturnValue

from anvil_client.errors import ValidationError
from forge_app.audit import record_event
from forge_app.authz import load_prompt_set, require_project_role, signed_in_user
from forge_app.blueprints.prompt_sets._shared import (
    MAX_IMPORT_BYTES,
    _file_stem,
    _load_version,
    _set_url,
    bp,
)
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.models import (
    Project,
    Role,
)
from forge_app.services.workflow import (
    draft_prompts,
    replace_prompts,
    snapshot_prompts,
)


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
            except ForgeError as e:
                if e.problems:
                    problems.extend(e.problems)
                else:
                    return flash_and_redirect(e, _set_url(project, prompt_set))
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
