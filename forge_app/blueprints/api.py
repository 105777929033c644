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

import time

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from anvil_client.wire import HEARTBEAT_MAX_SIZE
from forge_app.authz import public
from forge_app.metrics import HEARTBEATS
from forge_app.services.heartbeat_ingest import Answer, ingest_heartbeat
from forge_app.services.heartbeat_limits import HeartbeatLimits, limits_from
from forge_app.services.heartbeats import HeartbeatBody, HeartbeatError, parse_heartbeat

__all__ = ["bp", "heartbeat_limits"]

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Seconds since the epoch for the limit windows (tests pin it).
_clock = time.time

#: One counter child per outcome, looked up once.
_COUNTED = {
    outcome: HEARTBEATS.labels(outcome=outcome)
    for outcome in (
        "accepted",
        "invalid",
        "unauthorized",
        "revoked",
        "forbidden",
        "limited",
        "too_many_instances",
    )
}


def heartbeat_limits(app: Flask) -> HeartbeatLimits:
    """The heartbeat limits from the app's settings (app config, else environment)."""
    return limits_from(app.config)


@bp.post("/live/heartbeat")
@public
def heartbeat() -> ResponseReturnValue:
    """Record what one LIVE instance reports about itself
    (:func:`forge_app.services.heartbeat_ingest.ingest_heartbeat`)."""
    # Read and check the body before a database connection is taken (reading may wait on
    # the network); a token problem is still answered first.
    body: HeartbeatBody | None = None
    problem = None
    try:
        body = _read_body()
    except HeartbeatError as e:
        problem = str(e)
    answer = ingest_heartbeat(
        request.headers.get("Authorization"),
        body,
        problem,
        limits=heartbeat_limits(current_app),
        clock=_clock(),
    )
    _COUNTED[answer.outcome].inc()
    return _render(answer)


def _read_body() -> HeartbeatBody:
    """Raises: HeartbeatError for a body too large or not DESIGN §7's."""
    length = request.content_length
    if length is not None and length > HEARTBEAT_MAX_SIZE:
        raise HeartbeatError(f"the heartbeat body is larger than {HEARTBEAT_MAX_SIZE} bytes")
    return parse_heartbeat(request.stream.read(HEARTBEAT_MAX_SIZE + 1))


def _render(answer: Answer) -> Response:
    if answer.status == 204:
        return Response(status=204)
    response = jsonify(error=answer.message)
    response.status_code = answer.status
    if answer.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="anvil"'
    if answer.retry_after is not None:
        response.headers["Retry-After"] = str(answer.retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response
