"""The distribution blueprint and what its pages share: lookups, flash reports, LIVE
instance counts, and the helpers other blueprints' templates use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, current_app, flash, g, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from anvil_client.errors import ConfigError
from forge_app.authz import signed_in_user
from forge_app.errors import ForgeError, flash_and_redirect, flash_error
from forge_app.extensions import db
from forge_app.models import Project
from forge_app.models.distribution import AccessToken, Channel, Publication
from forge_app.models.instances import LiveInstance
from forge_app.services import publishing
from forge_app.services.publishing import RecipientsReport
from forge_app.services.transaction import unit_of_work

bp = Blueprint("distribution", __name__)


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


def _channel_or_404(project: Project, name: str) -> Channel:
    publishing.ensure_default_channels(project)
    channel = publishing.get_channel(project, name)
    if channel is None:
        abort(404)
    return channel


def _channel_and_page(project: Project, name: str) -> tuple[Channel, str]:
    """The project's channel ``name`` (a 404 page when it has none) and the URL of its page,
    where the channel's actions come back to."""
    found = _channel_or_404(project, name)
    return found, url_for(".channel", project_id=project.id, channel=found.name)


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


def _channel_move(move: Callable[..., Publication], *args: Any) -> Publication | None:
    """``move(*args)`` (a publishing service that changes a channel) as the signed-in user
    with their role, as one unit of work: its publication, or None when it was refused
    (see :func:`~forge_app.errors.flash_error`)."""
    try:
        return unit_of_work(move, *args, user=signed_in_user(), role=g.role)
    except ForgeError as e:
        flash_error(e)
        return None


def _reencrypt(
    project: Project, back: str, *, already: str, only: Channel | None = None
) -> ResponseReturnValue:
    """Re-encrypt ``only`` (else every channel of ``project``) for the active tokens, as one
    unit of work, and say what happened (``already``: nothing was to do)."""
    try:
        report = unit_of_work(
            publishing.sync_recipients,
            project,
            user=signed_in_user(),
            reason="re-encrypt requested",
            only=only,
        )
    except ForgeError as e:
        return flash_and_redirect(e, back)
    if not report.reencrypted and not report.failed:
        flash(already, "info")
    else:
        _flash_report(report, intro="Re-encryption finished." if report.reencrypted else None)
    return redirect(back)


_INSTANCES_LISTED = 200


def _live_instances(
    project: Project, channel: str | None = None, *, token_id: str | None = None
) -> list[Any]:
    """The LIVE instances that reported to this FORGE and are not archived (at most 200)."""
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


def _status_url(project: Project, channel: Channel, publication: Publication) -> str:
    return url_for(
        ".publish_status",
        project_id=project.id,
        channel=channel.name,
        sequence=publication.sequence,
    )
