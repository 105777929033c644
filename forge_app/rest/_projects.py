"""REST API v1: organisations, projects, prompt sets and their versions (reading)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import g
from sqlalchemy import func, select

from forge_app.authz import require_org_role, require_project_role, signed_in_user
from forge_app.extensions import db
from forge_app.models import (
    Membership,
    Organisation,
    Project,
    Prompt,
    PromptSet,
    PromptSetVersion,
    Role,
)
from forge_app.rest import _schemas as s
from forge_app.rest._registry import Resource, found_or_api_404, paged, require_set_role
from forge_app.services.project_pages import set_summaries
from forge_app.services.versions import snapshot_prompts

__all__ = ["load_version", "set_model", "version_model"]

ORGS = Resource("orgs", "/orgs")
PROJECTS = Resource("projects")
SETS = Resource("prompt sets", "/projects/<project_id>/sets")
VERSIONS = Resource("versions", "/projects/<project_id>/sets/<set_id>/versions")


@ORGS.get("", s.OrgList, "Your organisations", paginated=True)
def list_orgs() -> s.OrgList:
    """The organisations the token's user is a member of, with their role."""
    query = (
        select(Organisation, Membership.role_name)
        .join(Membership, Membership.org_id == Organisation.id)
        .where(Membership.user_id == signed_in_user().id)
        .order_by(Organisation.name, Organisation.id)
    )
    return paged(
        s.OrgList,
        lambda page: db.session.execute(page.window(query)).all(),
        lambda row: s.Org.model_validate(
            {"slug": row[0].slug, "name": row[0].name, "role": row[1]}
        ),
    )


def _org_model(row: Any) -> s.Org:
    org, role = row
    return s.Org.model_validate({"slug": org.slug, "name": org.name, "role": role})


@ORGS.get("/<org_slug>", s.Org, "One organisation")
@require_org_role(Role.VIEWER)
def get_org(org: Organisation) -> s.Org:
    return s.Org(slug=org.slug, name=org.name, role=g.role.label)


def _project_summaries(where: Any, offset: int, limit: int) -> list[s.ProjectSummary]:
    of_project = PromptSet.project_id == Project.id
    set_count = select(func.count(PromptSet.id)).where(of_project)
    prompt_count = (
        select(func.count(Prompt.id))
        .join(PromptSet, PromptSet.id == Prompt.prompt_set_id)
        .where(of_project)
    )
    updated = select(func.max(PromptSet.updated_at)).where(of_project)
    rows = db.session.execute(
        select(
            Project,
            Organisation,
            *(q.correlate(Project).scalar_subquery() for q in (set_count, prompt_count, updated)),
        )
        .join(Organisation, Organisation.id == Project.org_id)
        .where(where)
        .order_by(Project.name, Project.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return [
        s.ProjectSummary(
            id=project.id,
            org=org.slug,
            org_name=org.name,
            name=project.name,
            description=project.description or "",
            set_count=sets or 0,
            prompt_count=prompts or 0,
            last_updated=_utc(last) if last is not None else None,
        )
        for project, org, sets, prompts, last in rows
    ]


def _utc(moment: Any) -> datetime:
    """A MAX() over a UTC column comes back naive on SQLite; it is UTC."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@PROJECTS.get(
    "/orgs/<org_slug>/projects", s.ProjectList, "An organisation's projects", paginated=True
)
@require_org_role(Role.VIEWER)
def list_projects(org: Organisation) -> s.ProjectList:
    """Projects with their prompt count and when they were last updated."""
    return paged(
        s.ProjectList,
        lambda page: _project_summaries(Project.org_id == org.id, page.offset, page.per_page + 1),
    )


@PROJECTS.get("/projects/<project_id>", s.ProjectSummary, "One project")
@require_project_role(Role.VIEWER)
def get_project(project: Project) -> s.ProjectSummary:
    return _project_summaries(Project.id == project.id, 0, 1)[0]


def _set_rows(
    project: Project, set_id: uuid.UUID | None, offset: int, limit: int
) -> list[s.PromptSet]:
    return [
        s.PromptSet(
            id=row.prompt_set.id,
            project_id=row.prompt_set.project_id,
            name=row.prompt_set.name,
            description=row.prompt_set.description or "",
            status=row.prompt_set.status,  # type: ignore[arg-type]
            revision=row.prompt_set.revision,
            current_version=row.version,
            pending_version=row.prompt_set.pending_version,
            prompt_count=row.prompts,
            updated_at=row.prompt_set.updated_at,
        )
        for row in set_summaries(project, set_id=set_id, offset=offset, limit=limit)
    ]


def set_model(project: Project, prompt_set: PromptSet) -> s.PromptSet:
    """The API's view of ``prompt_set`` as the database holds it now."""
    db.session.refresh(prompt_set)
    return _set_rows(project, prompt_set.id, 0, 1)[0]


@SETS.get("", s.PromptSetList, "A project's prompt sets", paginated=True)
@require_project_role(Role.VIEWER)
def list_sets(project: Project) -> s.PromptSetList:
    """Prompt sets with their status, revision and current (latest released) version."""
    return paged(
        s.PromptSetList, lambda page: _set_rows(project, None, page.offset, page.per_page + 1)
    )


@SETS.get("/<set_id>", s.PromptSet, "One prompt set")
@require_set_role(Role.VIEWER)
def get_set(project: Project, prompt_set: PromptSet) -> s.PromptSet:
    return set_model(project, prompt_set)


def version_model(version: PromptSetVersion) -> s.Version:
    return s.Version(
        version=version.version,
        content_sha256=version.content_sha256,
        prompt_count=version.prompt_count,
        changelog=version.changelog or "",
        created_at=version.created_at,
        prerelease=version.is_prerelease,
    )


@VERSIONS.get("", s.VersionList, "A prompt set's versions, newest first", paginated=True)
@require_set_role(Role.VIEWER)
def list_versions(project: Project, prompt_set: PromptSet) -> s.VersionList:
    query = (
        select(PromptSetVersion)
        .where(PromptSetVersion.prompt_set_id == prompt_set.id)
        .order_by(PromptSetVersion.id.desc())
    )
    return paged(
        s.VersionList, lambda page: db.session.scalars(page.window(query)).all(), version_model
    )


def load_version(prompt_set: PromptSet, version: str) -> PromptSetVersion:
    """The set's version by its name; an API 404 when it has none."""
    found = db.session.scalar(
        select(PromptSetVersion).where(
            PromptSetVersion.prompt_set_id == prompt_set.id, PromptSetVersion.version == version
        )
    )
    return found_or_api_404(found, f"Prompt set {prompt_set.name} has no version {version[:80]!r}.")


@VERSIONS.get("/<version>", s.VersionDetail, "One version and its snapshot")
@require_set_role(Role.VIEWER)
def get_version(project: Project, prompt_set: PromptSet, version: str) -> s.VersionDetail:
    """The version's exact bundle bytes (``bundle``, whose SHA-256 is ``content_sha256``) and
    its prompts in prompt-file shape."""
    found = load_version(prompt_set, version)
    return s.VersionDetail(
        **version_model(found).model_dump(),
        prompt_set_id=prompt_set.id,
        bundle=found.bundle_json,
        prompts={k: s.PromptEntry(**v) for k, v in snapshot_prompts(found).items()},
    )
