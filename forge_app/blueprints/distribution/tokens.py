"""ACCESS_TOKEN pages: list and generate, reveal, revoke, and re-encrypt for the active tokens."""

from __future__ import annotations

import secrets

from flask import flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from anvil_client.errors import ConfigError
from forge_app.authz import require_project_role, safe_local_path, signed_in_user
from forge_app.blueprints._common import project_page
from forge_app.blueprints.distribution._shared import (
    _flash_report,
    _instances_by_token,
    _live_instances,
    _reencrypt,
    _store_url_for_clients,
    _token_or_404,
    bp,
)
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.forms import TokenForm
from forge_app.models import Project, Role
from forge_app.models.distribution import AccessToken
from forge_app.services import publishing
from forge_app.services.tokens import generate_token, show_token
from forge_app.services.transaction import unit_of_work

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
            token, text, report = generate_token(
                project, form.name.data or "", user=signed_in_user()
            )
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
    return project_page(
        "distribution/tokens.html",
        project,
        tab="tokens",
        form=form,
        tokens=rows,
        created=created,
        instances=_instances_by_token(project),
        store_url=_store_url_for_clients(),
        public_key=publishing.forge_public_key_text(),
    )


@bp.post("/projects/<uuid:project_id>/tokens/<token_id>/reveal")
@require_project_role(Role.OWNER)
def reveal(project: Project, token_id: str) -> ResponseReturnValue:
    token = _token_or_404(project, token_id)
    try:
        text = show_token(token)
    except ConfigError as e:
        flash(str(e), "error")
        return redirect(url_for(".tokens", project_id=project.id))
    return project_page(
        "distribution/token_reveal.html",
        project,
        tab="tokens",
        token=token,
        text=text,
        store_url=_store_url_for_clients(),
        public_key=publishing.forge_public_key_text(),
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
            report = unit_of_work(publishing.revoke_token, token, user=user)
        except ForgeError as e:
            return flash_and_redirect(e, back)
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
    return project_page(
        "distribution/revoke.html",
        project,
        tab="tokens",
        token=token,
        remaining=remaining,
        channels=channels,
        instances=users,
    )


@bp.post("/projects/<uuid:project_id>/tokens/reencrypt")
@require_project_role(Role.OWNER)
def reencrypt_all(project: Project) -> ResponseReturnValue:
    back = safe_local_path(request.form.get("next")) or url_for(".tokens", project_id=project.id)
    publishing.ensure_default_channels(project)
    return _reencrypt(
        project, back, already="Every channel is already encrypted for exactly the active tokens."
    )
