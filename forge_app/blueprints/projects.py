"""Projects: the list across your organisations, one project's prompt sets, settings,
audit log and search."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape
from sqlalchemy import select

from forge_app.audit import ACTION_LABELS, AuditFilter, event_links, filter_choices, project_events
from forge_app.authz import require_org_role, require_project_role, signed_in_user
from forge_app.blueprints._common import count_per, created, posted_by, project_page, saved
from forge_app.extensions import db
from forge_app.forms import NameForm
from forge_app.models import AuditEvent, Membership, Organisation, Project, Prompt, PromptSet, Role
from forge_app.services.naming import create_project, update_project
from forge_app.services.project_pages import search_prompts, set_summaries

bp = Blueprint("projects", __name__, url_prefix="/projects")

SEARCH_LIMIT = 100


@bp.get("/")
def index() -> ResponseReturnValue:
    user = signed_in_user()
    set_count = count_per(PromptSet.id, PromptSet.project_id == Project.id, Project)
    rows = db.session.execute(
        select(Project, Organisation, Membership.role_name, set_count)
        .join(Organisation, Organisation.id == Project.org_id)
        .join(Membership, (Membership.org_id == Project.org_id) & (Membership.user_id == user.id))
        .order_by(Organisation.name, Project.name)
    ).all()
    owned_orgs = db.session.scalars(
        select(Organisation)
        .join(Membership, Membership.org_id == Organisation.id)
        .where(Membership.user_id == user.id, Membership.role_name == Role.OWNER.label)
        .order_by(Organisation.name)
    ).all()
    groups: dict[int, dict[str, Any]] = {}
    for project, org, role_name, sets in rows:
        group = groups.setdefault(org.id, {"org": org, "role": role_name, "projects": []})
        group["projects"].append({"project": project, "sets": sets})
    return render_template(
        "projects/index.html", groups=list(groups.values()), owned_orgs=owned_orgs, nav="projects"
    )


@bp.route("/new/<org_slug>", methods=["GET", "POST"])
@require_org_role(Role.OWNER)
def create(org: Organisation) -> ResponseReturnValue:
    form = NameForm()
    if (project := created(form, create_project, org, user=signed_in_user())) is None:
        return render_template("projects/create.html", form=form, org=org, nav="projects")
    flash(f"Project {project.name} is created. Add a prompt set to start.", "success")
    return redirect(url_for("projects.show", project_id=project.id))


@bp.get("/<uuid:project_id>")
@require_project_role(Role.VIEWER)
def show(project: Project) -> ResponseReturnValue:
    return project_page(
        "projects/show.html",
        project,
        sets=set_summaries(project),
        channels=_channels_overview(project),
    )


def _channels_overview(project: Project) -> list[dict[str, Any]]:
    """Each channel with what it serves, per set, as the FORGE last published it (no store
    read: the overview stays fast and works while the store is down)."""
    from forge_app.services import publishing

    publishing.ensure_default_channels(project)
    names = {
        str(s.id): s.name
        for s in db.session.scalars(select(PromptSet).where(PromptSet.project_id == project.id))
    }
    rows = []
    for channel in publishing.project_channels(project):
        last = publishing.latest_publication(channel)
        entries = [
            {**entry, "label": names.get(str(entry.get("prompt_set_id"))) or entry.get("name")}
            for entry in (last.releases if last is not None else [])
        ]
        rows.append({"channel": channel, "last": last, "entries": entries})
    return rows


@bp.route("/<uuid:project_id>/settings", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def settings(project: Project) -> ResponseReturnValue:
    form = NameForm(obj=project)
    if posted_by(Role.OWNER) and saved(form, update_project, project):
        flash("Project settings are saved.", "success")
        return redirect(url_for("projects.settings", project_id=project.id))
    return project_page("projects/settings.html", project, tab="settings", form=form)


@bp.get("/<uuid:project_id>/audit")
@require_project_role(Role.VIEWER)
def audit(project: Project) -> ResponseReturnValue:
    """The project's log, newest first: filtered by actor, action, object and dates, a page
    at a time (``before`` = the last event id seen), each entry linked to its object."""
    from flask import current_app

    before = request.args.get("before", type=int)
    filters = AuditFilter.from_args(request.args)
    page_size = current_app.config["FORGE_PAGE_SIZE"]
    if filters.errors:
        events: list[AuditEvent] = []
        more = False
    else:
        events = project_events(project, before=before, limit=page_size + 1, filters=filters)
        more = len(events) > page_size
        events = events[:page_size]
    actors, actions = filter_choices(project)
    return (
        project_page(
            "projects/audit.html",
            project,
            tab="audit",
            events=events,
            next_before=events[-1].id if more and events else None,
            filters=filters,
            actors=actors,
            actions=actions,
            families=sorted({a.split(".")[0] for a in actions}),
            links=event_links(project, events),
            labels=ACTION_LABELS,
        ),
        400 if filters.errors else 200,
    )


@bp.get("/<uuid:project_id>/search")
@require_project_role(Role.VIEWER)
def search(project: Project) -> ResponseReturnValue:
    query = (request.args.get("q") or "").strip()[:200]
    results: list[dict[str, Any]] = []
    truncated = False
    if query:
        needle = query.lower()
        rows = search_prompts(project, needle, SEARCH_LIMIT + 1)
        truncated = len(rows) > SEARCH_LIMIT
        for prompt, set_name, status in rows[:SEARCH_LIMIT]:
            results.append(
                {
                    "prompt": prompt,
                    "set_name": set_name,
                    "status": status,
                    "key": highlight(prompt.key, needle),
                    "snippet": snippet(prompt, needle),
                }
            )
    return project_page(
        "projects/search.html",
        project,
        tab="search",
        query=query,
        results=results,
        truncated=truncated,
        limit=SEARCH_LIMIT,
    )


def highlight(text: str, needle: str) -> Markup:
    """``text`` with every case-insensitive occurrence of ``needle`` in ``<mark>``."""
    if not needle:
        return escape(text)
    lower = text.lower()
    out: list[Markup] = []
    start = 0
    while True:
        found = lower.find(needle, start)
        if found < 0:
            break
        out.append(escape(text[start:found]))
        out.append(Markup("<mark>{}</mark>").format(text[found : found + len(needle)]))
        start = found + len(needle)
    out.append(escape(text[start:]))
    return Markup("").join(out)


def snippet(prompt: Prompt, needle: str, width: int = 80) -> Markup:
    """The first line of the prompt's text that contains ``needle``, shortened around it."""
    texts = (
        [prompt.template or ""]
        if prompt.kind == "text"
        else [m.get("template", "") for m in prompt.messages or []]
    )
    texts.append(prompt.description)
    for text in texts:
        for line in text.splitlines():
            position = line.lower().find(needle)
            if position >= 0:
                begin = max(0, position - width // 2)
                piece = line[begin : begin + width + len(needle)]
                prefix = "…" if begin > 0 else ""
                suffix = "…" if begin + width + len(needle) < len(line) else ""
                return Markup("{}{}{}").format(prefix, highlight(piece, needle), suffix)
    first = (texts[0].splitlines() or [""])[0]
    return escape(first[:width] + ("…" if len(first) > width else ""))
