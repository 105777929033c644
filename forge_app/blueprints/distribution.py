"""Distribution pages: ACCESS_TOKENs, channels, Publish to LIVE, rollbacks and rollouts.

    GET  /projects/<project_id>/tokens                    owners: list, generate, reveal, revoke
    GET  /projects/<project_id>/channels                  members: channels and what they serve
    GET  /projects/<project_id>/channels/<channel>        the sets it serves, history, actions
    GET  /projects/<project_id>/channels/<channel>/remove?set=<id>     owners: confirm → POST
    GET  /projects/<project_id>/channels/<channel>/rollback?sequence=N confirm → POST
    GET  /projects/<project_id>/sets/<set_id>/versions/<version>/publish   choose → confirm → POST

A channel serves every prompt set of the project at once (pointer v2): publishing a set
replaces its own entry and keeps the others; confirmation pages show, per set, what the
channel serves before and after.

Every store write goes through :mod:`forge_app.services.publishing` (the publisher library);
views only check roles, render, and commit the rows the services added.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from wtforms import HiddenField, IntegerField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from anvil_client.errors import ConfigError
from anvil_client.wire import CHANNEL_RE
from forge_app.audit import ACTION_LABELS, record_event
from forge_app.authz import (
    load_prompt_set,
    require_project_role,
    safe_local_path,
    signed_in_user,
)
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, PromptSetVersion, Role, SetStatus
from forge_app.models.distribution import AccessToken, Channel, Publication
from forge_app.services import publishing
from forge_app.services.publishing import PublishError, RecipientsReport
from forge_app.services.tokens import active_tokens, create_token, reveal_token

bp = Blueprint("distribution", __name__)

ACTION_LABELS.update(
    {
        "token.create": "generated ACCESS_TOKEN",
        "token.reveal": "viewed ACCESS_TOKEN",
        "token.revoke": "revoked ACCESS_TOKEN",
        "channel.create": "added channel",
        "channel.delete": "removed channel",
        "channel.publish": "published to channel",
        "channel.rollback": "rolled back channel",
        "channel.reencrypt": "re-encrypted channel",
        "channel.remove_set": "removed a prompt set from channel",
        "rollout.update": "changed the rollout of",
        "rollout.complete": "completed the rollout of",
        "rollout.abort": "aborted the rollout of",
        "prompt_set.snapshot": "made a pre-release of",
        "channel.publish_compat_confirmed": "confirmed compatibility warnings publishing to",
    }
)


class TokenForm(FlaskForm):  # type: ignore[misc]
    name = StringField(
        "Token name",
        validators=[DataRequired(), Length(max=120)],
        description="Where it is used, e.g. “checkout-service prod”.",
    )
    # One random id per rendered form: a reload that re-sends the POST creates no second token.
    request_id = HiddenField(validators=[Optional(), Length(max=64)])


_TOKEN_REQUESTS_KEPT = 20


def _first_use_of(request_id: str) -> bool:
    """True the first time this form's ``request_id`` is submitted in this session."""
    if not request_id:
        return True
    seen: list[str] = list(session.get("token_requests", []))
    if request_id in seen:
        return False
    session["token_requests"] = [*seen, request_id][-_TOKEN_REQUESTS_KEPT:]
    return True


class ChannelForm(FlaskForm):  # type: ignore[misc]
    name = StringField(
        "Channel name",
        validators=[
            DataRequired(),
            Length(max=32),
            Regexp(CHANNEL_RE.pattern, message="Use 1-32 lowercase letters, digits and '-'."),
        ],
    )


class PublishForm(FlaskForm):  # type: ignore[misc]
    channel = StringField("Channel", validators=[DataRequired(), Length(max=32)])
    rollout = IntegerField(
        "Gradual rollout (% of instances)",
        validators=[Optional(), NumberRange(min=1, max=100)],
    )


class RolloutForm(FlaskForm):  # type: ignore[misc]
    percent = IntegerField("Percent", validators=[DataRequired(), NumberRange(min=1, max=100)])


