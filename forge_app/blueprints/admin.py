"""Site administration: users and organisations (site administrators only)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from forge_app.authz import require_admin, signed_in_user
from forge_app.blueprints._common import count_per
from forge_app.extensions import db
from forge_app.forms import CreateOrgForm, CreateUserForm
from forge_app.models import Membership, Organisation, User
from forge_app.services.orgs import create_org_with_owner
from forge_app.services.users import AccountError, register_user

bp = Blueprint("admin", __name__, url_prefix="/admin")


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


@bp.post("/users")
@require_admin
def create_user_view() -> ResponseReturnValue:
    form = CreateUserForm(prefix="user")
    if form.validate_on_submit():
        try:
            user = register_user(
                db.session,
                form.email.data or "",
                form.password.data or "",
                name=form.name.data or "",
                is_admin=bool(form.is_admin.data),
                actor=signed_in_user(),
            )
        except AccountError as e:
            flash(str(e), "error")
        else:
            flash(f"User {user.email} is created. Add them to an organisation.", "success")
    else:
        for field in form:
            for error in field.errors:
                flash(f"{field.label.text}: {error}", "error")
    return redirect(url_for("admin.index"))


@bp.post("/orgs")
@require_admin
def create_org_view() -> ResponseReturnValue:
    form = CreateOrgForm(prefix="org")
    if form.validate_on_submit():
        try:
            org = create_org_with_owner(
                db.session, form.name.data or "", form.slug.data or None, signed_in_user()
            )
        except AccountError as e:
            flash(str(e), "error")
        else:
            flash(f"Organisation {org.name} is created; you are its owner.", "success")
            return redirect(url_for("orgs.show", org_slug=org.slug))
    else:
        flash("Give the organisation a name.", "error")
    return redirect(url_for("admin.index"))
