"""The FORGE application factory.

    >>> from forge_app import create_app
    >>> app = create_app({"FORGE_DATABASE_URL": "sqlite:///instance/anvil.db"})  # doctest: +SKIP

``config`` keys named ``FORGE_*`` feed :func:`forge_app.config.load_settings` (they win over env
vars and ``forge.toml``); any other key (``TESTING``, ``WTF_CSRF_ENABLED``…) goes to
``app.config`` as it is, and so do the tunables of :data:`TUNABLES` (sign-in throttling, page
size). The database schema is managed by migrations
(``anvil-forge db upgrade``), never created here.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import (
    Flask,
    Request,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

from forge_app.authz import login_required_by_default, public
from forge_app.config import load_settings
from forge_app.errors import ForgeError, http_status
from forge_app.extensions import csrf, db, login_manager
from forge_app.models import User
from forge_app.models.accounts import LoginId, RevokedSession

__all__ = ["CONTENT_SECURITY_POLICY", "TUNABLES", "create_app"]

#: ``FORGE_*`` settings of ``app.config`` that the mapping given to ``create_app`` may change.
TUNABLES: dict[str, Any] = {
    # Sign-in throttling (forge_app.services.users.ThrottlePolicy): free failures per account (or
    # device, or account at a known address) and per address, then doubling waits.
    "FORGE_LOGIN_MAX_FAILURES": 5,
    "FORGE_LOGIN_MAX_FAILURES_PER_IP": 30,
    "FORGE_LOGIN_DELAY": timedelta(seconds=30),
    "FORGE_LOGIN_MAX_DELAY": timedelta(minutes=15),
    "FORGE_LOGIN_RESET": timedelta(hours=12),
    "FORGE_LOGIN_KNOWN_ADDRESS": timedelta(days=90),
    "FORGE_PAGE_SIZE": 50,
}

#: The settings also in ``app.config``, as ``FORGE_<NAME>`` (``FORGE_SETTINGS`` holds them all).
_SETTINGS_IN_CONFIG = ("env", "database_url", "store_url", "signing_key", "data_key")

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_FRIENDLY = {
    400: ("Bad request", "The request could not be understood. Go back and try again."),
    401: ("Sign-in needed", "Sign in to continue."),
    403: ("Not allowed", "Your role in this organisation does not allow this action."),
    404: ("Not found", "There is nothing here, or you do not have access to it."),
    405: ("Not allowed", "This page cannot be used that way."),
    409: (
        "Changed at the same moment",
        "Someone else changed the same thing at the same moment, so nothing was saved. "
        "Reload the page and try again.",
    ),
    413: (
        "Too large",
        "The request is larger than the FORGE accepts (prompt files up to 8 MiB), so nothing "
        "was saved. Go back to keep what you typed.",
    ),
    429: ("Slow down", "Too many requests. Wait a moment and try again."),
    500: (
        "Something went wrong",
        "The FORGE hit an unexpected error. Nothing was changed; try again in a moment.",
    ),
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build a configured FORGE app.

    Raises:
        anvil_client.errors.ConfigError: for invalid settings or, in production, missing secrets.
    """
    settings = load_settings(config)
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__, instance_path=str(settings.instance_path))
    app.config.update(
        {f"FORGE_{name.upper()}": getattr(settings, name) for name in _SETTINGS_IN_CONFIG},
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="forge_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.cookie_secure,
        # Idle lifetime: Flask refuses a session cookie not refreshed (by a request) for this
        # long. The absolute lifetime is checked by the user loader; "keep me signed in"
        # (the remember cookie) outlives an idle session, never the absolute lifetime.
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_idle_minutes),
        REMEMBER_COOKIE_DURATION=timedelta(hours=settings.session_max_hours),
        FORGE_SESSION_MAX_AGE=timedelta(hours=settings.session_max_hours),
        # A token valid for the whole session: an editor's page open all day can still save.
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
        # One form field (a pasted prompt file, a long template) may be as large as an
        # uploaded prompt file (8 MiB); Werkzeug's default is 500 kB.
        MAX_FORM_MEMORY_SIZE=9 * 1024 * 1024,
        **TUNABLES,
    )
    for key, value in (config or {}).items():
        if key in TUNABLES or not key.startswith("FORGE_") or key not in app.config:
            app.config[key] = value
    app.config["FORGE_SETTINGS"] = settings  # the resolved settings, whatever was given
    if settings.trusted_proxies:
        # The client address and scheme as the proxies saw them (the sign-in throttle and
        # secure cookies depend on them); only the last ``n`` hops are believed.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    app.session_interface = _SessionInterface()
    init_extensions(app)
    register_blueprints(app)
    register_hooks(app)
    from forge_app import hints, metrics

    metrics.init_app(app)  # /metrics and request latency (issue 14)
    hints.init_app(app)  # /api/v1/live/hints, the hint stream (issue 14)
    return app


#: The LIVE API authenticates ``Authorization: Bearer <ACCESS_TOKEN>`` only: no session cookie
#: is read or written under it (and no user loaded), which also spares every heartbeat the
#: cookie's signing serializer.
BEARER_ONLY_PREFIX = "/api/v1/live/"


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, except under :data:`BEARER_ONLY_PREFIX`: a null
    session there (never saved, so no ``Set-Cookie``)."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(BEARER_ONLY_PREFIX):
            return self.make_null_session(app)
        return super().open_session(app, request)


def init_extensions(app: Flask) -> None:
    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.user_loader(_load_user)