@bp.app_context_processor
def _distribution_helpers() -> dict[str, Any]:
    """Lazy helpers for the distribution hooks in other blueprints' templates."""
    return {
        "distribution_public_key": lambda: _or_problem(publishing.forge_public_key_text),
        "distribution_key_id": lambda: _or_problem(publishing.forge_key_id),
        "distribution_store_url": _store_url_for_clients,
        "distribution_forge_url": lambda: request.url_root.rstrip("/"),
    }


def _or_problem(read: Any) -> str:
    try:
        return str(read())
    except ConfigError as e:
        return f"(unavailable: {e})"


# ---------------------------------------------------------------------------- helpers


def _failed(error: PublishError, target: str) -> ResponseReturnValue:
    """Who-may-act rules are a 403 page; anything else is one flash sentence and a redirect."""
    db.session.rollback()
    if error.status == 403:
        abort(403, str(error))
    if error.status == 404:
        abort(404, str(error))
    flash(str(error), "error")
    for problem in error.problems[:20]:
        flash(problem, "error")
    return redirect(target)


def _channel_or_404(project: Project, name: str) -> Channel:
    publishing.ensure_default_channels(project)
    channel = publishing.get_channel(project, name)
    if channel is None:
        abort(404)
    return channel


def _token_or_404(project: Project, token_id: str) -> AccessToken:
    token = db.session.scalar(
        select(AccessToken).where(
            AccessToken.project_id == project.id, AccessToken.token_id == token_id
        )
    )
    if token is None:
        abort(404)
    return token


def _flash_report(report: RecipientsReport, *, intro: str | None) -> None:
    """``intro`` (what was done) with the channels re-encrypted, then one error per channel
    that failed. Without ``intro`` and re-encryptions, only the failures are said."""
    if report.reencrypted:
        moved = ", ".join(f"{p.channel.name} (sequence {p.sequence})" for p in report.reencrypted)
        flash(f"{intro or 'Done.'} Re-encrypted and re-published: {moved}.", "success")
    elif intro:
        flash(intro, "success")
    for name, message in report.failed:
        flash(
            f"Channel {name} could not be re-encrypted: {message} Use “Re-encrypt now” on the "
            "channel page once the problem is fixed.",
            "error",
        )


_INSTANCES_LISTED = 200


def _live_instances(
    project: Project, channel: str | None = None, *, token_id: str | None = None
) -> list[Any]:
    """The LIVE instances that reported to this FORGE and are not archived (at most 200)."""
    from forge_app.models.instances import LiveInstance

    query = select(LiveInstance).where(
        LiveInstance.project_id == project.id, LiveInstance.archived_at.is_(None)
    )
    if channel is not None:
        query = query.where(LiveInstance.channel == channel)
    if token_id is not None:
        query = query.where(LiveInstance.token_id == token_id)
    query = query.order_by(LiveInstance.hostname, LiveInstance.id).limit(_INSTANCES_LISTED)
    return list(db.session.scalars(query))


def _instance_count(project: Project, channel: str) -> int:
    """How many (non-archived) LIVE instances follow ``channel``."""
    from forge_app.models.instances import LiveInstance

    return int(
        db.session.scalar(
            select(func.count(LiveInstance.id)).where(
                LiveInstance.project_id == project.id,
                LiveInstance.channel == channel,
                LiveInstance.archived_at.is_(None),
            )
        )
        or 0
    )


def _instances_by_token(project: Project) -> dict[str, int]:
    try:
        from forge_app.models.instances import LiveInstance
    except ImportError:  # pragma: no cover
        return {}
    rows = db.session.execute(
        select(LiveInstance.token_id, func.count(LiveInstance.id))
        .where(LiveInstance.project_id == project.id)
        .group_by(LiveInstance.token_id)
    ).all()
    return dict(rows)


def _store_url_for_clients() -> str:
    """What clients put in ``store``: the FORGE's own /store/ for a local store."""
    if publishing.store_root() is not None:
        return url_for("store.object", key="", _external=True).rstrip("/")
    return str(current_app.config["FORGE_STORE_URL"])


