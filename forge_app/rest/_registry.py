"""How an API route is declared once and used three times: routing, validation, OpenAPI.

    ORGS = Resource("orgs", "/orgs")  # the OpenAPI tag and the path prefix of its operations

    @ORGS.get("", OrgList, "Your organisations", paginated=True)
    def list_orgs() -> OrgList: ...

The :class:`Operation` registers the Flask rule, wraps the view so its return value is validated
against ``response`` and answered as JSON (with an ``ETag`` and ``304`` for ``If-None-Match`` on
reads, and a ``Link`` header for pages), and records everything the OpenAPI document needs.
Views read their body with :func:`read_body` *after* the authorisation decorators ran, so an
outsider gets 404 whatever the body is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Flask, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.sql.selectable import GenerativeSelect
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from forge_app.authz import View, is_public, load_prompt_set, require_project_role
from forge_app.errors import ForgeError, http_status
from forge_app.extensions import db
from forge_app.models import Project, Role
from forge_app.services.heartbeat_limits import SlidingWindowLimiter
from forge_app.services.transaction import unit_of_work

__all__ = [
    "OPERATIONS",
    "ApiError",
    "Operation",
    "Pagination",
    "Resource",
    "bp",
    "committed",
    "error_response",
    "found_or_api_404",
    "paged",
    "read_body",
    "read_pagination",
    "require_set_role",
]

bp = Blueprint("rest", __name__, url_prefix="/api/v1")

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
Q = TypeVar("Q", bound=GenerativeSelect)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
DEFAULT_RATE_LIMIT = 300
DEFAULT_RATE_WINDOW = 60.0
MAX_PER_PAGE = 100

CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
_DEFAULT_MESSAGES = {
    400: "The request is not valid.",
    401: "Send a personal API token as 'Authorization: Bearer <token>'.",
    403: "Your role in this organisation does not allow this action.",
    404: "There is nothing here, or you do not have access to it.",
    405: "This method is not allowed here.",
    409: "The object changed at the same moment; read it again and retry.",
    413: "The request body is too large.",
    429: "Too many requests with this token; wait and try again.",
    500: "The FORGE hit an unexpected error. Nothing was changed.",
    503: "A service the FORGE needs is unavailable; try again in a moment.",
}


class ApiError(Exception):
    """An error answer: ``{"error": {"code", "message", "details"}}`` with ``status``."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.details = details


def found_or_api_404(found: T | None, message: str) -> T:
    """``found``, or an API 404 answer saying ``message`` when there is nothing."""
    if found is None:
        raise ApiError(404, message)
    return found


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify(
        error={"code": code or CODES.get(status, "error"), "message": message, "details": details}
    )
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@dataclass
class Operation:
    """One API operation, as the OpenAPI document describes it. Called on a view, it
    registers the view as this operation (see the module docstring)."""

    method: str
    rule: str
    summary: str
    tag: str
    response: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    paginated: bool = False
    extra_errors: tuple[int, ...] = ()
    endpoint: str = ""  #: the view's name (the operationId), set when it is registered
    description: str = ""  #: the view's docstring

    @property
    def write(self) -> bool:
        return self.method not in SAFE_METHODS

    def __call__(self, view: F) -> F:
        op = replace(self, endpoint=view.__name__, description=(view.__doc__ or "").strip())
        OPERATIONS.append(op)
        bp.add_url_rule(
            op.rule, endpoint=op.endpoint, view_func=_answer(op, view), methods=[op.method]
        )
        return view


OPERATIONS: list[Operation] = []


