"""Sign in, sign out, "Sign out everywhere" and the account page.

Sessions (see ``User.get_id`` and ``forge_app.app._load_user``): the login id in the signed
session cookie names a random session id and when it was issued. Signing out records that
session id as revoked, so a copy of the cookie taken before is refused on the server; "Sign
out everywhere" and a password change alter the user's stamp, which ends every session.
Sessions end after ``FORGE_SESSION_IDLE_MINUTES`` without a request ("Keep me signed in"
skips that) and ``FORGE_SESSION_MAX_HOURS`` after signing in, whatever happens.

A browser that signed in gets a device cookie (signed, only sent to ``/login``): its attempts
are throttled on their own, so a stranger's failures cannot lock the owner out (see
:mod:`forge_app.services.users`).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

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
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from forge_app.authz import public, safe_local_path, signed_in_user
from forge_app.extensions import db
from forge_app.forms import LoginForm, PasswordForm
from forge_app.models import User
from forge_app.models.accounts import LoginId
from forge_app.services import users
from forge_app.services.users import (
    AccountError,
    RateLimited,
    ThrottlePolicy,
    authenticate,
    change_password,
    normalise_email,
)

bp = Blueprint("auth", __name__)

DEVICE_COOKIE = "forge_device"
DEVICE_COOKIE_AGE = timedelta(days=365)


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths; anything else goes to the projects page."""
    return safe_local_path(target) or url_for("projects.index")


def _policy() -> ThrottlePolicy:
    config = current_app.config
    return ThrottlePolicy(
        free_failures=config["FORGE_LOGIN_MAX_FAILURES"],
        free_failures_per_address=config["FORGE_LOGIN_MAX_FAILURES_PER_IP"],
        first_delay=config["FORGE_LOGIN_DELAY"],
        max_delay=config["FORGE_LOGIN_MAX_DELAY"],
        reset_after=config["FORGE_LOGIN_RESET"],
        known_address_for=config["FORGE_LOGIN_KNOWN_ADDRESS"],
    )


def _devices() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt="forge-device-cookie")


def _account_tag(email: str) -> str:
    """The account a device cookie belongs to, without its e-mail in clear."""
    return hashlib.sha256(f"forge-device:{normalise_email(email)}".encode()).hexdigest()[:32]


def _device_of(email: str) -> str | None:
    """The device id of this browser's valid device cookie for ``email``, if any."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw or len(raw) > 512:
        return None
    try:
        data = _devices().loads(raw, max_age=int(DEVICE_COOKIE_AGE.total_seconds()))
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("a") != _account_tag(email):
        return None
    device = data.get("d")
    return device if isinstance(device, str) and 16 <= len(device) <= 64 else None


def _remember_device(response: BaseResponse, email: str, device: str | None) -> None:
    value = _devices().dumps({"a": _account_tag(email), "d": device or secrets.token_urlsafe(18)})
    response.set_cookie(
        DEVICE_COOKIE,
        value,
        max_age=int(DEVICE_COOKIE_AGE.total_seconds()),
        path=url_for("auth.login"),
        secure=current_app.config["SESSION_COOKIE_SECURE"],
        httponly=True,
        samesite="Lax",
    )


def _start_session(user: User, *, remember: bool) -> None:
    """A fresh session (no fixation) with a new session id."""
    session.clear()
    user.use_login_id(None)
    login_user(user, remember=remember)
    session.permanent = True  # the idle lifetime applies (PERMANENT_SESSION_LIFETIME)


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        email = form.email.data or ""
        device = _device_of(email)
        try:
            user = authenticate(
                db.session,
                email,
                form.password.data or "",
                ip=request.remote_addr or "unknown",
                device=device,
                policy=_policy(),
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
            _start_session(user, remember=bool(form.remember.data))
            answer = redirect(_safe_next(request.args.get("next")))
            _remember_device(answer, user.email, device)
            return answer
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


def _revoke_current_session() -> None:
    """Refuse this session's login id from now on, on the server (a copied cookie too)."""
    if not current_user.is_authenticated:
        return
    parsed = LoginId.parse(current_user.get_id())
    if parsed is None:
        return
    users.revoke_login(db.session, parsed, current_app.config["FORGE_SESSION_MAX_AGE"])


@bp.post("/logout")
@public
def logout() -> ResponseReturnValue:
    _revoke_current_session()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.post("/account/sign-out-everywhere")
def sign_out_everywhere() -> ResponseReturnValue:
    users.sign_out_everywhere(db.session, signed_in_user())
    logout_user()
    session.clear()
    flash("Every session of your account is signed out, this one too. Sign in again.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account", methods=["GET", "POST"])
def account() -> ResponseReturnValue:
    user = signed_in_user()
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            change_password(db.session, user, form.current.data or "", form.new.data or "")
        except AccountError as e:
            form.current.errors = [str(e)]
        else:
            # A new stamp signs out every other session; this one gets a fresh session.
            cookie = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
            _start_session(user, remember=bool(request.cookies.get(cookie)))
            flash("Your password is changed. Other sessions are signed out.", "success")
            return redirect(url_for("auth.account"))
    settings = current_app.config["FORGE_SETTINGS"]
    return render_template(
        "auth/account.html",
        form=form,
        user=user,
        nav="account",
        idle_minutes=settings.session_idle_minutes,
        max_hours=settings.session_max_hours,
    )
