"""Safe releases pages (issue 11): a channel's guard, its scheduled changes, the webhook.

    GET  /projects/<project_id>/channels/<channel>/safety           members: guard, schedule
    POST /projects/<project_id>/channels/<channel>/guard            owners: save the guard
    POST /projects/<project_id>/channels/<channel>/guard/delete     owners: remove it
    POST /projects/<project_id>/channels/<channel>/schedule         publishers: schedule a change
    POST /projects/<project_id>/channels/<channel>/schedule/cancel  publishers: cancel one
    GET  /projects/<project_id>/webhook                             owners: the webhook (+ POST)

The usage charts, guard status, rollout comparison and compatibility warnings of other pages
come from the ``safe_releases`` template helper registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from forge_app import compat, guards, scheduling
from forge_app.authz import require_project_role, signed_in_user
from forge_app.blueprints._common import flash_form_errors
from forge_app.blueprints.distribution._shared import _channel_or_404
from forge_app.charts import usage_panel
from forge_app.compat import CompatWarning
from forge_app.errors import ForgeError, Kind, flash_and_redirect
from forge_app.extensions import db
from forge_app.forms import GuardForm, ScheduleForm, WebhookForm
from forge_app.models import Project, PromptSet, PromptSetVersion, Role, utcnow
from forge_app.models.distribution import Channel, Publication
from forge_app.models.releases import ScheduledJob
from forge_app.services import publishing
from forge_app.services.transaction import unit_of_work
from forge_app.usage_reads import usage_series
from forge_app.webhooks import delete_webhook, save_webhook, webhook_of

bp = Blueprint("releases", __name__)


def _invalid(sentence: str) -> ForgeError:
    return ForgeError(sentence, kind=Kind.INVALID)


def _parse_stages(text: str) -> list[int]:
    parts = [p.strip().rstrip("%") for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return []
    if not all(p.isdigit() for p in parts):
        raise _invalid("Write the plan as percentages separated by commas, e.g. 10, 50, 100.")
    stages = [int(p) for p in parts]
    if any(not 1 <= s <= 100 for s in stages) or stages != sorted(set(stages)):
        raise _invalid("The plan's steps must rise from 1 to 100 percent, e.g. 10, 50, 100.")
    return stages


def _parse_when(text: str) -> datetime:
    value = text.strip().replace("T", " ").removesuffix("Z").removesuffix(" UTC")
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise _invalid("Give the time as YYYY-MM-DD HH:MM (UTC).")


@bp.get("/projects/<uuid:project_id>/channels/<channel>/safety")
@require_project_role(Role.VIEWER)
def safety(project: Project, channel: str) -> ResponseReturnValue:
    found = _channel_or_404(project, channel)
    policy = guards.guard_of(found)
    form = GuardForm(
        data={
            "enabled": policy.enabled if policy else True,
            "max_error_rate": round((policy.max_error_rate if policy else 0.05) * 100, 2),
            "min_calls": policy.min_calls if policy else 50,
            "window_minutes": policy.window_minutes if policy else 30,
            "stages": ", ".join(str(s) for s in policy.stages) if policy else "",
            "hold_minutes": policy.hold_minutes if policy else 10,
        }
    )
    soon = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    schedule_form = ScheduleForm(data={"run_at": soon})
    versions = list(
        db.session.scalars(
            select(PromptSetVersion)
            .join(PromptSet, PromptSet.id == PromptSetVersion.prompt_set_id)
            .where(PromptSet.project_id == project.id)
            .order_by(PromptSet.name, PromptSetVersion.created_at.desc())
            .limit(200)
        )
    )
    return render_template(
        "releases/safety.html",
        project=project,
        channel=found,
        policy=policy,
        form=form,
        schedule_form=schedule_form,
        versions=versions,
        jobs=scheduling.pending_jobs(found),
        past_jobs=scheduling.recent_jobs(found),
        actions=guards.recent_actions(found),
        may_publish=publishing.can_publish(g.role, found),
        nav="projects",
        tab="channels",
    )


def _back(project: Project, channel: Channel) -> str:
    return url_for(".safety", project_id=project.id, channel=channel.name)


def _channel_to_change(project: Project, name: str) -> Channel:
    """The channel ``name``, when the user's role may publish to it (else a 403 page)."""
    found = _channel_or_404(project, name)
    if not publishing.can_publish(g.role, found):
        abort(403, f"Only {publishing.required_role(found).label}s can change {found.name}.")
    return found


