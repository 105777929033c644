"""The bearer-token API for LIVE instances: heartbeats (DESIGN §7).

    $ curl -X POST http://127.0.0.1:5000/api/v1/live/heartbeat \\
        -H "Authorization: Bearer $ANVIL_ACCESS_TOKEN" \\
        -H "Content-Type: application/json" -d @heartbeat.json

JSON only, no cookies: the app factory exempts this blueprint from CSRF and its views are
``@public`` for the session check; they authenticate ``Authorization: Bearer <ACCESS_TOKEN>``
themselves. Answers: 204 recorded, 400 invalid body (one sentence in ``{"error": …}``), 401
unknown or revoked token, 403 a token of another project or one that already reports
``FORGE_MAX_INSTANCES_PER_TOKEN`` instances, 429 too many heartbeats — per (token, instance)
``FORGE_HEARTBEAT_LIMIT`` (default 12) and per token ``FORGE_HEARTBEAT_TOKEN_LIMIT`` (default
10,000) per ``FORGE_HEARTBEAT_WINDOW`` seconds (default 60), counted in the database so every
FORGE process shares them.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from anvil_client.wire import HEARTBEAT_MAX_SIZE
from forge_app.authz import public
from forge_app.extensions import db
from forge_app.live_instances import (
    DEFAULT_HEARTBEAT_LIMIT,
    DEFAULT_HEARTBEAT_WINDOW,
    DEFAULT_MAX_INSTANCES_PER_TOKEN,
    DEFAULT_TOKEN_HEARTBEAT_LIMIT,
    HeartbeatBody,
    HeartbeatError,
    HeartbeatLimits,
    TooManyHeartbeats,
    TooManyInstances,
    count_heartbeat,
    number_setting,
    parse_heartbeat,
    record_heartbeat,
    record_rejected_heartbeat,
)
from forge_app.models import utcnow
from forge_app.models.distribution import AccessToken
from forge_app.services.tokens import lookup_token_status, touch_last_used

__all__ = ["bp", "heartbeat_limits"]

log = logging.getLogger("forge.api")

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Seconds since the epoch for the limit windows (tests pin it).
_clock = time.time


def heartbeat_limits(app: Flask) -> HeartbeatLimits:
    """The heartbeat limits from the app's settings (app config, else environment)."""

    def setting(name: str, default: float) -> float:
        try:
            return number_setting(app.config, os.environ, name, default)
        except ValueError as e:
            log.warning("%s; using %g", e, default)
            return default

    return HeartbeatLimits(
        per_instance=int(setting("FORGE_HEARTBEAT_LIMIT", DEFAULT_HEARTBEAT_LIMIT)),
        per_token=int(setting("FORGE_HEARTBEAT_TOKEN_LIMIT", DEFAULT_TOKEN_HEARTBEAT_LIMIT)),
        window=setting("FORGE_HEARTBEAT_WINDOW", DEFAULT_HEARTBEAT_WINDOW),
        max_instances=int(
            setting("FORGE_MAX_INSTANCES_PER_TOKEN", DEFAULT_MAX_INSTANCES_PER_TOKEN)
        ),
    )


def _problem(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def _unauthorized(message: str) -> Response:
    return _problem(401, message, {"WWW-Authenticate": 'Bearer realm="anvil"'})


def _read_body() -> HeartbeatBody:
    """Raises: HeartbeatError for a body too large or not DESIGN §7's."""
    length = request.content_length
    if length is not None and length > HEARTBEAT_MAX_SIZE:
        raise HeartbeatError(f"the heartbeat body is larger than {HEARTBEAT_MAX_SIZE} bytes")
    return parse_heartbeat(request.stream.read(HEARTBEAT_MAX_SIZE + 1))


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
    try:
        body = _read_body()
        project_id = _project_id(body.project_id)
    except HeartbeatError as e:
        return _problem(400, str(e))
    if project_id != token.project_id:
        return _problem(403, "this ACCESS_TOKEN belongs to another project")
    limits = heartbeat_limits(current_app)
    try:
        count_heartbeat(
            db.session,
            token_id=token.token_id,
            instance_id=body.instance_id,
            limits=limits,
            now=_clock(),
        )
    except TooManyHeartbeats as e:
        db.session.commit()
        return _problem(429, str(e), {"Retry-After": str(max(1, math.ceil(e.retry_after)))})
    # The counters commit at once: the hot per-token row stays locked for one statement only.
    db.session.commit()
    now = utcnow()
    try:
        record_heartbeat(
            db.session,
            project_id=project_id,
            token_id=token.token_id,
            body=body,
            now=now,
            max_instances=limits.max_instances,
        )
    except TooManyInstances as e:
        db.session.rollback()
        return _problem(403, str(e))
    touch_last_used(token, now)
    db.session.commit()
    return Response(status=204)


def _note_revoked(token: AccessToken) -> None:
    """A heartbeat signed with a revoked token is still worth knowing: the FORGE shows its
    instance as revoked, with the error it reports. Best effort, and only an instance that used
    this very token is updated (none is created); the answer is 401 whatever happens here."""
    try:
        body = _read_body()
        project_id = _project_id(body.project_id)
    except HeartbeatError:
        return
    if project_id != token.project_id:
        return
    try:
        count_heartbeat(
            db.session,
            token_id=token.token_id,
            instance_id=body.instance_id,
            limits=heartbeat_limits(current_app),
            now=_clock(),
        )
    except TooManyHeartbeats:
        db.session.commit()
        return
    record_rejected_heartbeat(
        db.session, project_id=project_id, token_id=token.token_id, body=body, now=utcnow()
    )
    db.session.commit()


def _project_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise HeartbeatError(
            "field 'project_id' of the heartbeat is not a project id (a UUID)"
        ) from None