def _load_user(login_id: str) -> User | None:
    """The user of a login id (see ``User.get_id``) that is still valid: issued less than
    ``FORGE_SESSION_MAX_HOURS`` ago, with the user's current stamp (password, "Sign out
    everywhere"), and not signed out."""
    parsed = LoginId.parse(login_id)
    if parsed is None:
        return None
    max_age: timedelta = current_app.config["FORGE_SESSION_MAX_AGE"]
    age = time.time() - parsed.issued_at
    if not -300 <= age <= max_age.total_seconds():
        return None
    user = db.session.get(User, parsed.user_id)
    if user is None or not user.is_active:
        return None
    if not hmac.compare_digest(parsed.stamp.encode(), user.session_stamp.encode()):
        return None
    if db.session.get(RevokedSession, parsed.session_id) is not None:
        return None
    user.use_login_id(login_id)
    if not session.permanent:
        # Refreshed by every request, so the idle lifetime counts from the last one (a
        # session restored from a remember cookie included).
        session.permanent = True
    return user


def register_blueprints(app: Flask) -> None:
    from forge_app.blueprints import (
        admin,
        api,
        auth,
        distribution,
        forges,
        instances,
        orgs,
        projects,
        prompt_sets,
        prompts,
        store,
    )

    for module in (
        auth,
        orgs,
        projects,
        prompt_sets,
        prompts,
        admin,
        forges,
        distribution,
        instances,
        store,
    ):
        app.register_blueprint(module.bp)
    app.register_blueprint(api.bp)
    csrf.exempt(api.bp)  # bearer-token API, no cookies
    from forge_app import rest
    from forge_app.blueprints import api_tokens

    app.register_blueprint(api_tokens.bp)
    from forge_app.blueprints import releases

    app.register_blueprint(releases.bp)
    # Registered before register_hooks: its token check runs before the sign-in redirect.
    app.register_blueprint(rest.bp)
    csrf.exempt(rest.bp)  # personal-API-token API: it never reads session cookies

    @app.get("/")
    def index() -> ResponseReturnValue:
        return redirect(url_for("projects.index"))

    @app.get("/healthz")
    @public
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")


def register_hooks(app: Flask) -> None:
    from forge_app import presentation

    app.before_request(login_required_by_default)
    app.after_request(_security_headers)
    presentation.init_app(app)

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError) -> ResponseReturnValue:
        message = (
            "The form could not be verified (its security token is missing or expired). "
            "Reload the page and try again."
        )
        return _error_page(400, message)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> ResponseReturnValue:
        if error.code is None or error.code < 400:
            return error
        return _error_page(error.code, None, error)

    @app.errorhandler(InternalServerError)
    def _server_error(error: InternalServerError) -> ResponseReturnValue:
        return _error_page(500, None)

    @app.errorhandler(ForgeError)
    def _forge_error(error: ForgeError) -> ResponseReturnValue:
        # The one mapping of service errors to pages or API JSON, by kind.
        db.session.rollback()
        return _error_page(http_status(error.kind), str(error))

    @app.errorhandler(IntegrityError)
    def _database_conflict(error: IntegrityError) -> ResponseReturnValue:
        # A uniqueness race the view did not foresee (two people creating the same name at
        # once): the transaction is rolled back whole, so nothing was half-saved.
        db.session.rollback()
        current_app.logger.warning(
            "database conflict on %s %s: %s", request.method, request.path, type(error.orig)
        )
        return _error_page(409, None)


def _error_page(code: int, message: str | None, error: HTTPException | None = None) -> Response:
    title, default = _FRIENDLY.get(code, ("Error", "The request could not be completed."))
    description = message or default
    # Our own aborts carry one plain sentence; Werkzeug's class defaults are generic.
    if error is not None and not message and error.description != type(error).description:
        description = error.description or default
    headers: dict[str, str] = {}
    if error is not None and code == 405:
        headers = dict(error.get_headers())
        headers.pop("Content-Type", None)
    if wants_json():
        if code == 405 and "Allow" in headers and not message:
            description = f"{request.method} is not allowed here; use {headers['Allow']}."
        response = jsonify(error=description)
    else:
        g.error_page = True
        response = Response(
            render_template("errors/error.html", code=code, title=title, message=description),
            mimetype="text/html",
        )
    response.status_code = code
    for name, value in headers.items():
        response.headers[name] = value
    return response


#: Paths whose clients are programs: their errors are JSON even when no route matched (a 404 or
#: 405 has no blueprint to tell by).
MACHINE_PREFIXES = ("/api/", "/store/", "/.well-known/")


def wants_json() -> bool:
    """Whether an error answer should be ``{"error": …}`` rather than an HTML page."""
    return (
        request.blueprint in ("api", "store")
        or request.path.startswith(MACHINE_PREFIXES)
        or request.accept_mimetypes.best == "application/json"
    )


#: The headers every answer carries unless its view set them itself.
_DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)
_HSTS = ("Strict-Transport-Security", "max-age=31536000")


def _security_headers(response: Response) -> Response:
    headers = response.headers
    # One pass over the names present: werkzeug's setdefault and ``in`` raise and catch a
    # KeyError for every missing name, which is most of this hook's cost on a heartbeat.
    present = {name.lower() for name, _ in headers}
    wanted = _DEFAULT_HEADERS
    if current_app.config["SESSION_COOKIE_SECURE"]:
        wanted = (*wanted, _HSTS)
    for name, value in wanted:
        if name.lower() not in present:
            headers.add(name, value)
    if response.mimetype == "text/html" and "cache-control" not in present:
        headers["Cache-Control"] = "no-store"
    return response
