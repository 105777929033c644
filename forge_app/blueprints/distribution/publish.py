"""The Publish to LIVE flow: choose a channel, confirm (what it serves before and after),
publish."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import (
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from forge_app.audit import record_event
from forge_app.authz import (
    load_prompt_set,
    require_project_role,
    signed_in_user,
)
from forge_app.blueprints.distribution._shared import _live_instances, _status_url, bp
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.forms import PublishForm
from forge_app.models import Project, PromptSet, PromptSetVersion, Role, SetStatus
from forge_app.services import publishing
from forge_app.services.tokens import active_tokens


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
        except ForgeError as e:
            # Back to the confirmation of the same choice: the user can retry or go back.
            return flash_and_redirect(e, _choice_url(self_url, chosen.name, form.rollout.data))
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
        from forge_app.services.workflow import latest_release

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
