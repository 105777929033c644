"""Organisations: the ones you belong to, their members and roles."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from forge_app.audit import record_event
from forge_app.authz import require_org_role, signed_in_user
from forge_app.extensions import db
from forge_app.forms import AddMemberForm
from forge_app.models import AuditEvent, Membership, Organisation, Project, Role, User
from forge_app.users import add_member, normalise_email

bp = Blueprint("orgs", __name__, url_prefix="/orgs")


@bp.get("/")
def index() -> ResponseReturnValue:
    user = signed_in_user()
    member_count = (
        select(func.count(Membership.id))
        .where(Membership.org_id == Organisation.id)
        .correlate(Organisation)
        .scalar_subquery()
    )
    project_count = (
        select(func.count(Project.id))
        .where(Project.org_id == Organisation.id)
        .correlate(Organisation)
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(Organisation, Membership.role_name, member_count, project_count)
        .join(Membership, Membership.org_id == Organisation.id)
        .where(Membership.user_id == user.id)
        .order_by(Organisation.name)
    ).all()
    orgs = [
        {"org": org, "role": Role.parse(role), "members": members, "projects": projects}
        for org, role, members, projects in rows
    ]
    return render_template("orgs/index.html", orgs=orgs, nav="orgs")


@bp.get("/<org_slug>")
@require_org_role(Role.VIEWER)
def show(org: Organisation) -> ResponseReturnValue:
    members = db.session.execute(
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org.id)
        .order_by(User.name, User.email)
    ).all()
    projects = db.session.scalars(
        select(Project).where(Project.org_id == org.id).order_by(Project.name)
    ).all()
    events = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.org_id == org.id, AuditEvent.project_id.is_(None))
        .order_by(AuditEvent.id.desc())
        .limit(20)
    ).all()
    return render_template(
        "orgs/show.html",
        org=org,
        members=members,
        projects=projects,
        events=events,
        form=AddMemberForm(),
        nav="orgs",
    )


@bp.post("/<org_slug>/members")
@require_org_role(Role.OWNER)
def add_member_view(org: Organisation) -> ResponseReturnValue:
    form = AddMemberForm()
    if not form.validate_on_submit():
        flash("Give the e-mail of an existing user and a role.", "error")
        return redirect(url_for("orgs.show", org_slug=org.slug))
    email = normalise_email(form.email.data or "")
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None:
        flash(
            f"There is no user with e-mail {email}. A site administrator can create one.",
            "error",
        )
        return redirect(url_for("orgs.show", org_slug=org.slug))
    role = Role.parse(form.role.data or "viewer")
    add_member(db.session, org, user, role)
    record_event("org.member_add", user, org_id=org.id, details={"role": role.label})
    db.session.commit()
    flash(f"{user.display_name} is now {role.label} of {org.name}.", "success")
    return redirect(url_for("orgs.show", org_slug=org.slug))


@bp.post("/<org_slug>/members/<int:membership_id>")
@require_org_role(Role.OWNER)
def change_member(org: Organisation, membership_id: int) -> ResponseReturnValue:
    membership = db.session.scalar(
        select(Membership).where(Membership.id == membership_id, Membership.org_id == org.id)
    )
    if membership is None:
        abort(404)
    user = membership.user
    owners = db.session.scalar(
        select(func.count(Membership.id)).where(
            Membership.org_id == org.id, Membership.role_name == Role.OWNER.label
        )
    )
    action = request.form.get("action", "role")
    last_owner = membership.role == Role.OWNER and owners == 1
    if action == "remove":
        if last_owner:
            flash("An organisation needs at least one owner.", "error")
        else:
            db.session.delete(membership)
            record_event("org.member_remove", user, org_id=org.id)
            db.session.commit()
            flash(f"{user.display_name} was removed from {org.name}.", "success")
        return redirect(url_for("orgs.show", org_slug=org.slug))
    try:
        role = Role.parse(request.form.get("role", ""))
    except ValueError:
        abort(400, "Choose a role: viewer, editor, reviewer or owner.")
    if last_owner and role != Role.OWNER:
        flash("An organisation needs at least one owner.", "error")
    elif role != membership.role:
        old = membership.role
        membership.role = role
        record_event(
            "org.member_role", user, org_id=org.id, details={"from": old.label, "to": role.label}
        )
        db.session.commit()
        flash(f"{user.display_name} is now {role.label}.", "success")
    return redirect(url_for("orgs.show", org_slug=org.slug))