def _channel_post(
    action: str, role: Role, load: Callable[[Project, str], Channel] = _channel_or_404
) -> Callable[[Callable[[Project, Channel], None]], Callable[..., ResponseReturnValue]]:
    """Declare ``POST .../channels/<channel>/<action>`` for members with ``role``: the view
    gets the channel (``load``: a 404 page, or a 403 page too) and flashes its outcome, or
    raises a :class:`ForgeError` (see :func:`flash_and_redirect`); the answer is the
    channel's safety page."""

    def decorate(view: Callable[[Project, Channel], None]) -> Callable[..., ResponseReturnValue]:
        @bp.post(f"/projects/<uuid:project_id>/channels/<channel>/{action}")
        @require_project_role(role)
        @wraps(view)
        def answer(project: Project, channel: str) -> ResponseReturnValue:
            found = load(project, channel)
            try:
                view(project, found)
            except ForgeError as e:
                return flash_and_redirect(e, _back(project, found))
            return redirect(_back(project, found))

        return answer

    return decorate


@_channel_post("guard", Role.OWNER)
def save_guard(project: Project, found: Channel) -> None:
    form = GuardForm()
    if not form.validate_on_submit():
        flash_form_errors(form)
        return
    settings = guards.GuardSettings(
        enabled=bool(form.enabled.data),
        max_error_rate=float(form.max_error_rate.data) / 100,
        min_calls=int(form.min_calls.data),
        window_minutes=int(form.window_minutes.data),
        stages=_parse_stages(form.stages.data or ""),
        hold_minutes=int(form.hold_minutes.data or 0),
    )
    guards.save_guard(found, settings, user=signed_in_user())
    flash(f"The guard of {found.name} is saved.", "success")


@_channel_post("guard/delete", Role.OWNER)
def delete_guard(project: Project, found: Channel) -> None:
    if guards.delete_guard(found, user=signed_in_user()):
        flash(f"{found.name} has no guard now.", "success")


@_channel_post("schedule", Role.VIEWER, _channel_to_change)
def schedule(project: Project, found: Channel) -> None:
    form = ScheduleForm()
    if not form.validate_on_submit():
        flash_form_errors(form)
        return
    run_at = _parse_when(form.run_at.data or "")
    version = None
    if form.kind.data == "publish":
        version_id = (form.version.data or "").strip()
        version = (
            db.session.get(PromptSetVersion, int(version_id)) if version_id.isdigit() else None
        )
        if version is None or version.prompt_set.project_id != project.id:
            raise _invalid("Choose a version of this project to publish.")
    job = unit_of_work(
        scheduling.schedule_job,
        found,
        form.kind.data,
        run_at,
        user=signed_in_user(),
        version=version,
        percent=form.percent.data,
        to_sequence=form.to_sequence.data,
        compat_confirmed=bool(form.compat_confirmed.data),
    )
    flash(
        f"Scheduled: {scheduling.describe_job(job)} on {found.name} at "
        f"{run_at:%Y-%m-%d %H:%M} UTC.",
        "success",
    )


@_channel_post("schedule/cancel", Role.VIEWER, _channel_to_change)
def cancel(project: Project, found: Channel) -> None:
    job_id = request.form.get("job", type=int)
    job = db.session.get(ScheduledJob, job_id) if job_id else None
    if job is None or job.channel_id != found.id or job.kind == "webhook":
        abort(404)
    if unit_of_work(scheduling.cancel_job, job, user=signed_in_user()):
        flash(f"Cancelled: {scheduling.describe_job(job)}.", "success")
    else:
        flash("That change is no longer pending (it ran or was cancelled).", "error")


