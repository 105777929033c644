"""The bearer-token API for LIVE instances: heartbeats (DESIGN §7).

    $ curl -X POST http://127.0.0.1:5000/api/v1/live/heartbeat \\
        -H "Authorization: Bearer $ANVIL_ACCESS_TOKEN" \\
        -H "Content-Type: application/json" -d @heartbeat.json

JSON only, no cookies: the app factory exempts this blueprint from CSRF and its views are
``@public`` for the session check; they authenticate ``Authorization: Bearer <ACCESS_TOKEN>``
themselves. Answers: 204 recorded, 400 invalid body (one sentence in ``{"error": …}``), 401
unknown or revoked token, 403 a token of another project, 429 too many heartbeats for one
(token, instance) — ``FORGE_HEARTBEAT_LIMIT`` per ``FORGE_HEARTBEAT_WINDOW`` seconds, default
12 a minute, counted per server process.
"""

from __future__ import annotations

import math
import uuid

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from forge_app.authz import public
from forge_app.extensions import db
from forge_app.live_instances import (
    DEFAULT_HEARTBEAT_LIMIT,
    DEFAULT_HEARTBEAT_WINDOW,
    MAX_HEARTBEAT_BODY,
    HeartbeatError,
    SlidingWindowLimiter,
    parse_heartbeat,
    record_heartbeat,
    record_rejected_heartbeat,
)
from forge_app.models import utcnow
from forge_app.models.distribution import AccessToken
from forge_app.services.tokens import lookup_token_status, touch_last_used

__all__ = ["bp", "heartbeat_limiter"]

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_LIMITER_KEY = "anvil.heartbeat_limiter"


def heartbeat_limiter(app: Flask) -> SlidingWindowLimiter:
    """The app's heartbeat limiter, made on first use from its settings."""
    limiter = app.extensions.get(_LIMITER_KEY)
    if limiter is None:
        limiter = app.extensions[_LIMITER_KEY] = SlidingWindowLimiter(
            int(app.config.get("FORGE_HEARTBEAT_LIMIT", DEFAULT_HEARTBEAT_LIMIT)),
            float(app.config.get("FORGE_HEARTBEAT_WINDOW", DEFAULT_HEARTBEAT_WINDOW)),
        )
    assert isinstance(limiter, SlidingWindowLimiter)
    return limiter


def _problem(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def _unauthorized(message: str) -> Response:
    return _problem(401, message, {"WWW-Authenticate": 'Bearer realm="anvil"'})


@bp.post("/live/heartbeat")
@public
def heartbeat() -> ResponseReturnValue:
    """Record what one LIVE instance reports about itself."""
    status, token = lookup_token_status(request.headers.get("Authorization"))
    if status == "unknown" or token is None:
        return _unauthorized("the ACCESS_TOKEN is missing or unknown")
    if status == "revoked":
        _note_revoked(token)
        return _unauthorized("the ACCESS_TOKEN was revoked")
    length = request.content_length
    if length is not None and length > MAX_HEARTBEAT_BODY:
        return _problem(400, f"the heartbeat body is larger than {MAX_HEARTBEAT_BODY} bytes")
    try:
        body = parse_heartbeat(request.stream.read(MAX_HEARTBEAT_BODY + 1))
        project_id = _project_id(body.project_id)
    except HeartbeatError as e:
        return _problem(400, str(e))
    if project_id != token.project_id:
        return _problem(403, "this ACCESS_TOKEN belongs to another project")
    wait = heartbeat_limiter(current_app).hit((token.token_id, body.instance_id))
    if wait:
        return _problem(
            429,
            "too many heartbeats from this instance; send fewer",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    now = utcnow()
    record_heartbeat(db.session, project_id=project_id, token_id=token.token_id, body=body, now=now)
    touch_last_used(token, now)
    db.session.commit()
    return Response(status=204)


def _note_revoked(token: AccessToken) -> None:
    """A heartbeat signed with a revoked token is still worth knowing: the FORGE shows its
    instance as revoked, with the error it reports. Best effort, and only an instance that used
    this very token is updated (none is created); the answer is 401 whatever happens here."""
    length = request.content_length
    if length is not None and length > MAX_HEARTBEAT_BODY:
        return
    try:
        body = parse_heartbeat(request.stream.read(MAX_HEARTBEAT_BODY + 1))
        project_id = _project_id(body.project_id)
    except HeartbeatError:
        return
    if project_id != token.project_id:
        return
    if heartbeat_limiter(current_app).hit((token.token_id, body.instance_id)):
        return
    if record_rejected_heartbeat(
        db.session, project_id=project_id, token_id=token.token_id, body=body, now=utcnow()
    ):
        db.session.commit()


def _project_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise HeartbeatError(
            "field 'project_id' of the heartbeat is not a project id (a UUID)"
        ) from None
