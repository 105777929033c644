"""Channel pages: list and add, one channel, delete, roll back, remove a set, rollouts,
re-encrypt."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from flask import abort, flash, g, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from forge_app.authz import require_project_role, signed_in_user
from forge_app.blueprints._common import posted_by, project_page
from forge_app.blueprints.distribution._shared import (
    _channel_and_page,
    _channel_move,
    _channel_or_404,
    _instance_count,
    _reencrypt,
    _status_url,
    bp,
)
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.forms import ChannelForm
from forge_app.models import Project, PromptSet, Role
from forge_app.models.distribution import Publication
from forge_app.services import naming, publishing
from forge_app.services.naming import NameTaken, create_channel
from forge_app.services.tokens import active_tokens


@bp.route("/projects/<uuid:project_id>/channels", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def channels(project: Project) -> ResponseReturnValue:
    publishing.ensure_default_channels(project)
    form = ChannelForm()
    if posted_by(Role.OWNER, "Only owners can add channels.") and form.validate_on_submit():
        try:
            channel = create_channel(project, form.name.data or "", user=signed_in_user())
        except NameTaken as e:
            form.name.errors = [str(e)]
            return _render_channels(project, form, status=400)
        flash(
            f"Channel {channel.name} is added. It accepts LOCKED versions; its publishers "
            "are owners.",
            "success",
        )
        return redirect(url_for(".channel", project_id=project.id, channel=channel.name))
    return _render_channels(project, form)


def _render_channels(project: Project, form: ChannelForm, status: int = 200) -> ResponseReturnValue:
    rows = []
    for channel in publishing.project_channels(project):
        rows.append((channel, publishing.latest_publication(channel)))
    page = project_page("distribution/channels.html", project, tab="channels", rows=rows, form=form)
    return page, status


@bp.get("/projects/<uuid:project_id>/channels/<channel>")
@require_project_role(Role.VIEWER)
def channel(project: Project, channel: str) -> ResponseReturnValue:
    found = _channel_or_404(project, channel)
    state = publishing.channel_state(found)
    history, history_error = publishing.channel_history(found)
    sets = list(
        db.session.scalars(
            select(PromptSet).where(PromptSet.project_id == project.id).order_by(PromptSet.name)
        )
    )
    return project_page(
        "distribution/channel.html",
        project,
        tab="channels",
        channel=found,
        state=state,
        history=history,
        history_error=history_error,
        sets=sets,
        may_publish=publishing.can_publish(g.role, found),
        required=publishing.required_role(found),
        instance_count=_instance_count(project, found.name),
    )


@bp.post("/projects/<uuid:project_id>/channels/<channel>/delete")
@require_project_role(Role.OWNER)
def delete_channel(project: Project, channel: str) -> ResponseReturnValue:
    found = _channel_or_404(project, channel)
    try:
        naming.delete_channel(found)
    except ForgeError as e:
        return flash_and_redirect(e, url_for(".channel", project_id=project.id, channel=found.name))
    flash(f"Channel {found.name} is removed.", "success")
    return redirect(url_for(".channels", project_id=project.id))


def _confirm_args() -> MultiDict[str, str]:
    """A confirm-then-do view's parameters: the posted form, or on GET the query string."""
    return request.form if request.method == "POST" else request.args