@bp.route("/projects/<uuid:project_id>/webhook", methods=["GET", "POST"])
@require_project_role(Role.OWNER)
def webhook(project: Project) -> ResponseReturnValue:
    hook = webhook_of(project.id)
    form = WebhookForm(
        data={"url": hook.url if hook else "", "enabled": hook.enabled if hook else True}
    )
    if request.method == "POST":
        form = WebhookForm()
        if not form.validate_on_submit():
            flash_form_errors(form)
            return redirect(url_for(".webhook", project_id=project.id))
        url = (form.url.data or "").strip()
        back = url_for(".webhook", project_id=project.id)
        if not url:
            delete_webhook(project, user=signed_in_user())
            flash("The project has no webhook now.", "success")
            return redirect(back)
        try:
            hook, secret = save_webhook(
                project, url, enabled=bool(form.enabled.data), user=signed_in_user()
            )
        except ForgeError as e:
            return flash_and_redirect(e, back)
        if secret is None:
            flash("The webhook is saved.", "success")
            return redirect(back)
        # Shown once, on this answer only (never in the session cookie or a log).
        return render_template(
            "releases/webhook.html",
            project=project,
            form=form,
            hook=hook,
            secret=secret,
            nav="projects",
        )
    return render_template(
        "releases/webhook.html", project=project, form=form, hook=hook, nav="projects"
    )


# ------------------------------------------------------------------ helpers for templates


class _SafeReleases:
    """``safe_releases`` in templates: charts, guard status, comparison, compat warnings.
    Each read is guarded: a problem shows as a note, never as a failed page."""

    def usage(
        self,
        project: Project,
        *,
        channel: str | None = None,
        prompt_id: str | None = None,
        content_sha256s: list[str] | None = None,
        hours: int = 24,
    ) -> Any:
        since = utcnow() - timedelta(hours=hours)
        buckets = usage_series(
            project,
            channel=channel,
            prompt_id=prompt_id,
            content_sha256s=content_sha256s,
            since=since,
        )
        return usage_panel(buckets, hours=hours)

    def guard(self, channel: Channel) -> Any:
        policy = guards.guard_of(channel)
        if policy is None:
            return None
        verdict = guards.judge(channel, policy, utcnow()) if policy.enabled else None
        return {"policy": policy, "verdict": verdict}

    def actions(self, channel: Channel, limit: int = 5) -> Any:
        return guards.recent_actions(channel, limit)

    def action_for(self, publication: Publication) -> Any:
        return guards.action_for_publication(publication)

    def comparison(self, channel: Channel) -> Any:
        return guards.rollout_comparison(channel)

    def jobs(self, channel: Channel) -> Any:
        return scheduling.pending_jobs(channel)

    def describe(self, job: ScheduledJob) -> str:
        return scheduling.describe_job(job)

    def compat(
        self, version: PromptSetVersion | None, channel: Channel | None = None
    ) -> list[CompatWarning]:
        return compat.publish_warnings(version, channel)

    def compat_draft(self, prompt_set: PromptSet) -> list[CompatWarning]:
        """For the review page: the set's draft against the callers on every channel."""
        from forge_app.models import Prompt
        from forge_app.services.versions import latest_release

        draft = {
            p.key: set(p.variables or [])
            for p in db.session.scalars(select(Prompt).where(Prompt.prompt_set_id == prompt_set.id))
        }
        latest = latest_release(db.session, prompt_set)
        previous = set(compat.version_variables(latest)) if latest is not None else set()
        label = str(getattr(prompt_set, "pending_version", None) or "the draft")
        return compat.prompts_warnings(prompt_set.project_id, draft, label, previous=previous)


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    return {"safe_releases": _SafeReleases()}