# ----------------------------------------------------------------------------- tokens


@bp.route("/projects/<uuid:project_id>/tokens", methods=["GET", "POST"])
@require_project_role(Role.OWNER)
def tokens(project: Project) -> ResponseReturnValue:
    form = TokenForm()
    created: tuple[AccessToken, str] | None = None
    if form.validate_on_submit():
        if not _first_use_of(form.request_id.data):
            flash("That token was already generated; use Show on it to see it again.", "info")
            form = TokenForm(formdata=None)
        else:
            user = signed_in_user()
            token, text = create_token(project, form.name.data or "", user=user)
            db.session.flush()
            record_event(
                "token.create",
                token,
                project=project,
                details={"token_id": token.token_id, "name": token.name},
            )
            try:
                report = publishing.sync_recipients(
                    project, user=user, reason=f"new token {token.token_id}"
                )
            except PublishError as e:
                report = RecipientsReport(failed=[("all channels", str(e))])
            db.session.commit()
            _flash_report(
                report,
                intro=f"Token {token.name} is generated. Copy it now and store it as a secret.",
            )
            created = (token, text)
            form = TokenForm(formdata=None)
    form.request_id.data = secrets.token_urlsafe(24)
    rows = list(
        db.session.scalars(
            select(AccessToken)
            .where(AccessToken.project_id == project.id)
            .order_by(AccessToken.revoked_at.is_not(None), AccessToken.id.desc())
        )
    )
    return render_template(
        "distribution/tokens.html",
        project=project,
        form=form,
        tokens=rows,
        created=created,
        instances=_instances_by_token(project),
        store_url=_store_url_for_clients(),
        public_key=publishing.forge_public_key_text(),
        nav="projects",
        tab="tokens",
    )


@bp.post("/projects/<uuid:project_id>/tokens/<token_id>/reveal")
@require_project_role(Role.OWNER)
def reveal(project: Project, token_id: str) -> ResponseReturnValue:
    token = _token_or_404(project, token_id)
    try:
        text = reveal_token(token)
    except ConfigError as e:
        flash(str(e), "error")
        return redirect(url_for(".tokens", project_id=project.id))
    record_event("token.reveal", token, project=project, details={"token_id": token.token_id})
    db.session.commit()
    return render_template(
        "distribution/token_reveal.html",
        project=project,
        token=token,
        text=text,
        store_url=_store_url_for_clients(),
        public_key=publishing.forge_public_key_text(),
        nav="projects",
        tab="tokens",
    )


@bp.route("/projects/<uuid:project_id>/tokens/<token_id>/revoke", methods=["GET", "POST"])
@require_project_role(Role.OWNER)
def revoke(project: Project, token_id: str) -> ResponseReturnValue:
    token = _token_or_404(project, token_id)
    back = url_for(".tokens", project_id=project.id)
    if token.revoked_at is not None:
        flash(f"Token {token.name} is already revoked.", "info")
        return redirect(back)
    if request.method == "POST":
        user = signed_in_user()
        try:
            report = publishing.revoke_token(token, user=user)
        except PublishError as e:
            return _failed(e, back)
        db.session.commit()
        _flash_report(report, intro=f"Token {token.name} is revoked.")
        return redirect(back)
    publishing.ensure_default_channels(project)
    remaining = list(
        db.session.scalars(
            select(AccessToken).where(
                AccessToken.project_id == project.id,
                AccessToken.revoked_at.is_(None),
                AccessToken.id != token.id,
            )
        )
    )
    channels = []
    for channel in publishing.project_channels(project):
        state = publishing.channel_state(channel)
        channels.append((channel, state))
    users = _live_instances(project, token_id=token.token_id)
    return render_template(
        "distribution/revoke.html",
        project=project,
        token=token,
        remaining=remaining,
        channels=channels,
        instances=users,
        nav="projects",
        tab="tokens",
    )