def _answer(op: Operation, view: Callable[..., Any]) -> Callable[..., Response]:
    """``view`` answering JSON: its result validated against the declared response model."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        g.api_operation = op
        result = view(*args, **kwargs)
        if not isinstance(result, op.response):
            raise TypeError(f"{op.endpoint} returned {type(result).__name__}")
        # Validate what goes out against the declared model (a bug here is a 500).
        payload = op.response.model_validate(result.model_dump()).model_dump(mode="json")
        answer = jsonify(payload)
        answer.status_code = op.status
        next_url = payload.get("next") if op.paginated else None
        if next_url:
            answer.headers["Link"] = f'<{next_url}>; rel="next"'
        if op.method == "GET":
            answer.headers["Cache-Control"] = "private, no-cache"
            answer.add_etag()
            answer.make_conditional(request)
        else:
            answer.headers["Cache-Control"] = "no-store"
        return answer

    return wrapper


@dataclass(frozen=True)
class Resource:
    """The operations of one OpenAPI tag under one path prefix, declared like a blueprint's
    ``get``/``post``/``put`` (see the module docstring)."""

    tag: str
    prefix: str = ""

    def get(
        self, rule: str, response: type[BaseModel], summary: str, *, paginated: bool = False
    ) -> Operation:
        return Operation(
            "GET", self.prefix + rule, summary, self.tag, response, paginated=paginated
        )

    def post(
        self,
        rule: str,
        response: type[BaseModel],
        summary: str,
        *,
        body: type[BaseModel],
        status: int = 200,
        errors: tuple[int, ...] = (),
    ) -> Operation:
        path = self.prefix + rule
        return Operation(
            "POST", path, summary, self.tag, response, status, body, extra_errors=errors
        )

    def put(
        self, rule: str, response: type[BaseModel], summary: str, *, body: type[BaseModel]
    ) -> Operation:
        return Operation("PUT", self.prefix + rule, summary, self.tag, response, body=body)


def require_set_role(minimum: Role) -> Callable[[View], View]:
    """:func:`~forge_app.authz.require_project_role`, then the prompt set of the ``set_id`` URL
    argument passed to the view as its second argument (a 404 when the project has none)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def with_set(project: Project, set_id: str, **kwargs: Any) -> Any:
            return view(project, load_prompt_set(project, set_id), **kwargs)

        return require_project_role(minimum)(with_set)

    return decorate


def read_body(model: type[M]) -> M:
    """The request's JSON body validated by ``model`` (the operation's declared body).

    Raises:
        ApiError: 400 naming each invalid field, or for a body that is not a JSON object.
    """
    op: Operation | None = g.get("api_operation")
    if op is None or op.body is not model:
        raise TypeError("read_body() must use the operation's declared body model")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "Send a JSON object with Content-Type: application/json.")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        details = [
            {"field": ".".join(str(p) for p in error["loc"]) or "body", "message": error["msg"]}
            for error in e.errors(include_url=False, include_input=False)
        ]
        first = details[0] if details else {"field": "body", "message": "invalid"}
        raise ApiError(
            400, f"Field {first['field']!r} is not valid: {first['message']}.", details=details
        ) from None


def committed(work: Callable[[], T], *, race: tuple[type[Exception], ApiError] | None = None) -> T:
    """Run ``work`` (a service call) and commit. The exception of ``race`` (e.g. a concurrent
    change caught by the database) rolls back and is answered with its error; any other
    :class:`ForgeError` rolls back and is answered with its kind's status, message and
    problems."""
    caught: type[Exception] | tuple[()] = race[0] if race is not None else ()
    try:
        return unit_of_work(work)
    except caught:
        assert race is not None
        raise race[1] from None
    except ForgeError as e:
        raise ApiError(http_status(e.kind), str(e), details=e.problems or None) from None


@dataclass(frozen=True)
class Pagination:
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def window(self, query: Q) -> Q:
        """``query`` limited to this page, and one row more to tell whether a next one exists."""
        return query.offset(self.offset).limit(self.per_page + 1)

    def split(self, rows: Sequence[T]) -> tuple[list[T], str | None]:
        """The page's rows of a :meth:`window` and the next page's URL (None on the last)."""
        return list(rows[: self.per_page]), self.next_url(len(rows) > self.per_page)

    def next_url(self, has_more: bool) -> str | None:
        if not has_more:
            return None
        from urllib.parse import urlencode

        query = {**request.args.to_dict(), "page": self.page + 1, "per_page": self.per_page}
        return f"{request.base_url}?{urlencode(query)}"


_DIGITS = re.compile(r"^[0-9]{1,9}$")


def read_pagination() -> Pagination:
    """``?page=`` (from 1) and ``?per_page=`` (1 to 100, default 50).

    Raises:
        ApiError: 400 for values that are not in range.
    """
    values = {}
    for name, default, top in (("page", 1, 10**9), ("per_page", 50, MAX_PER_PAGE)):
        text = request.args.get(name, str(default))
        if not _DIGITS.match(text) or not 1 <= int(text) <= top:
            raise ApiError(400, f"{name} must be a whole number from 1 to {top}.")
        values[name] = int(text)
    return Pagination(values["page"], values["per_page"])


