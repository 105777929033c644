"""The account's personal API tokens: create (shown once), list with last use, revoke.

    GET  /account/api-tokens                      list and the form to create one
    POST /account/api-tokens                      create; the page shows the token once
    POST /account/api-tokens/<token_id>/revoke    revoke

Every user manages only their own tokens; a token acts with its user's roles (see
:mod:`forge_app.rest`).
"""

from __future__ import annotations

import secrets

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from forge_app.authz import signed_in_user
from forge_app.extensions import db
from forge_app.models import utcnow
from forge_app.models.api_tokens import API_SCOPES
from forge_app.services.api_tokens import (
    EXPIRY_DAYS,
    ApiTokenError,
    create_api_token,
    revoke_api_token,
    user_tokens,
)
from forge_app.services.transaction import unit_of_work

bp = Blueprint("api_tokens", __name__, url_prefix="/account/api-tokens")


def _page(
    *, created: str | None = None, problem: str | None = None, status: int = 200
) -> ResponseReturnValue:
    user = signed_in_user()
    response = render_template(
        "account/api_tokens.html",
        tokens=user_tokens(db.session, user),
        created=created,
        problem=problem,
        form_key=secrets.token_urlsafe(16),
        scopes=API_SCOPES,
        expiries=EXPIRY_DAYS,
        form=request.form if problem else {},
        now=utcnow(),
        nav="account",
    )
    return response, status, {"Cache-Control": "no-store"}


@bp.get("/")
def index() -> ResponseReturnValue:
    return _page()


@bp.post("/")
def create() -> ResponseReturnValue:
    user = signed_in_user()
    days_text = request.form.get("days", "")
    try:
        _token, text = unit_of_work(
            create_api_token,
            db.session,
            user,
            request.form.get("name", ""),
            scope=request.form.get("scope", ""),
            days=int(days_text) if days_text.isdigit() else 0,
            create_key=request.form.get("form_key", "")[:64] or None,
        )
    except ApiTokenError as e:
        return _page(problem=str(e), status=400)
    return _page(created=text)


@bp.post("/<token_id>/revoke")
def revoke(token_id: str) -> ResponseReturnValue:
    try:
        token = unit_of_work(revoke_api_token, db.session, signed_in_user(), token_id)
    except ApiTokenError:
        abort(404)
    flash(f"API token {token.name} is revoked; it no longer works.", "success")
    return redirect(url_for("api_tokens.index"))
