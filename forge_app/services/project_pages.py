"""The read models of a project's pages (and the REST API's prompt sets): its sets at a glance,
and the search through its prompts.

    set_summaries(project)                   each set with its prompt count and latest release
    search_prompts(project, needle, limit)   the prompts whose text holds ``needle``
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from forge_app.extensions import db
from forge_app.models import Project, Prompt, PromptSet, PromptSetVersion, User
from forge_app.services.versions import IS_RELEASE

__all__ = ["SetSummary", "search_prompts", "set_summaries"]


@dataclass(frozen=True)
class SetSummary:
    """A prompt set with how many prompts its draft has, its latest release (``version``, not
    a pre-release; None before the first) and who changed it last."""

    prompt_set: PromptSet
    prompts: int
    version: str | None
    version_at: datetime | None
    updated_by: User | None


def set_summaries(
    project: Project,
    *,
    set_id: uuid.UUID | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[SetSummary]:
    """The project's sets (only ``set_id``, when given) by name, in one query; the latest
    release is :func:`~forge_app.services.versions.latest_release`'s, for every set at once."""
    prompt_count = (
        select(func.count(Prompt.id))
        .where(Prompt.prompt_set_id == PromptSet.id)
        .correlate(PromptSet)
        .scalar_subquery()
    )
    latest_ids = (
        select(
            PromptSetVersion.prompt_set_id.label("set_id"),
            func.max(PromptSetVersion.id).label("version_id"),
        )
        .where(IS_RELEASE)
        .group_by(PromptSetVersion.prompt_set_id)
        .subquery()
    )
    latest = aliased(PromptSetVersion)
    query = (
        select(PromptSet, prompt_count, latest.version, latest.created_at, User)
        .outerjoin(latest_ids, latest_ids.c.set_id == PromptSet.id)
        .outerjoin(latest, latest.id == latest_ids.c.version_id)
        .outerjoin(User, User.id == PromptSet.updated_by_id)
        .where(PromptSet.project_id == project.id)
    )
    if set_id is not None:
        query = query.where(PromptSet.id == set_id)
    rows = db.session.execute(
        query.order_by(PromptSet.name, PromptSet.id).offset(offset).limit(limit)
    ).all()
    return [
        SetSummary(prompt_set, count or 0, version, version_at, updated_by)
        for prompt_set, count, version, version_at, updated_by in rows
    ]


def search_prompts(project: Project, needle: str, limit: int) -> list[tuple[Prompt, str, str]]:
    """Up to ``limit`` prompts of the project whose text holds ``needle`` (lower case), those
    with it in their id first: each with its set's name and status."""
    rows = db.session.execute(
        select(Prompt, PromptSet.name, PromptSet.status)
        .join(PromptSet, PromptSet.id == Prompt.prompt_set_id)
        .where(
            PromptSet.project_id == project.id,
            Prompt.search_text.contains(needle, autoescape=True),
        )
        .order_by(Prompt.key.contains(needle, autoescape=True).desc(), PromptSet.name, Prompt.key)
        .limit(limit)
    ).all()
    return [(prompt, name, status) for prompt, name, status in rows]