def paged(
    list_model: type[M],
    fetch: Callable[[Pagination], Sequence[Any]],
    item: Callable[[Any], Any] | None = None,
) -> M:
    """One page of a list answer: ``fetch(page)`` returns the page's rows and one more (see
    :meth:`Pagination.window`); ``item`` turns a row into an item of ``list_model``.

    Raises:
        ApiError: 400 for ``?page=`` or ``?per_page=`` out of range.
    """
    page = read_pagination()
    rows, next_url = page.split(fetch(page))
    items = rows if item is None else [item(row) for row in rows]
    return list_model.model_validate({"items": items, "next": next_url})


# ----------------------------------------------------------------------- authentication


_LIMITER_KEY = "anvil.api_limiter"


def api_limiter(app: Flask) -> SlidingWindowLimiter:
    """The app's per-token rate limiter (``FORGE_API_RATE_LIMIT`` per
    ``FORGE_API_RATE_WINDOW`` seconds, counted per server process)."""
    limiter = app.extensions.get(_LIMITER_KEY)
    if limiter is None:
        limiter = app.extensions[_LIMITER_KEY] = SlidingWindowLimiter(
            int(app.config.get("FORGE_API_RATE_LIMIT", DEFAULT_RATE_LIMIT)),
            float(app.config.get("FORGE_API_RATE_WINDOW", DEFAULT_RATE_WINDOW)),
        )
    assert isinstance(limiter, SlidingWindowLimiter)
    return limiter


@bp.before_app_request
def authenticate_request() -> Response | None:
    """Before any other hook: an API request acts as its token's user, and only with a token.

    Session cookies are ignored here (the API is exempt from CSRF, so a cookie must never be
    enough); the user is set for this request only, never signed in.
    """
    unrouted = _unrouted_api_error()
    if unrouted is not None:
        return unrouted
    if request.blueprint != bp.name:
        return None
    if is_public(current_app.view_functions.get(request.endpoint or "")):
        return None
    from forge_app.services.api_tokens import authenticate_api_token

    auth = authenticate_api_token(db.session, request.headers.get("Authorization"))
    if auth.token is None:
        return error_response(401, auth.problem or _DEFAULT_MESSAGES[401], headers=_CHALLENGE)
    token = auth.token
    wait = api_limiter(current_app).hit(token.token_id)
    if wait:
        return error_response(
            429, _DEFAULT_MESSAGES[429], headers={"Retry-After": str(max(1, math.ceil(wait)))}
        )
    if request.method not in SAFE_METHODS and not token.can_write:
        return error_response(
            403, "This API token has the read scope, so it can change nothing.", code="read_only"
        )
    g._login_user = token.user  # Flask-Login's per-request user; no session is written
    g.api_token = token
    return None


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="forge"'}


def _unrouted_api_error() -> Response | None:
    """A path under /api/v1/ that matches no route (or not with this method) still answers
    in the API's error shape. Flask raises routing errors only after the before-request hooks,
    so this is the place; the LIVE heartbeat API keeps its own answers."""
    error = request.routing_exception
    if not isinstance(error, HTTPException) or error.code not in (404, 405):
        return None
    prefix = f"{bp.url_prefix}/"
    if not request.path.startswith(prefix) or request.path.startswith(f"{prefix}live/"):
        return None
    headers = {}
    message = _DEFAULT_MESSAGES[error.code]
    if error.code == 405:
        allow = dict(error.get_headers()).get("Allow", "")
        headers["Allow"] = allow
        message = f"{request.method} is not allowed here; use {allow}."
    return error_response(error.code, message, headers=headers)


@bp.errorhandler(ApiError)
def _api_error(error: ApiError) -> Response:
    if request.method not in SAFE_METHODS:
        db.session.rollback()
    return error_response(error.status, str(error), code=error.code, details=error.details)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    message = error.description
    if not message or message == type(error).description:
        message = _DEFAULT_MESSAGES.get(status, "The request could not be completed.")
    headers = _CHALLENGE if status == 401 else None
    return error_response(status, message, headers=headers)
