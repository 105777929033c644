"""Site administration: users and organisations (site administrators only)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from flask import Blueprint, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from sqlalchemy import select

from forge_app.authz import require_admin, signed_in_user
from forge_app.blueprints._common import count_per
from forge_app.extensions import db
from forge_app.forms import CreateOrgForm, CreateUserForm
from forge_app.models import Membership, Organisation, User
from forge_app.services.orgs import create_org_with_owner
from forge_app.services.users import AccountError, register_user

bp = Blueprint("admin", __name__, url_prefix="/admin")

F = TypeVar("F", bound=FlaskForm)


@bp.get("/")
@require_admin
def index() -> ResponseReturnValue:
    memberships = count_per(Membership.id, Membership.user_id == User.id, User)
    users = db.session.execute(select(User, memberships).order_by(User.email)).all()
    members = count_per(Membership.id, Membership.org_id == Organisation.id, Organisation)
    orgs = db.session.execute(select(Organisation, members).order_by(Organisation.name)).all()
    return render_template(
        "admin/index.html",
        users=users,
        orgs=orgs,
        user_form=CreateUserForm(prefix="user"),
        org_form=CreateOrgForm(prefix="org"),
        nav="admin",
    )


def _create_view(
    rule: str, form_class: type[F], prefix: str, invalid: str | None = None
) -> Callable[[Callable[[F], str | None]], Callable[[], ResponseReturnValue]]:
    """Declare ``POST /admin<rule>`` for site administrators, for the create form
    ``form_class(prefix=prefix)`` of the admin page. The view gets the valid form, calls the
    service, flashes what it made and answers where to go (None: the admin page). An invalid
    form flashes ``invalid`` (None: each field's errors) and the service's
    :class:`AccountError` its sentence, both back on the admin page."""

    def decorate(create: Callable[[F], str | None]) -> Callable[[], ResponseReturnValue]:
        @bp.post(rule)
        @require_admin
        @wraps(create)
        def view() -> ResponseReturnValue:
            form = form_class(prefix=prefix)
            target = None
            if form.validate_on_submit():
                try:
                    target = create(form)
                except AccountError as e:
                    flash(str(e), "error")
            else:
                _flash_invalid(form, invalid)
            return redirect(target or url_for("admin.index"))

        return view

    return decorate


def _flash_invalid(form: FlaskForm, sentence: str | None) -> None:
    if sentence is not None:
        flash(sentence, "error")
        return
    for field in form:
        for error in field.errors:
            flash(f"{field.label.text}: {error}", "error")


@_create_view("/users", CreateUserForm, "user")
def create_user_view(form: CreateUserForm) -> str | None:
    user = register_user(
        db.session,
        form.email.data or "",
        form.password.data or "",
        name=form.name.data or "",
        is_admin=bool(form.is_admin.data),
        actor=signed_in_user(),
    )
    flash(f"User {user.email} is created. Add them to an organisation.", "success")
    return None


@_create_view("/orgs", CreateOrgForm, "org", invalid="Give the organisation a name.")
def create_org_view(form: CreateOrgForm) -> str | None:
    org = create_org_with_owner(
        db.session, form.name.data or "", form.slug.data or None, signed_in_user()
    )
    flash(f"Organisation {org.name} is created; you are its owner.", "success")
    return url_for("orgs.show", org_slug=org.slug)
