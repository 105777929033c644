"""Sign in, sign out and the account page."""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user, logout_user
from werkzeug.security import check_password_hash

from forge_app.audit import record_event
from forge_app.authz import public, safe_local_path, signed_in_user
from forge_app.extensions import db
from forge_app.forms import LoginForm, PasswordForm
from forge_app.users import RateLimited, authenticate, hash_password

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths; anything else goes to the projects page."""
    return safe_local_path(target) or url_for("projects.index")


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        config = current_app.config
        try:
            user = authenticate(
                db.session,
                form.email.data or "",
                form.password.data or "",
                ip=request.remote_addr or "unknown",
                max_failures=config["FORGE_LOGIN_MAX_FAILURES"],
                max_failures_per_ip=config["FORGE_LOGIN_MAX_FAILURES_PER_IP"],
                window=config["FORGE_LOGIN_WINDOW"],
            )
        except RateLimited as e:
            flash(str(e), "error")
            response = current_app.make_response(
                (render_template("auth/login.html", form=form), 429)
            )
            response.headers["Retry-After"] = str(e.retry_after)
            return response
        if user is None:
            flash("That e-mail and password do not match an account.", "error")
            status = 401
        else:
            session.clear()  # a fresh session on sign-in (no fixation)
            login_user(user, remember=bool(form.remember.data))
            session.permanent = True
            return redirect(_safe_next(request.args.get("next")))
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@public
def logout() -> ResponseReturnValue:
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account", methods=["GET", "POST"])
def account() -> ResponseReturnValue:
    user = signed_in_user()
    form = PasswordForm()
    if form.validate_on_submit():
        if not check_password_hash(user.password_hash, form.current.data or ""):
            form.current.errors = ["This is not your current password."]
        else:
            user.password_hash = hash_password(form.new.data or "")
            record_event("user.password", user)
            db.session.commit()
            # A new stamp signs out every other session; this one gets a fresh session.
            cookie = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
            remember = bool(request.cookies.get(cookie))
            session.clear()
            login_user(user, remember=remember)
            session.permanent = True
            flash("Your password is changed. Other sessions are signed out.", "success")
            return redirect(url_for("auth.account"))
    return render_template("auth/account.html", form=form, user=user, nav="account")
