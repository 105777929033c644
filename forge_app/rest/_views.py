"""The REST API v1 views: read what peering needs, write what scripts need.

Every view uses the HTML views' checks (``require_org_role``, ``require_project_role``,
``load_prompt_set``) and calls the same services (``forge_app.services.workflow``, the editor's
``check_draft``, ``forge_app.services.publishing``), so the API can do nothing the FORGE's
pages would refuse.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from flask import g
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from forge_app.audit import record_event
from forge_app.authz import load_prompt_set, require_org_role, require_project_role, signed_in_user
from forge_app.errors import ForgeError, http_status
from forge_app.extensions import db
from forge_app.models import (
    Membership,
    Organisation,
    Project,
    Prompt,
    PromptSet,
    PromptSetVersion,
    Role,
    utcnow,
)
from forge_app.models.distribution import DEFAULT_CHANNELS, POLICIES, Channel
from forge_app.rest import _schemas as s
from forge_app.rest._registry import ApiError, operation, read_body, read_pagination
from forge_app.services.editing import PromptDraft, check_draft, prompt_file_entry
from forge_app.services.workflow import (
    apply_entry,
    approve,
    latest_release,
    request_changes,
    snapshot_prompts,
    submit,
    touch_live_set,
)

__all__: list[str] = []


# ------------------------------------------------------------------------------ reading


@operation(
    "GET", "/orgs", response=s.OrgList, summary="Your organisations", tag="orgs", paginated=True
)
def list_orgs() -> s.OrgList:
    """The organisations the token's user is a member of, with their role."""
    user = signed_in_user()
    page = read_pagination()
    rows = db.session.execute(
        select(Organisation, Membership.role_name)
        .join(Membership, Membership.org_id == Organisation.id)
        .where(Membership.user_id == user.id)
        .order_by(Organisation.name, Organisation.id)
        .offset(page.offset)
        .limit(page.per_page + 1)
    ).all()
    items = [
        s.Org.model_validate({"slug": o.slug, "name": o.name, "role": role})
        for o, role in rows[: page.per_page]
    ]
    return s.OrgList(items=items, next=page.next_url(len(rows) > page.per_page))


@operation("GET", "/orgs/<org_slug>", response=s.Org, summary="One organisation", tag="orgs")
@require_org_role(Role.VIEWER)
def get_org(org: Organisation) -> s.Org:
    return s.Org(slug=org.slug, name=org.name, role=g.role.label)


