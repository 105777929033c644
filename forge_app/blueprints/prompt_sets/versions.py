"""Versions: the list, one version, a prompt's history, the bundle, restore, diffs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Response, abort, flash, g, redirect, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from forge_app.authz import load_prompt_set, require_project_role, signed_in_user
from forge_app.blueprints._common import project_page
from forge_app.blueprints.prompt_sets._shared import (
    DRAFT,
    _file_stem,
    _load_version,
    _set_url,
    _versions,
    bp,
    set_and_version,
)
from forge_app.diffing import SetDiff, diff_prompt_sets
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, PromptSetVersion, Role, SetStatus
from forge_app.services.drafts import draft_prompts
from forge_app.services.transaction import unit_of_work
from forge_app.services.versions import snapshot_prompts
from forge_app.services.workflow import restore_version


@bp.get("/<uuid:set_id>/versions")
@require_project_role(Role.VIEWER)
def versions(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    return project_page(
        "prompt_sets/versions.html", project, prompt_set=prompt_set, versions=_versions(prompt_set)
    )


@bp.get("/<uuid:set_id>/versions/<version>")
@require_project_role(Role.VIEWER)
def version(project: Project, set_id: str, version: str) -> ResponseReturnValue:
    prompt_set, record = set_and_version(project, set_id, version)
    document = json.loads(record.bundle_json)
    previous = db.session.scalar(
        select(PromptSetVersion.version)
        .where(PromptSetVersion.prompt_set_id == prompt_set.id, PromptSetVersion.id < record.id)
        .order_by(PromptSetVersion.id.desc())
        .limit(1)
    )
    return project_page(
        "prompt_sets/version.html",
        project,
        prompt_set=prompt_set,
        version=record,
        document=document,
        previous=previous,
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
    return project_page(
        "prompt_sets/prompt_history.html",
        project,
        prompt_set=prompt_set,
        key=key,
        changes=changes,
        exists=before is not None,
        capped=len(records) == HISTORY_VERSIONS,
        DRAFT=DRAFT,
    )


@bp.get("/<uuid:set_id>/versions/<version>/bundle.json")
@require_project_role(Role.VIEWER)
def version_bundle(project: Project, set_id: str, version: str) -> ResponseReturnValue:
    """The exact stored bundle bytes (what ``content_sha256`` names)."""
    prompt_set, record = set_and_version(project, set_id, version)
    response = Response(record.bundle_bytes, mimetype="application/json")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{_file_stem(prompt_set)}-{record.version}.bundle.json"'
    )
    response.headers["X-Content-SHA256"] = record.content_sha256
    return response


@bp.post("/<uuid:set_id>/versions/<version>/restore")
@require_project_role(Role.EDITOR)
def restore(project: Project, set_id: str, version: str) -> ResponseReturnValue:
    prompt_set, record = set_and_version(project, set_id, version)
    try:
        summary = unit_of_work(
            restore_version, db.session, prompt_set, record, signed_in_user(), role=g.role
        )
    except ForgeError as e:
        return flash_and_redirect(e, _set_url(project, prompt_set, "version", version=version))
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


@dataclass(frozen=True)
class Comparison:
    """The diff page: the versions to pick from (newest first), the two sides picked (a
    version's name or :data:`DRAFT`; no ``from`` when there is nothing to compare with) and
    their diff."""

    names: list[str]
    from_name: str | None
    to_name: str
    diff: SetDiff


def _compare(prompt_set: PromptSet, asked_from: str | None, asked_to: str | None) -> Comparison:
    """Compare what was asked, by default the newest version with the draft (with the version
    before it for a LOCKED set). A 404 page for a version the set does not have."""
    names = [v.version for v in _versions(prompt_set)]
    default_to = DRAFT if prompt_set.status != SetStatus.LOCKED.value or not names else names[0]
    to_name = asked_to or default_to
    from_name = asked_from or next((n for n in names if n != to_name), None)
    sides: dict[str, dict[str, dict[str, Any]]] = {}
    for side, name in (("from", from_name), ("to", to_name)):
        if name is None:
            sides[side] = {}
        elif name == DRAFT:
            sides[side] = draft_prompts(db.session, prompt_set)
        else:
            sides[side] = snapshot_prompts(_load_version(prompt_set, name))
    return Comparison(names, from_name, to_name, diff_prompt_sets(sides["from"], sides["to"]))


@bp.get("/<uuid:set_id>/diff")
@require_project_role(Role.VIEWER)
def diff(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    page = _compare(prompt_set, request.args.get("from"), request.args.get("to"))
    return project_page(
        "prompt_sets/diff.html", project, prompt_set=prompt_set, page=page, DRAFT=DRAFT
    )