@bp.post("/projects/<uuid:project_id>/tokens/reencrypt")
@require_project_role(Role.OWNER)
def reencrypt_all(project: Project) -> ResponseReturnValue:
    back = safe_local_path(request.form.get("next")) or url_for(".tokens", project_id=project.id)
    publishing.ensure_default_channels(project)
    try:
        report = publishing.sync_recipients(
            project, user=signed_in_user(), reason="re-encrypt requested"
        )
    except PublishError as e:
        return _failed(e, back)
    db.session.commit()
    if not report.reencrypted and not report.failed:
        flash("Every channel is already encrypted for exactly the active tokens.", "info")
    else:
        _flash_report(report, intro="Re-encryption finished." if report.reencrypted else None)
    return redirect(back)


# --------------------------------------------------------------------------- channels


@bp.route("/projects/<uuid:project_id>/channels", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def channels(project: Project) -> ResponseReturnValue:
    publishing.ensure_default_channels(project)
    form = ChannelForm()
    if request.method == "POST":
        if g.role < Role.OWNER:
            abort(403, "Only owners can add channels.")
        if form.validate_on_submit():
            name = (form.name.data or "").strip()
            if publishing.get_channel(project, name) is not None:
                return _channel_taken(project, form, name)
            else:
                channel = Channel(
                    project_id=project.id,
                    name=name,
                    policy=Channel.default_policy(name),
                    created_by_id=signed_in_user().id,
                )
                try:
                    db.session.add(channel)
                    db.session.flush()
                    record_event(
                        "channel.create",
                        channel,
                        project=project,
                        details={"policy": channel.policy},
                    )
                    db.session.commit()
                except IntegrityError:  # added by someone else since the check above
                    db.session.rollback()
                    return _channel_taken(project, form, name)
                flash(
                    f"Channel {name} is added. It accepts LOCKED versions; its publishers are "
                    "owners.",
                    "success",
                )
                return redirect(url_for(".channel", project_id=project.id, channel=name))
    return _render_channels(project, form)


def _channel_taken(project: Project, form: ChannelForm, name: str) -> ResponseReturnValue:
    form.name.errors = [f"Channel {name} exists already."]
    return _render_channels(project, form, status=400)


def _render_channels(project: Project, form: ChannelForm, status: int = 200) -> ResponseReturnValue:
    rows = []
    for channel in publishing.project_channels(project):
        rows.append((channel, publishing.latest_publication(channel)))
    page = render_template(
        "distribution/channels.html",
        project=project,
        rows=rows,
        form=form,
        nav="projects",
        tab="channels",
    )
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
    return render_template(
        "distribution/channel.html",
        project=project,
        channel=found,
        state=state,
        history=history,
        history_error=history_error,
        sets=sets,
        may_publish=publishing.can_publish(g.role, found),
        required=publishing.required_role(found),
        instance_count=_instance_count(project, found.name),
        nav="projects",
        tab="channels",
    )


@bp.post("/projects/<uuid:project_id>/channels/<channel>/delete")
@require_project_role(Role.OWNER)
def delete_channel(project: Project, channel: str) -> ResponseReturnValue:
    found = _channel_or_404(project, channel)
    back = url_for(".channel", project_id=project.id, channel=found.name)
    if found.is_default:
        flash(f"{found.name} is a default channel and cannot be removed.", "error")
        return redirect(back)
    if publishing.latest_publication(found) is not None:
        flash(
            f"Channel {found.name} has releases; instances following it keep the last one. "
            "It stays so its history is kept.",
            "error",
        )
        return redirect(back)
    record_event("channel.delete", found, project=project)
    db.session.delete(found)
    db.session.commit()
    flash(f"Channel {found.name} is removed.", "success")
    return redirect(url_for(".channels", project_id=project.id))


@bp.route("/projects/<uuid:project_id>/channels/<channel>/rollback", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def rollback(project: Project, channel: str) -> ResponseReturnValue:
    """GET: what the channel serves now and after rolling back (per set); POST: do it."""
    found = _channel_or_404(project, channel)
    back = url_for(".channel", project_id=project.id, channel=found.name)
    source = request.form if request.method == "POST" else request.args
    sequence = source.get("sequence", type=int)
    if sequence is None or sequence < 1:
        flash("Choose a history entry to roll back to.", "error")
        return redirect(back)
    if request.method == "GET":
        if not publishing.can_publish(g.role, found):
            abort(403, f"Only {publishing.required_role(found).label}s can roll back {found.name}.")
        state = publishing.channel_state(found)
        try:
            target = publishing.history_pointer(found, sequence)
        except PublishError as e:
            return _failed(e, back)
        return render_template(
            "distribution/rollback_confirm.html",
            project=project,
            channel=found,
            sequence=sequence,
            target=target,
            state=state,
            plan=publishing.rollback_plan(found, state.pointer, target),
            recipients=active_tokens(project.id),
            nav="projects",
            tab="channels",
        )
    try:
        publication = publishing.rollback_to(found, sequence, user=signed_in_user(), role=g.role)
    except PublishError as e:
        return _failed(e, back)
    db.session.commit()
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
    found = _channel_or_404(project, channel)
    back = url_for(".channel", project_id=project.id, channel=found.name)
    source = request.form if request.method == "POST" else request.args
    set_id = (source.get("set") or "").strip()
    if not set_id or len(set_id) > 128:
        flash("Choose the prompt set to remove.", "error")
        return redirect(back)
    if request.method == "POST":
        try:
            publication = publishing.remove_from_channel(
                found, set_id, user=signed_in_user(), role=g.role
            )
        except PublishError as e:
            return _failed(e, back)
        db.session.commit()
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
    return render_template(
        "distribution/remove_confirm.html",
        project=project,
        channel=found,
        entry=entry,
        state=state,
        problem=problem,
        instance_count=_instance_count(project, found.name),
        nav="projects",
        tab="channels",
    )


@bp.post("/projects/<uuid:project_id>/channels/<channel>/rollout")
@require_project_role(Role.VIEWER)
def rollout(project: Project, channel: str) -> ResponseReturnValue:
    found = _channel_or_404(project, channel)
    back = url_for(".channel", project_id=project.id, channel=found.name)
    action = request.form.get("action", "")
    user = signed_in_user()
    try:
        if action == "complete":
            publication = publishing.complete_rollout(found, user=user, role=g.role)
            message = f"{publication.summary} — on every instance of {found.name}."
        elif action == "abort":
            publication = publishing.abort_rollout(found, user=user, role=g.role)
            message = f"{publication.summary} — on every instance of {found.name}."
        elif action == "set":
            percent = request.form.get("percent", type=int)
            if percent is None:
                flash("Give the new percentage, from 1 to 100.", "error")
                return redirect(back)
            publication = publishing.set_rollout(found, percent, user=user, role=g.role)
            shown = publication.rollout_percent if publication.rollout_percent is not None else 100
            message = f"The new list now goes to {shown}% of instances on {found.name}."
        else:
            abort(400, "Unknown rollout action.")
    except PublishError as e:
        return _failed(e, back)
    db.session.commit()
    flash(message, "success")
    return redirect(back)


@bp.post("/projects/<uuid:project_id>/channels/<channel>/reencrypt")
@require_project_role(Role.VIEWER)
def reencrypt_channel(project: Project, channel: str) -> ResponseReturnValue:
    found = _channel_or_404(project, channel)
    back = url_for(".channel", project_id=project.id, channel=found.name)
    if not publishing.can_publish(g.role, found):
        abort(403, f"Only {publishing.required_role(found).label}s can re-encrypt {found.name}.")
    try:
        report = publishing.sync_recipients(
            project, user=signed_in_user(), reason="re-encrypt requested", only=found
        )
    except PublishError as e:
        return _failed(e, back)
    db.session.commit()
    if not report.reencrypted and not report.failed:
        flash(f"{found.name} is already encrypted for exactly the active tokens.", "info")
    else:
        _flash_report(report, intro="Re-encryption finished." if report.reencrypted else None)
    return redirect(back)


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
    return render_template(
        ["distribution/publish_status.html", "distribution/publication.html"],
        project=project,
        channel=found,
        publication=publication,
        nav="projects",
        tab="channels",
    )


def _status_url(project: Project, channel: Channel, publication: Publication) -> str:
    return url_for(
        ".publish_status",
        project_id=project.id,
        channel=channel.name,
        sequence=publication.sequence,
    )


# ------------------------------------------------------------------------- publishing


def _load_version(prompt_set: PromptSet, version: str) -> PromptSetVersion:
    found = db.session.scalar(
        select(PromptSetVersion).where(
            PromptSetVersion.prompt_set_id == prompt_set.id, PromptSetVersion.version == version
        )
    )
    if found is None:
        abort(404)
    return found


def _publish_flow(
    project: Project,
    prompt_set: PromptSet,
    *,
    version: PromptSetVersion | None,
    self_url: str,
) -> ResponseReturnValue:
    """Choose a channel → confirm (instances on it, what they serve) → POST publishes.

    ``version`` None publishes the set as it is now (a pre-release snapshot for REVIEW and
    LIVE sets, the latest release for LOCKED ones).
    """
    publishing.ensure_default_channels(project)
    status = publishing.version_status(version) if version is not None else prompt_set.status
    channels = publishing.project_channels(project)
    choices = [
        {
            "channel": c,
            "accepts": status in c.accepts,
            "allowed": publishing.can_publish(g.role, c),
            "required": publishing.required_role(c),
        }
        for c in channels
    ]
    if request.method == "POST":
        form = PublishForm()
        if not form.validate_on_submit():
            for errors in form.errors.values():
                for error in errors:
                    flash(str(error), "error")
            return redirect(self_url)
        chosen = publishing.get_channel(project, form.channel.data or "")
        if chosen is None:
            abort(404)
        user = signed_in_user()
        from forge_app.blueprints.releases import compat_confirmation_problem

        compat_problem, compat_warnings = compat_confirmation_problem(
            version, chosen, g.role, request.form.get("compat_confirmed") == "1"
        )
        if compat_problem is not None:
            flash(compat_problem, "error")
            return redirect(_choice_url(self_url, chosen.name, form.rollout.data))
        try:
            if version is not None:
                publication = publishing.publish_version(
                    version, chosen, user=user, role=g.role, rollout_percent=form.rollout.data
                )
            else:
                publication = publishing.publish_prompt_set(
                    prompt_set, chosen, user=user, role=g.role, rollout_percent=form.rollout.data
                )
        except PublishError as e:
            # Back to the confirmation of the same choice: the user can retry or go back.
            return _failed(e, _choice_url(self_url, chosen.name, form.rollout.data))
        if compat_warnings:
            record_event(
                "channel.publish_compat_confirmed",
                chosen,
                project=project,
                details={
                    "sequence": publication.sequence,
                    "version": publication.version,
                    "warnings": [w.sentence for w in compat_warnings],
                },
            )
        db.session.commit()
        share = (
            f" to {publication.rollout_percent}% of instances"
            if publication.rollout_percent is not None
            else ""
        )
        flash(
            f"Published {prompt_set.name} {publication.version} to {chosen.name}{share} "
            f"(sequence {publication.sequence}): {publication.summary}.",
            "success",
        )
        return redirect(_status_url(project, chosen, publication))

    name = request.args.get("channel", "")
    rollout_text = request.args.get("rollout", "").strip()
    chosen = publishing.get_channel(project, name) if name else None
    problem = None
    rollout_percent: int | None = None
    if rollout_text:
        if rollout_text.isdigit() and 1 <= int(rollout_text) <= 100:
            rollout_percent = int(rollout_text)
            if rollout_percent == 100:
                rollout_percent = None
        else:
            problem = "The rollout percentage must be a whole number from 1 to 100."
    if chosen is not None and problem is None:
        if status not in chosen.accepts:
            problem = (
                f"Channel {chosen.name} accepts only {' or '.join(chosen.accepts)} prompt sets; "
                f"this one is {status}."
            )
        elif not publishing.can_publish(g.role, chosen):
            problem = (
                f"Only members with the {publishing.required_role(chosen).label} role can "
                f"publish to {chosen.name}."
            )
    # "Back" from the confirmation: the choice again, as it was.
    changing = request.args.get("change") == "1"
    if chosen is None or problem is not None or changing:
        if name and chosen is None:
            problem = f"There is no channel named {name}."
        return render_template(
            "distribution/publish_choose.html",
            project=project,
            prompt_set=prompt_set,
            version=version,
            status=status,
            choices=choices,
            problem=problem,
            selected=name,
            rollout=rollout_text,
            self_url=self_url,
            has_tokens=bool(active_tokens(project.id)),
            nav="projects",
        )
    state = publishing.channel_state(chosen)
    if rollout_percent is not None and state.pointer is None and state.error is None:
        # Said now, before the user confirms: a rollout needs a current release to roll from.
        return render_template(
            "distribution/publish_choose.html",
            project=project,
            prompt_set=prompt_set,
            version=version,
            status=status,
            choices=choices,
            problem=(
                f"Channel {chosen.name} has nothing published yet, so a gradual rollout has "
                "nothing to roll out from. Leave the percentage empty to publish to every "
                "instance."
            ),
            selected=name,
            rollout=rollout_text,
            self_url=self_url,
            has_tokens=bool(active_tokens(project.id)),
            nav="projects",
        )
    if version is not None:
        new_version, content = version.version, version.content_sha256
    else:
        new_version = "a new " + ("-rc" if status == SetStatus.REVIEW.value else "-dev")
        new_version += " snapshot"
        content = None
    return render_template(
        "distribution/publish_confirm.html",
        project=project,
        prompt_set=prompt_set,
        version=version,
        status=status,
        channel=chosen,
        rollout_percent=rollout_percent,
        state=state,
        plan=publishing.publish_plan(state.pointer, prompt_set, new_version, content),
        clash=publishing.clash_for(prompt_set, version, chosen) if state.error is None else None,
        instances=_live_instances(project, chosen.name),
        recipients=active_tokens(project.id),
        self_url=self_url,
        nav="projects",
    )


def _choice_url(self_url: str, channel: str, rollout: int | None) -> str:
    """The publish page with a channel (and rollout) chosen: its confirmation step."""
    query = urlencode({"channel": channel, **({"rollout": rollout} if rollout else {})})
    return f"{self_url}?{query}"


@bp.route(
    "/projects/<uuid:project_id>/sets/<uuid:set_id>/versions/<version>/publish",
    methods=["GET", "POST"],
)
@require_project_role(Role.REVIEWER)
def publish_version(project: Project, set_id: str, version: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    found = _load_version(prompt_set, version)
    self_url = url_for(
        ".publish_version", project_id=project.id, set_id=prompt_set.id, version=found.version
    )
    return _publish_flow(project, prompt_set, version=found, self_url=self_url)


@bp.route("/projects/<uuid:project_id>/sets/<uuid:set_id>/publish", methods=["GET", "POST"])
@require_project_role(Role.REVIEWER)
def publish_set(project: Project, set_id: str) -> ResponseReturnValue:
    prompt_set = load_prompt_set(project, set_id)
    self_url = url_for(".publish_set", project_id=project.id, set_id=prompt_set.id)
    if prompt_set.status == SetStatus.LOCKED.value:
        from forge_app.workflow import latest_release

        latest = latest_release(db.session, prompt_set)
        if latest is None:
            flash(f"Prompt set {prompt_set.name} has no released version to publish.", "error")
            return redirect(url_for("prompt_sets.show", project_id=project.id, set_id=set_id))
        query = request.query_string.decode("ascii", "replace")
        target = url_for(
            ".publish_version",
            project_id=project.id,
            set_id=prompt_set.id,
            version=latest.version,
        )
        if request.method == "GET":
            return redirect(target + (f"?{query}" if query else ""))
        return _publish_flow(project, prompt_set, version=latest, self_url=target)
    return _publish_flow(project, prompt_set, version=None, self_url=self_url)