def _project_summaries(where: Any, offset: int, limit: int) -> list[s.ProjectSummary]:
    set_count = (
        select(func.count(PromptSet.id))
        .where(PromptSet.project_id == Project.id)
        .correlate(Project)
        .scalar_subquery()
    )
    prompt_count = (
        select(func.count(Prompt.id))
        .join(PromptSet, PromptSet.id == Prompt.prompt_set_id)
        .where(PromptSet.project_id == Project.id)
        .correlate(Project)
        .scalar_subquery()
    )
    updated = (
        select(func.max(PromptSet.updated_at))
        .where(PromptSet.project_id == Project.id)
        .correlate(Project)
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(Project, Organisation, set_count, prompt_count, updated)
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
    from datetime import UTC

    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@operation(
    "GET",
    "/orgs/<org_slug>/projects",
    response=s.ProjectList,
    tag="projects",
    summary="An organisation's projects",
    paginated=True,
)
@require_org_role(Role.VIEWER)
def list_projects(org: Organisation) -> s.ProjectList:
    """Projects with their prompt count and when they were last updated."""
    page = read_pagination()
    items = _project_summaries(Project.org_id == org.id, page.offset, page.per_page + 1)
    return s.ProjectList(
        items=items[: page.per_page], next=page.next_url(len(items) > page.per_page)
    )


@operation(
    "GET",
    "/projects/<project_id>",
    response=s.ProjectSummary,
    tag="projects",
    summary="One project",
)
@require_project_role(Role.VIEWER)
def get_project(project: Project) -> s.ProjectSummary:
    return _project_summaries(Project.id == project.id, 0, 1)[0]


def _set_rows(
    project: Project, set_id: uuid.UUID | None, offset: int, limit: int
) -> list[s.PromptSet]:
    prompt_count = (
        select(func.count(Prompt.id))
        .where(Prompt.prompt_set_id == PromptSet.id)
        .correlate(PromptSet)
        .scalar_subquery()
    )
    query = select(PromptSet, prompt_count).where(PromptSet.project_id == project.id)
    if set_id is not None:
        query = query.where(PromptSet.id == set_id)
    rows = db.session.execute(
        query.order_by(PromptSet.name, PromptSet.id).offset(offset).limit(limit)
    ).all()
    out = []
    for prompt_set, count in rows:
        latest = latest_release(db.session, prompt_set)
        out.append(
            s.PromptSet(
                id=prompt_set.id,
                project_id=prompt_set.project_id,
                name=prompt_set.name,
                description=prompt_set.description or "",
                status=prompt_set.status,
                revision=prompt_set.revision,
                current_version=latest.version if latest else None,
                pending_version=prompt_set.pending_version,
                prompt_count=count or 0,
                updated_at=prompt_set.updated_at,
            )
        )
    return out


def _set_model(project: Project, prompt_set: PromptSet) -> s.PromptSet:
    db.session.refresh(prompt_set)
    return _set_rows(project, prompt_set.id, 0, 1)[0]


@operation(
    "GET",
    "/projects/<project_id>/sets",
    response=s.PromptSetList,
    tag="prompt sets",
    summary="A project's prompt sets",
    paginated=True,
)
@require_project_role(Role.VIEWER)
def list_sets(project: Project) -> s.PromptSetList:
    """Prompt sets with their status, revision and current (latest released) version."""
    page = read_pagination()
    items = _set_rows(project, None, page.offset, page.per_page + 1)
    return s.PromptSetList(
        items=items[: page.per_page], next=page.next_url(len(items) > page.per_page)
    )


@operation(
    "GET",
    "/projects/<project_id>/sets/<set_id>",
    response=s.PromptSet,
    tag="prompt sets",
    summary="One prompt set",
)
@require_project_role(Role.VIEWER)
def get_set(project: Project, set_id: str) -> s.PromptSet:
    return _set_model(project, load_prompt_set(project, set_id))


def _version_model(version: PromptSetVersion) -> s.Version:
    return s.Version(
        version=version.version,
        content_sha256=version.content_sha256,
        prompt_count=version.prompt_count,
        changelog=version.changelog or "",
        created_at=version.created_at,
        prerelease=version.is_prerelease,
    )


@operation(
    "GET",
    "/projects/<project_id>/sets/<set_id>/versions",
    response=s.VersionList,
    tag="versions",
    summary="A prompt set's versions, newest first",
    paginated=True,
)
@require_project_role(Role.VIEWER)
def list_versions(project: Project, set_id: str) -> s.VersionList:
    prompt_set = load_prompt_set(project, set_id)
    page = read_pagination()
    rows = list(
        db.session.scalars(
            select(PromptSetVersion)
            .where(PromptSetVersion.prompt_set_id == prompt_set.id)
            .order_by(PromptSetVersion.id.desc())
            .offset(page.offset)
            .limit(page.per_page + 1)
        )
    )
    return s.VersionList(
        items=[_version_model(v) for v in rows[: page.per_page]],
        next=page.next_url(len(rows) > page.per_page),
    )


def _load_version(prompt_set: PromptSet, version: str) -> PromptSetVersion:
    found = db.session.scalar(
        select(PromptSetVersion).where(
            PromptSetVersion.prompt_set_id == prompt_set.id, PromptSetVersion.version == version
        )
    )
    if found is None:
        raise ApiError(404, f"Prompt set {prompt_set.name} has no version {version[:80]!r}.")
    return found


@operation(
    "GET",
    "/projects/<project_id>/sets/<set_id>/versions/<version>",
    response=s.VersionDetail,
    tag="versions",
    summary="One version and its snapshot",
)
@require_project_role(Role.VIEWER)
def get_version(project: Project, set_id: str, version: str) -> s.VersionDetail:
    """The version's exact bundle bytes (``bundle``, whose SHA-256 is ``content_sha256``) and
    its prompts in prompt-file shape."""
    prompt_set = load_prompt_set(project, set_id)
    found = _load_version(prompt_set, version)
    return s.VersionDetail(
        **_version_model(found).model_dump(),
        prompt_set_id=prompt_set.id,
        bundle=found.bundle_json,
        prompts={k: s.PromptEntry(**v) for k, v in snapshot_prompts(found).items()},
    )


def _prompt_model(prompt: Prompt) -> s.Prompt:
    entry = prompt_file_entry(prompt.kind, prompt.template, prompt.messages, prompt.meta or {})
    return s.Prompt(
        key=prompt.key,
        kind=prompt.kind,  # type: ignore[arg-type]
        variables=list(prompt.variables or []),
        revision=prompt.revision,
        updated_at=prompt.updated_at,
        **entry,
    )


@operation(
    "GET",
    "/projects/<project_id>/sets/<set_id>/prompts",
    response=s.PromptList,
    tag="prompts",
    summary="The prompts of a set's draft",
    paginated=True,
)
@require_project_role(Role.VIEWER)
def list_prompts(project: Project, set_id: str) -> s.PromptList:
    prompt_set = load_prompt_set(project, set_id)
    page = read_pagination()
    rows = list(
        db.session.scalars(
            select(Prompt)
            .where(Prompt.prompt_set_id == prompt_set.id)
            .order_by(Prompt.key)
            .offset(page.offset)
            .limit(page.per_page + 1)
        )
    )
    return s.PromptList(
        items=[_prompt_model(p) for p in rows[: page.per_page]],
        next=page.next_url(len(rows) > page.per_page),
    )


def _load_prompt(prompt_set: PromptSet, key: str) -> Prompt:
    prompt = db.session.scalar(
        select(Prompt).where(Prompt.prompt_set_id == prompt_set.id, Prompt.key == key)
    )
    if prompt is None:
        raise ApiError(404, f"Prompt set {prompt_set.name} has no prompt {key[:130]!r}.")
    return prompt


@operation(
    "GET",
    "/projects/<project_id>/sets/<set_id>/prompts/<key>",
    response=s.Prompt,
    tag="prompts",
    summary="One prompt of a set's draft",
)
@require_project_role(Role.VIEWER)
def get_prompt(project: Project, set_id: str, key: str) -> s.Prompt:
    return _prompt_model(_load_prompt(load_prompt_set(project, set_id), key))


def _channel_model(channel: Channel | None, name: str) -> s.Channel:
    from forge_app.services.publishing import latest_publication

    policy = channel.policy if channel is not None else DEFAULT_CHANNELS[name]
    publication = latest_publication(channel) if channel is not None else None
    return s.Channel(
        name=name,
        policy=policy,  # type: ignore[arg-type]
        accepts=list(POLICIES.get(policy, POLICIES["locked"])),  # type: ignore[arg-type]
        sequence=publication.sequence if publication else None,
        published_at=publication.published_at if publication else None,
        serves=_serves(publication.releases if publication else []),
    )


def _serves(releases: list[dict[str, Any]]) -> list[s.ChannelRelease]:
    return [
        s.ChannelRelease(
            prompt_set_id=str(r.get("prompt_set_id", "")),
            name=r.get("name"),
            version=str(r.get("version", "")),
            content_sha256=str(r.get("content_sha256", "")),
        )
        for r in releases
    ]


@operation(
    "GET",
    "/projects/<project_id>/channels",
    response=s.ChannelList,
    tag="channels",
    summary="A project's channels and what each one serves",
)
@require_project_role(Role.VIEWER)
def list_channels(project: Project) -> s.ChannelList:
    """What each channel serves, as the FORGE last published it (one entry per prompt set)."""
    from forge_app.services.publishing import project_channels

    channels = {c.name: c for c in project_channels(project)}
    names = [*[n for n in DEFAULT_CHANNELS if n not in channels], *channels]
    order = list(DEFAULT_CHANNELS)
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    return s.ChannelList(items=[_channel_model(channels.get(n), n) for n in names])


# ------------------------------------------------------------------------------ writing


def _checked_entry(
    key: str, body: s.PromptCreate | s.PromptUpdate
) -> tuple[dict[str, Any], list[str]]:
    """The editor's validation of a prompt-file entry: ``(entry, variables)``.

    Raises:
        ApiError: 400 with every problem the editor would show.
    """
    if (body.template is None) == (body.messages is None):
        raise ApiError(400, "Give exactly one of template (a text prompt) or messages (a chat).")
    entry: dict[str, Any] = {"metadata": dict(body.metadata)}
    if body.messages is not None:
        entry["messages"] = [m.model_dump() for m in body.messages]
    else:
        entry["template"] = body.template
    draft = PromptDraft.from_entry(key, entry)
    checked = check_draft(draft)
    if not checked.ok or checked.entry is None:
        problems = [p.as_json() for p in checked.problems]
        first = checked.problems[0].message if checked.problems else "The prompt is not valid."
        raise ApiError(400, first, code="invalid_prompt", details=problems)
    return checked.entry, checked.variables


def _workflow_error(error: ForgeError) -> ApiError:
    db.session.rollback()
    return ApiError(http_status(error.kind), str(error), details=error.problems or None)


def _require_editable(prompt_set: PromptSet) -> None:
    if not prompt_set.editable:
        raise ApiError(
            409,
            f"This prompt set is {prompt_set.status}, so its prompts cannot be changed.",
            code="not_editable",
        )


@operation(
    "POST",
    "/projects/<project_id>/sets/<set_id>/prompts",
    response=s.Prompt,
    status=201,
    body=s.PromptCreate,
    tag="prompts",
    summary="Create a prompt in a LIVE draft",
)
@require_project_role(Role.EDITOR)
def create_prompt(project: Project, set_id: str) -> s.Prompt:
    """Validated exactly as the editor validates it (template syntax, metadata, the id)."""
    prompt_set = load_prompt_set(project, set_id)
    body = read_body(s.PromptCreate)
    entry, variables = _checked_entry(body.key, body)
    _require_editable(prompt_set)
    taken = f"This prompt set already has a prompt {body.key!r}."
    if db.session.scalar(
        select(Prompt.id).where(Prompt.prompt_set_id == prompt_set.id, Prompt.key == body.key)
    ):
        raise ApiError(409, taken, code="exists")
    user = signed_in_user()
    try:
        touch_live_set(db.session, prompt_set, user)
        prompt = Prompt(prompt_set_id=prompt_set.id, key=body.key, samples={}, created_at=utcnow())
        apply_entry(prompt, entry, variables, user)
        db.session.add(prompt)
        db.session.flush()
        record_event(
            "prompt.create", prompt, project=project, details={"set": prompt_set.name, "via": "api"}
        )
        db.session.commit()
    except ForgeError as e:
        raise _workflow_error(e) from None
    except IntegrityError:
        db.session.rollback()
        raise ApiError(409, taken, code="exists") from None
    return _prompt_model(prompt)


@operation(
    "PUT",
    "/projects/<project_id>/sets/<set_id>/prompts/<key>",
    response=s.Prompt,
    body=s.PromptUpdate,
    tag="prompts",
    summary="Replace a prompt of a LIVE draft",
)
@require_project_role(Role.EDITOR)
def update_prompt(project: Project, set_id: str, key: str) -> s.Prompt:
    """Optimistic, like the editor: send the ``revision`` you read; if someone saved since,
    the answer is 409 with the current revision in ``details`` and nothing is changed."""
    prompt_set = load_prompt_set(project, set_id)
    prompt = _load_prompt(prompt_set, key)
    body = read_body(s.PromptUpdate)
    entry, variables = _checked_entry(key, body)
    _require_editable(prompt_set)
    if body.revision != prompt.revision:
        raise ApiError(
            409,
            f"Someone saved prompt {key} since revision {body.revision}; read it again.",
            code="stale_revision",
            details={"revision": prompt.revision},
        )
    current = prompt_file_entry(prompt.kind, prompt.template, prompt.messages, prompt.meta or {})
    if current == entry:
        return _prompt_model(prompt)
    user = signed_in_user()
    try:
        touch_live_set(db.session, prompt_set, user)
        apply_entry(prompt, entry, variables, user)
        record_event(
            "prompt.update", prompt, project=project, details={"set": prompt_set.name, "via": "api"}
        )
        db.session.commit()
    except ForgeError as e:
        raise _workflow_error(e) from None
    except StaleDataError:
        db.session.rollback()
        raise ApiError(
            409,
            f"Someone saved prompt {key} at the same moment; read it again.",
            code="stale_revision",
        ) from None
    return _prompt_model(prompt)


@operation(
    "POST",
    "/projects/<project_id>/sets/<set_id>/submit",
    response=s.PromptSet,
    body=s.SubmitRequest,
    tag="workflow",
    summary="Submit a LIVE set for review",
)
@require_project_role(Role.EDITOR)
def submit_set(project: Project, set_id: str) -> s.PromptSet:
    prompt_set = load_prompt_set(project, set_id)
    body = read_body(s.SubmitRequest)
    try:
        submit(
            db.session,
            prompt_set,
            signed_in_user(),
            role=g.role,
            bump=body.bump,
            changelog=body.changelog,
            expected_revision=body.revision,
        )
        db.session.commit()
    except ForgeError as e:
        raise _workflow_error(e) from None
    return _set_model(project, prompt_set)


@operation(
    "POST",
    "/projects/<project_id>/sets/<set_id>/approve",
    response=s.Version,
    body=s.ApproveRequest,
    tag="workflow",
    summary="Approve a set in review (four-eyes: not your own submission)",
)
@require_project_role(Role.REVIEWER)
def approve_set(project: Project, set_id: str) -> s.Version:
    """Locks the set and creates its version; the submitter cannot approve their own change."""
    prompt_set = load_prompt_set(project, set_id)
    body = read_body(s.ApproveRequest)
    try:
        version = approve(
            db.session, prompt_set, signed_in_user(), role=g.role, expected_revision=body.revision
        )
        db.session.commit()
    except ForgeError as e:
        raise _workflow_error(e) from None
    except IntegrityError:
        db.session.rollback()
        raise ApiError(409, "Someone approved this prompt set at the same moment.") from None
    return _version_model(version)


@operation(
    "POST",
    "/projects/<project_id>/sets/<set_id>/request-changes",
    response=s.PromptSet,
    body=s.RequestChangesRequest,
    tag="workflow",
    summary="Send a set in review back to its editors",
)
@require_project_role(Role.REVIEWER)
def request_changes_set(project: Project, set_id: str) -> s.PromptSet:
    prompt_set = load_prompt_set(project, set_id)
    body = read_body(s.RequestChangesRequest)
    try:
        request_changes(
            db.session,
            prompt_set,
            signed_in_user(),
            role=g.role,
            comment=body.comment,
            expected_revision=body.revision,
        )
        db.session.commit()
    except ForgeError as e:
        raise _workflow_error(e) from None
    return _set_model(project, prompt_set)


def _channel(project: Project, name: str) -> Channel:
    from forge_app.services import publishing

    found = publishing.get_channel(project, name)
    if found is None and name in DEFAULT_CHANNELS:
        publishing.ensure_default_channels(project)
        found = publishing.get_channel(project, name)
    if found is None:
        raise ApiError(404, f"The project has no channel {name[:40]!r}.")
    return found


def _publication_model(publication: Any, channel: Channel) -> s.Publication:
    return s.Publication(
        channel=channel.name,
        sequence=publication.sequence,
        kind=publication.kind,
        version=publication.version,
        summary=publication.summary or "",
        published_at=publication.published_at,
        serves=_serves(publication.releases),
    )


@operation(
    "POST",
    "/projects/<project_id>/channels/<channel>/publish",
    response=s.Publication,
    body=s.PublishRequest,
    tag="channels",
    errors=(503,),
    summary="Publish a version to a channel (the channel's policy and roles apply)",
)
@require_project_role(Role.VIEWER)
def publish(project: Project, channel: str) -> s.Publication:
    from forge_app.services import publishing

    found = _channel(project, channel)
    body = read_body(s.PublishRequest)
    prompt_set = load_prompt_set(project, body.prompt_set_id)
    version = _load_version(prompt_set, body.version)
    try:
        publication = publishing.publish_version(
            version,
            found,
            user=signed_in_user(),
            role=g.role,
            rollout_percent=body.rollout_percent,
        )
        db.session.commit()
    except ForgeError as e:
        db.session.rollback()
        raise ApiError(http_status(e.kind), str(e), details=e.problems or None) from None
    return _publication_model(publication, found)


@operation(
    "POST",
    "/projects/<project_id>/channels/<channel>/rollback",
    response=s.Publication,
    body=s.RollbackRequest,
    tag="channels",
    errors=(503,),
    summary="Serve an earlier history entry again, as a new sequence",
)
@require_project_role(Role.VIEWER)
def rollback(project: Project, channel: str) -> s.Publication:
    from forge_app.services import publishing

    found = _channel(project, channel)
    body = read_body(s.RollbackRequest)
    try:
        publication = publishing.rollback_to(
            found, body.sequence, user=signed_in_user(), role=g.role
        )
        db.session.commit()
    except ForgeError as e:
        db.session.rollback()
        raise ApiError(http_status(e.kind), str(e), details=e.problems or None) from None
    return _publication_model(publication, found)