@bp.route("/projects/<uuid:project_id>/channels/<channel>/rollback", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def rollback(project: Project, channel: str) -> ResponseReturnValue:
    """GET: what the channel serves now and after rolling back (per set); POST: do it."""
    found, back = _channel_and_page(project, channel)
    sequence = _confirm_args().get("sequence", type=int)
    if sequence is None or sequence < 1:
        flash("Choose a history entry to roll back to.", "error")
        return redirect(back)
    if request.method == "GET":
        if not publishing.can_publish(g.role, found):
            abort(403, f"Only {publishing.required_role(found).label}s can roll back {found.name}.")
        state = publishing.channel_state(found)
        try:
            target = publishing.history_pointer(found, sequence)
        except ForgeError as e:
            return flash_and_redirect(e, back)
        return project_page(
            "distribution/rollback_confirm.html",
            project,
            tab="channels",
            channel=found,
            sequence=sequence,
            target=target,
            state=state,
            plan=publishing.rollback_plan(found, state.pointer, target),
            recipients=active_tokens(project.id),
        )
    publication = _channel_move(publishing.rollback_to, found, sequence)
    if publication is None:
        return redirect(back)
    flash(
        f"Channel {found.name} is rolled back (sequence {publication.sequence}), re-encrypted "
        f"for the active tokens: {publication.summary}.",
        "success",
    )
    return redirect(_status_url(project, found, publication))


@bp.route("/projects/<uuid:project_id>/channels/<channel>/remove", methods=["GET", "POST"])
@require_project_role(Role.OWNER)
def remove_set(project: Project, channel: str) -> ResponseReturnValue:
    """Owners: stop serving one prompt set on a channel (GET confirms, POST removes)."""
    found, back = _channel_and_page(project, channel)
    set_id = (_confirm_args().get("set") or "").strip()
    if not set_id or len(set_id) > 128:
        flash("Choose the prompt set to remove.", "error")
        return redirect(back)
    if request.method == "POST":
        publication = _channel_move(publishing.remove_from_channel, found, set_id)
        if publication is None:
            return redirect(back)
        flash(
            f"{publication.summary} on {found.name} (sequence {publication.sequence}); the "
            "other prompt sets are served as before.",
            "success",
        )
        return redirect(back)
    state = publishing.channel_state(found)
    entry = next((e for e in state.entries if e.release.prompt_set_id == set_id), None)
    if state.error is not None:
        flash(state.error, "error")
        return redirect(back)
    if entry is None:
        abort(404, f"Channel {found.name} does not serve that prompt set.")
    problem = None
    if state.pointer is not None and state.pointer.rollout is not None:
        problem = (
            f"Channel {found.name} has a rollout in progress; complete or abort it before "
            "removing a prompt set."
        )
    elif len(state.entries) == 1:
        problem = (
            f"{entry.name} is the only prompt set on {found.name}, and a channel always serves "
            "at least one; publish another set first."
        )
    return project_page(
        "distribution/remove_confirm.html",
        project,
        tab="channels",
        channel=found,
        entry=entry,
        state=state,
        problem=problem,
        instance_count=_instance_count(project, found.name),
    )


@bp.post("/projects/<uuid:project_id>/channels/<channel>/rollout")
@require_project_role(Role.VIEWER)
def rollout(project: Project, channel: str) -> ResponseReturnValue:
    found, back = _channel_and_page(project, channel)
    action = request.form.get("action", "")
    move: Callable[..., Publication]
    if action == "set":
        percent = request.form.get("percent", type=int)
        if percent is None:
            flash("Give the new percentage, from 1 to 100.", "error")
            return redirect(back)
        move = partial(publishing.set_rollout, found, percent)
    elif action in ("complete", "abort"):
        ending = publishing.complete_rollout if action == "complete" else publishing.abort_rollout
        move = partial(ending, found)
    else:
        abort(400, "Unknown rollout action.")
    publication = _channel_move(move)
    if publication is None:
        return redirect(back)
    if action == "set":
        shown = publication.rollout_percent if publication.rollout_percent is not None else 100
        flash(f"The new list now goes to {shown}% of instances on {found.name}.", "success")
    else:
        flash(f"{publication.summary} — on every instance of {found.name}.", "success")
    return redirect(back)


@bp.post("/projects/<uuid:project_id>/channels/<channel>/reencrypt")
@require_project_role(Role.VIEWER)
def reencrypt_channel(project: Project, channel: str) -> ResponseReturnValue:
    found, back = _channel_and_page(project, channel)
    if not publishing.can_publish(g.role, found):
        abort(403, f"Only {publishing.required_role(found).label}s can re-encrypt {found.name}.")
    return _reencrypt(
        project,
        back,
        already=f"{found.name} is already encrypted for exactly the active tokens.",
        only=found,
    )


@bp.get("/projects/<uuid:project_id>/channels/<channel>/publications/<int:sequence>")
@require_project_role(Role.VIEWER)
def publish_status(project: Project, channel: str, sequence: int) -> ResponseReturnValue:
    found = _channel_or_404(project, channel)
    publication = db.session.scalar(
        select(Publication).where(
            Publication.channel_id == found.id, Publication.sequence == sequence
        )
    )
    if publication is None:
        abort(404)
    return project_page(
        "distribution/publish_status.html",
        project,
        tab="channels",
        channel=found,
        publication=publication,
    )
