"""The Publish to LIVE flow: choose a channel, confirm (what it serves before and after),
publish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import flash, g, redirect, request, url_for
from flask.typing import ResponseReturnValue

from forge_app.authz import load_prompt_set, require_project_role, signed_in_user
from forge_app.blueprints._common import flash_form_errors, found_or_404, project_page
from forge_app.blueprints.distribution._shared import _live_instances, _status_url, bp
from forge_app.blueprints.prompt_sets._shared import set_and_version
from forge_app.compat import CompatRefused
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.forms import PublishForm
from forge_app.models import Project, PromptSet, PromptSetVersion, Role, SetStatus
from forge_app.models.distribution import Channel
from forge_app.services import publishing
from forge_app.services.publish import publish_confirmed
from forge_app.services.tokens import active_tokens
from forge_app.services.transaction import unit_of_work


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
    flow = _Flow(project, prompt_set, version, self_url)
    if request.method == "POST":
        return flow.publish()
    name = request.args.get("channel", "")
    rollout_text = request.args.get("rollout", "").strip()
    chosen = publishing.get_channel(project, name) if name else None
    rollout_percent, problem = _rollout_percent(rollout_text)
    if chosen is not None and problem is None:
        problem = _refusal(chosen, flow.status)
    # "Back" from the confirmation: the choice again, as it was.
    if chosen is None or problem is not None or request.args.get("change") == "1":
        if name and chosen is None:
            problem = f"There is no channel named {name}."
        return flow.choose(problem, name, rollout_text)
    state = publishing.channel_state(chosen)
    if rollout_percent is not None and state.pointer is None and state.error is None:
        # Said now, before the user confirms: a rollout needs a current release to roll from.
        problem = (
            f"Channel {chosen.name} has nothing published yet, so a gradual rollout has "
            "nothing to roll out from. Leave the percentage empty to publish to every "
            "instance."
        )
        return flow.choose(problem, name, rollout_text)
    return flow.confirm(chosen, state, rollout_percent)


def _rollout_percent(text: str) -> tuple[int | None, str | None]:
    """The rollout percentage asked for (None for every instance), or a problem."""
    if not text:
        return None, None
    if not (text.isdigit() and 1 <= int(text) <= 100):
        return None, "The rollout percentage must be a whole number from 1 to 100."
    return (None if int(text) == 100 else int(text)), None


def _refusal(chosen: Channel, status: str) -> str | None:
    """Why the user cannot publish a set of ``status`` to ``chosen`` (None when they can)."""
    if status not in chosen.accepts:
        return (
            f"Channel {chosen.name} accepts only {' or '.join(chosen.accepts)} prompt sets; "
            f"this one is {status}."
        )
    if not publishing.can_publish(g.role, chosen):
        return (
            f"Only members with the {publishing.required_role(chosen).label} role can "
            f"publish to {chosen.name}."
        )
    return None


@dataclass
class _Flow:
    """One publish page: what is published (a version, or the set as it is now) and where the
    page is."""

    project: Project
    prompt_set: PromptSet
    version: PromptSetVersion | None
    self_url: str

    @property
    def status(self) -> str:
        if self.version is not None:
            return publishing.version_status(self.version)
        return self.prompt_set.status

    def _page(self, template: str, **context: Any) -> str:
        return project_page(
            template,
            self.project,
            prompt_set=self.prompt_set,
            version=self.version,
            status=self.status,
            self_url=self.self_url,
            **context,
        )

    def choose(self, problem: str | None, selected: str, rollout: str) -> str:
        """The channel choice (again), with ``problem`` said."""
        choices = [
            {
                "channel": c,
                "accepts": self.status in c.accepts,
                "allowed": publishing.can_publish(g.role, c),
                "required": publishing.required_role(c),
            }
            for c in publishing.project_channels(self.project)
        ]
        return self._page(
            "distribution/publish_choose.html",
            choices=choices,
            problem=problem,
            selected=selected,
            rollout=rollout,
            has_tokens=bool(active_tokens(self.project.id)),
        )

    def confirm(self, chosen: Channel, state: Any, rollout_percent: int | None) -> str:
        """The confirmation: what the channel serves now and after, who runs it."""
        if self.version is not None:
            new_version, content = self.version.version, self.version.content_sha256
        else:
            kind = "-rc" if self.status == SetStatus.REVIEW.value else "-dev"
            new_version, content = f"a new {kind} snapshot", None
        clash = None
        if state.error is None:
            clash = publishing.clash_for(self.prompt_set, self.version, chosen)
        return self._page(
            "distribution/publish_confirm.html",
            channel=chosen,
            rollout_percent=rollout_percent,
            state=state,
            plan=publishing.publish_plan(state.pointer, self.prompt_set, new_version, content),
            clash=clash,
            instances=_live_instances(self.project, chosen.name),
            recipients=active_tokens(self.project.id),
        )

    def publish(self) -> ResponseReturnValue:
        """The confirmed POST: publish, then the publication's status page."""
        form = PublishForm()
        if not form.validate_on_submit():
            flash_form_errors(form)
            return redirect(self.self_url)
        chosen = found_or_404(publishing.get_channel(self.project, form.channel.data or ""))
        again = _choice_url(self.self_url, chosen.name, form.rollout.data)
        try:
            publication = unit_of_work(
                publish_confirmed,
                self.prompt_set,
                self.version,
                chosen,
                user=signed_in_user(),
                role=g.role,
                rollout_percent=form.rollout.data,
                compat_confirmed=request.form.get("compat_confirmed") == "1",
            )
        except CompatRefused as e:  # the page shows the warnings: one sentence is enough
            flash(str(e), "error")
            return redirect(again)
        except ForgeError as e:
            # Back to the confirmation of the same choice: the user can retry or go back.
            return flash_and_redirect(e, again)
        share = (
            f" to {publication.rollout_percent}% of instances"
            if publication.rollout_percent is not None
            else ""
        )
        flash(
            f"Published {self.prompt_set.name} {publication.version} to {chosen.name}{share} "
            f"(sequence {publication.sequence}): {publication.summary}.",
            "success",
        )
        return redirect(_status_url(self.project, chosen, publication))


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
    prompt_set, found = set_and_version(project, set_id, version)
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
        from forge_app.services.versions import latest_release

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
