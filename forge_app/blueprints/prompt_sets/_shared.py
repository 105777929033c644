"""The prompt-set blueprint and what its pages share: URLs, the revision a form carries."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, abort, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import defer, joinedload

from forge_app.authz import load_prompt_set
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, PromptSetVersion, User

bp = Blueprint("prompt_sets", __name__, url_prefix="/projects/<uuid:project_id>/sets")


DRAFT = "draft"
MAX_IMPORT_BYTES = 8 * 1024 * 1024


def _set_url(project: Project, prompt_set: PromptSet, endpoint: str = "show", **kw: Any) -> str:
    return url_for(f"prompt_sets.{endpoint}", project_id=project.id, set_id=prompt_set.id, **kw)


def _expected_revision() -> int | None:
    value = request.form.get("revision", "")
    return int(value) if value.isdigit() else None


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


def set_and_version(
    project: Project, set_id: str, version: str
) -> tuple[PromptSet, PromptSetVersion]:
    """The project's prompt set ``set_id`` and its version named ``version`` (404 for
    either missing)."""
    prompt_set = load_prompt_set(project, set_id)
    return prompt_set, _load_version(prompt_set, version)


def _file_stem(prompt_set: PromptSet) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt_set.name.lower()).strip("-") or "prompts"


def version_label(name: str | None) -> str:
    return "the draft (LIVE)" if name == DRAFT else (name or "nothing")


bp.add_app_template_filter(version_label, "version_label")
