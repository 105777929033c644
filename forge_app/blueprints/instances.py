"""LIVE instances pages: who runs what, and how a publication is being picked up.

    GET  /projects/<id>/instances[?channel=…&show=attention|archived&page=N]  (viewers and up)
    GET  /projects/<id>/channels/<channel>/publications/<n>/status.json
    POST /projects/<id>/instances/<instance_id>/forget               (owners; stale ones only)
    GET  /projects/<id>/instances/forget?scope=archived|silent       (owners: confirmation)
    POST /projects/<id>/instances/forget                             (owners: bulk forget)

The publish status page itself is ``distribution.publish_status`` (it renders
``distribution/publish_status.html``); this blueprint gives that template its data through the
``publication_status`` template global and serves the same data as JSON for the page's
2-second refresh (``static/live-status.js``). The data comes from
:mod:`forge_app.services.instance_pages`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from forge_app.authz import require_project_role, signed_in_user
from forge_app.blueprints._common import project_page
from forge_app.models import Project, Role
from forge_app.models.distribution import Publication
from forge_app.presentation import ago
from forge_app.services import instance_pages as pages

__all__ = ["bp"]

bp = Blueprint("instances", __name__)


def _name(channel: Any) -> str:
    """A channel's name, from the name or the Channel (templates pass either)."""
    return channel if isinstance(channel, str) else str(channel.name)


def _require_owner() -> None:
    if g.role < Role.OWNER:
        abort(403, "Only owners can forget LIVE instances.")


def _back(project: Project) -> ResponseReturnValue:
    return redirect(url_for("instances.index", project_id=project.id))


@bp.get("/projects/<uuid:project_id>/instances")
@require_project_role(Role.VIEWER)
def index(project: Project) -> ResponseReturnValue:
    """Every instance that reported, by channel, problems first; archived ones on request."""
    page = request.args.get("page", "1")
    data = pages.instances_page(
        project,
        show=request.args.get("show") or "",
        channel=request.args.get("channel") or None,
        page=int(page) if page.isdigit() and 0 < len(page) < 7 else 1,
    )
    return render_template(
        "instances/index.html", project=project, nav="projects", tab="instances", **data
    )


@bp.post("/projects/<uuid:project_id>/instances/<instance_id>/forget")
@require_project_role(Role.VIEWER)
def forget(project: Project, instance_id: str) -> ResponseReturnValue:
    """Remove a stale instance from the list (owners only; audited). A live one comes back with
    its next heartbeat, so only silent ones can be forgotten."""
    _require_owner()
    outcome = pages.forget_instance(project, instance_id)
    if outcome is None:
        abort(404)
    if outcome.done:
        flash(f"Forgot instance {outcome.instance_id[:8]} on {outcome.hostname}.", "success")
    else:
        flash(
            f"Instance {outcome.instance_id[:8]} reported recently; only stale instances can be "
            "forgotten.",
            "error",
        )
    return _back(project)


def _scope(value: str | None) -> pages.Scope:
    if value == "archived":
        return "archived"
    if value in (None, "", "silent"):  # the bare URL offers the silent ones
        return "silent"
    abort(400, "Choose which instances to forget: archived or silent.")


@bp.route("/projects/<uuid:project_id>/instances/forget", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def forget_bulk(project: Project) -> ResponseReturnValue:
    """Forget every archived (or every silent) instance at once: owners only, after a
    confirmation page, audited as one event with the count."""
    _require_owner()
    scope = _scope(request.values.get("scope"))
    if request.method == "GET":
        return project_page(
            "instances/forget.html",
            project,
            tab="instances",
            scope=scope,
            count=pages.count_forgettable(project, scope),
            stale_label=pages.stale_label(),
        )
    if request.form.get("confirm") != "yes":
        flash("Nothing was forgotten: tick the confirmation box first.", "error")
        return redirect(url_for("instances.forget_bulk", project_id=project.id, scope=scope))
    count = pages.forget_instances(project, scope, signed_in_user())
    what = "archived" if scope == "archived" else "silent"
    flash(
        f"Forgot {count} {what} instance{'' if count == 1 else 's'}."
        if count
        else f"There was no {what} instance to forget.",
        "success",
    )
    return _back(project)


@bp.app_template_global("channel_instances")
def channel_instances(project: Project, channel: Any) -> dict[str, Any]:
    """The instances of one channel judged against its current entry lists, problems first
    (for the publish confirmation page: ``distribution/_instances_on_channel.html``)."""
    return pages.channel_instances(project, _name(channel))


@bp.app_template_filter("ago_iso")
def _ago_iso(text: str | None) -> Markup:
    """The ``ago`` filter for an ISO 8601 text (the JSON form of a time)."""
    if not text:
        return ago(None)
    return ago(datetime.fromisoformat(text.replace("Z", "+00:00")))


@bp.get("/projects/<uuid:project_id>/channels/<channel>/publications/<int:sequence>/status.json")
@require_project_role(Role.VIEWER)
def publication_status_json(project: Project, channel: str, sequence: int) -> ResponseReturnValue:
    publication = pages.find_publication(project, channel, sequence)
    if publication is None:
        abort(404, f"Channel {channel[:32]} has no publication {sequence}.")
    response = jsonify(pages.publication_status(project, channel, publication))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_global("publication_status")
def _publication_status_global(
    project: Project, channel: Any, publication: Publication
) -> dict[str, Any]:
    """The JSON endpoint's data, so ``distribution/publish_status.html`` works without
    JavaScript."""
    return pages.publication_status(project, _name(channel), publication)
