"""Import and export of a set's prompts (YAML files)."""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, request
from flask.typing import ResponseReturnValue

from anvil_client.errors import ValidationError
from forge_app.authz import load_prompt_set, require_project_role, signed_in_user
from forge_app.blueprints._common import posted_by, project_page
from forge_app.blueprints.prompt_sets._shared import (
    MAX_IMPORT_BYTES,
    _file_stem,
    _set_url,
    bp,
    set_and_version,
)
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.models import Project, Role
from forge_app.services.drafts import draft_prompts
from forge_app.services.prompt_edits import import_prompts
from forge_app.services.versions import snapshot_prompts


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
    prompt_set, record = set_and_version(project, set_id, version)
    return _prompt_file_response(
        snapshot_prompts(record), f"{_file_stem(prompt_set)}-{record.version}.yaml"
    )


@bp.route("/<uuid:set_id>/import", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def import_view(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    problems: list[str] = []
    text = ""
    replace = False
    if posted_by(Role.EDITOR):
        replace = request.form.get("mode") == "replace"
        text, filename, problems = _posted_file()
        if not problems:
            try:
                summary = import_prompts(
                    project, prompt_set, text, filename, signed_in_user(), replace=replace
                )
            except ValidationError as e:
                problems.extend(e.problems)
            except ForgeError as e:
                if not e.problems:
                    return flash_and_redirect(e, _set_url(project, prompt_set))
                problems.extend(e.problems)
            else:
                flash(
                    f"Imported {filename}: {len(summary['added'])} added, "
                    f"{len(summary['changed'])} changed, {len(summary['removed'])} removed.",
                    "success",
                )
                return redirect(_set_url(project, prompt_set))
    return (
        project_page(
            "prompt_sets/import.html",
            project,
            prompt_set=prompt_set,
            problems=problems,
            text=text if len(text) < 200_000 else "",
            replace=replace,
        ),
        400 if problems else 200,
    )


def _posted_file() -> tuple[str, str, list[str]]:
    """The posted prompt file (an upload, else the pasted text): its text, its name and the
    problems found reading it."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        text = request.form.get("text", "")
        filename = "pasted.json" if text.lstrip().startswith("{") else "pasted.yaml"
        return text, filename, [] if text.strip() else [_NOTHING]
    filename = upload.filename.rsplit("/", 1)[-1]
    raw = upload.read(MAX_IMPORT_BYTES + 1)
    if len(raw) > MAX_IMPORT_BYTES:
        return "", filename, ["The file is larger than 8 MiB."]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "", filename, [f"{filename} is not UTF-8 text."]
    return text, filename, [] if text.strip() else [_NOTHING]


_NOTHING = "Choose a prompt file or paste its content."
