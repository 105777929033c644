"""Organisations: the ones you belong to, their members and roles."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select

from forge_app.authz import public, require_org_role, signed_in_user
from forge_app.blueprints._common import count_per, found_or_404
from forge_app.errors import ForgeError, flash_and_redirect
from forge_app.extensions import db
from forge_app.forms import AcceptInvitationForm, InviteForm
from forge_app.models import AuditEvent, Membership, Organisation, Project, Role, User
from forge_app.services import orgs as org_service
from forge_app.services.invitations import (
    InvitationError,
    create_invitation,
    find_invitation,
    pending_invitations,
    revoke_invitation,
)
from forge_app.services.transaction import unit_of_work
from forge_app.services.users import AccountError

bp = Blueprint("orgs", __name__, url_prefix="/orgs")


@bp.get("/")
def index() -> ResponseReturnValue:
    user = signed_in_user()
    member_count = count_per(Membership.id, Membership.org_id == Organisation.id, Organisation)
    project_count = count_per(Project.id, Project.org_id == Organisation.id, Organisation)
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
        form=InviteForm(),
        invitations=pending_invitations(db.session, org) if g.role >= Role.OWNER else [],
        nav="orgs",
    )


@bp.post("/<org_slug>/invitations")
@require_org_role(Role.OWNER)
def invite(org: Organisation) -> ResponseReturnValue:
    """Make a single-use invitation link for a role and show it once."""
    form = InviteForm()
    if not form.validate_on_submit():
        flash("Choose a role and how long the link works.", "error")
        return redirect(url_for("orgs.show", org_slug=org.slug))
    try:
        invitation, text = unit_of_work(
            create_invitation,
            db.session,
            org,
            Role.parse(form.role.data or "viewer"),
            signed_in_user(),
            days=int(form.days.data or "7"),
            note=form.note.data or "",
        )
    except (InvitationError, ValueError) as e:
        flash(str(e), "error")
        return redirect(url_for("orgs.show", org_slug=org.slug))
    response = make_response(
        render_template(
            "orgs/invitation_created.html",
            org=org,
            invitation=invitation,
            link=url_for("orgs.join", token=text, _external=True),
            nav="orgs",
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<org_slug>/invitations/<int:invitation_id>/revoke")
@require_org_role(Role.OWNER)
def revoke_invitation_view(org: Organisation, invitation_id: int) -> ResponseReturnValue:
    if unit_of_work(revoke_invitation, db.session, org, invitation_id, signed_in_user()):
        flash("The invitation is withdrawn: its link no longer works.", "success")
    else:
        flash("That invitation was already used or withdrawn.", "info")
    return redirect(url_for("orgs.show", org_slug=org.slug))


@bp.route("/join/<token>", methods=["GET", "POST"])
@public
def join(token: str) -> ResponseReturnValue:
    """The invited person's page: join with the account they are signed in with, or make one
    (they choose their own password)."""
    try:
        invitation = find_invitation(db.session, token)
    except InvitationError as e:
        return _no_referrer(render_template("orgs/join.html", problem=str(e)), 410)
    user = current_user if current_user.is_authenticated else None
    form = AcceptInvitationForm()
    status = 200
    if request.method == "POST":
        status = 400
        try:
            if user is not None:  # CSRFProtect has checked the form's token
                joining = user._get_current_object()
                return _joined(unit_of_work(org_service.join, db.session, token, joining))
            if form.validate_on_submit():
                fields = (form.email.data or "", form.password.data or "", form.name.data or "")
                membership = unit_of_work(
                    org_service.join_with_new_account, db.session, token, *fields
                )
                return _joined(membership, created=True)
        except InvitationError as e:
            return _no_referrer(render_template("orgs/join.html", problem=str(e)), 409)
        except AccountError as e:
            _show_account_problem(form, str(e))
    return _no_referrer(
        render_template(
            "orgs/join.html",
            invitation=invitation,
            form=form,
            user=user,
            login_url=url_for("auth.login", next=request.path),
        ),
        status,
    )


def _show_account_problem(form: AcceptInvitationForm, message: str) -> None:
    """Put why the account could not be made next to the field concerned."""
    if "already exists" in message:
        form.email.errors = [
            "This e-mail already has an account: sign in with it, then open the "
            "invitation link again."
        ]
    elif "password" in message.lower():
        form.password.errors = [message]
    else:
        form.email.errors = [message]


def _joined(membership: Membership, *, created: bool = False) -> ResponseReturnValue:
    org = membership.org
    if created:
        flash(
            f"Your account is ready and you are {membership.role.label} of {org.name}. "
            "Sign in with your e-mail and the password you chose.",
            "success",
        )
        return redirect(url_for("auth.login", next=url_for("orgs.show", org_slug=org.slug)))
    flash(f"You are now {membership.role.label} of {org.name}.", "success")
    return redirect(url_for("orgs.show", org_slug=org.slug))


def _no_referrer(body: str, status: int = 200) -> ResponseReturnValue:
    """The link's token is in the URL: no page it leads to may receive it as a referrer."""
    response = make_response(body, status)
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<org_slug>/members/<int:membership_id>")
@require_org_role(Role.OWNER)
def change_member(org: Organisation, membership_id: int) -> ResponseReturnValue:
    membership = found_or_404(org_service.membership_in(db.session, org, membership_id))
    back = url_for("orgs.show", org_slug=org.slug)
    user = membership.user
    try:
        if request.form.get("action", "role") == "remove":
            org_service.remove_member(db.session, org, membership, actor=signed_in_user())
            flash(f"{user.display_name} was removed from {org.name}.", "success")
            return redirect(back)
        try:
            role = Role.parse(request.form.get("role", ""))
        except ValueError:
            abort(400, "Choose a role: viewer, editor, reviewer or owner.")
        if org_service.change_role(db.session, org, membership, role, actor=signed_in_user()):
            flash(f"{user.display_name} is now {role.label}.", "success")
    except ForgeError as e:
        return flash_and_redirect(e, back)
    return redirect(back)
