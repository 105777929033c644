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

import functools
import hmac
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from werkzeug.wrappers import Response

from anvil_client.errors import AnvilError
from anvil_client.wire import HEARTBEAT_MAX_SIZE
from anvil_client.wire import AccessToken as WireToken
from forge_app.authz import public
from forge_app.extensions import db
from forge_app.metrics import HEARTBEATS, USAGE_REPORTS
from forge_app.models import utcnow
from forge_app.models.distribution import AccessToken
from forge_app.services.heartbeats import (
    DEFAULT_HEARTBEAT_LIMIT,
    DEFAULT_HEARTBEAT_WINDOW,
    DEFAULT_MAX_INSTANCES_PER_TOKEN,
    DEFAULT_TOKEN_HEARTBEAT_LIMIT,
    HeartbeatBody,
    HeartbeatError,
    HeartbeatLimits,
    TooManyHeartbeats,
    TooManyInstances,
    count_and_update_known,
    count_heartbeat,
    number_setting,
    parse_heartbeat,
    record_heartbeat,
    record_rejected_heartbeat,
    update_known_instance,
)
from forge_app.services.tokens import hash_token
from forge_app.usage import DEFAULT_BUCKET_SECONDS, DEFAULT_RETENTION_DAYS, record_usage

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
    """Record what one LIVE instance reports about itself.

    The common case (a known instance, its own token) takes one database connection and, on
    PostgreSQL, two statements in autocommit mode, each atomic on its own: the token, then
    the shared limit counters (one upsert) with the instance's row (one update) in one
    statement. A usage report goes in one transaction with the instance's update. Anything
    else (a new instance, another token, a revoked token) takes the ORM path below.
    """
    header = request.headers.get("Authorization")
    limits = heartbeat_limits(current_app)
    # Read and check the body before a database connection is taken (reading may wait on
    # the network); a token problem is still answered first.
    body: HeartbeatBody | None = None
    try:
        body = _read_body()
        project_id = _project_id(body.project_id)
        problem = None
    except HeartbeatError as e:
        problem = str(e)
    with db.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        status, token = _lookup_token(connection, header)
        if status == "unknown" or token is None:
            HEARTBEATS.labels(outcome="unauthorized").inc()
            return _unauthorized("the ACCESS_TOKEN is missing or unknown")
        if status == "revoked":
            HEARTBEATS.labels(outcome="revoked").inc()
            connection.close()
            if body is not None and problem is None:
                _note_revoked(token.token_id, token.project_id, body)
            return _unauthorized("the ACCESS_TOKEN was revoked")
        if body is None or problem is not None:
            HEARTBEATS.labels(outcome="invalid").inc()
            return _problem(400, problem or "the heartbeat body is invalid")
        if project_id != token.project_id:
            HEARTBEATS.labels(outcome="forbidden").inc()
            return _problem(403, "this ACCESS_TOKEN belongs to another project")
        now = utcnow()
        try:
            # Autocommit: the hot per-token counter row is locked for one statement only.
            if connection.dialect.name == "postgresql" and body.usage is None:
                known = count_and_update_known(
                    connection,
                    project_id=project_id,
                    token_id=token.token_id,
                    body=body,
                    limits=limits,
                    clock=_clock(),
                    now=now,
                )
            else:
                count_heartbeat(
                    connection,
                    token_id=token.token_id,
                    instance_id=body.instance_id,
                    limits=limits,
                    now=_clock(),
                )
                known = (
                    None
                    if body.usage is not None
                    else update_known_instance(
                        connection,
                        project_id=project_id,
                        token_id=token.token_id,
                        body=body,
                        now=now,
                    )
                )
        except TooManyHeartbeats as e:
            HEARTBEATS.labels(outcome="limited").inc()
            return _problem(429, str(e), {"Retry-After": str(max(1, math.ceil(e.retry_after)))})
        if _touch_due(token.last_used_at, now):
            connection.execute(
                update(AccessToken).where(AccessToken.id == token.id).values(last_used_at=now)
            )
        if body.usage is not None:
            connection.commit()  # ends the autobegun (autocommit) one; nothing to send
            connection.execution_options(isolation_level=connection.default_isolation_level)
            with connection.begin() as transaction:
                known = update_known_instance(
                    connection, project_id=project_id, token_id=token.token_id, body=body, now=now
                )
                if known is None:
                    transaction.rollback()
                else:
                    instance = _Known(known, body.instance_id)
                    _record_usage(connection, project_id, instance, body, now)
    if known is None:
        return _record_new(project_id, token.token_id, body, limits, now)
    HEARTBEATS.labels(outcome="accepted").inc()
    _judge_guard(project_id, body)
    return Response(status=204)


def _judge_guard(project_id: uuid.UUID, body: HeartbeatBody) -> None:
    """New usage may move a release's health guard (forge_app.guards; never raises, throttled
    by FORGE_GUARD_EVALUATE_SECONDS)."""
    if body.usage is None:
        return
    from forge_app.guards import after_heartbeat

    after_heartbeat(project_id, body.channel)


@dataclass(frozen=True)
class _Token:
    id: int
    token_id: str
    project_id: uuid.UUID
    last_used_at: datetime | None


@dataclass(frozen=True)
class _Known:
    id: int
    instance_id: str


#: A token's ``last_used_at`` is written at most this often (as services.tokens does).
TOUCH_EVERY = timedelta(seconds=60)


def bearer_text(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (None when there is none)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@functools.cache
def _token_statement() -> Any:
    table = AccessToken.__table__
    return select(
        table.c.id,
        table.c.token_id,
        table.c.project_id,
        table.c.secret_hash,
        table.c.revoked_at,
        table.c.last_used_at,
    ).where(table.c.token_id == bindparam("token_id"))


def _lookup_token(connection: Connection, header: str | None) -> tuple[str, _Token | None]:
    """:func:`forge_app.services.tokens.lookup_token_status` in one Core query: ``ok``,
    ``revoked`` (a correct but revoked token) or ``unknown``; the secret's hash is compared
    in constant time, and computed even for an unknown id."""
    text = bearer_text(header)
    if text is None:
        return "unknown", None
    try:
        parsed = WireToken.parse(text)
    except AnvilError:
        return "unknown", None
    row = connection.execute(_token_statement(), {"token_id": parsed.token_id}).first()
    presented = hash_token(parsed.text)
    expected = row.secret_hash if row is not None else "0" * 64
    if not hmac.compare_digest(presented, expected) or row is None:
        return "unknown", None
    token = _Token(row.id, row.token_id, row.project_id, _aware(row.last_used_at))
    return ("revoked" if row.revoked_at is not None else "ok"), token


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def _touch_due(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at >= TOUCH_EVERY


def _record_usage(
    executor: Any, project_id: uuid.UUID, instance: Any, body: HeartbeatBody, now: datetime
) -> None:
    assert body.usage is not None
    recorded = record_usage(
        executor,
        project_id,
        instance,
        body.channel,
        body.usage,
        now,
        bucket_seconds=int(_setting("FORGE_USAGE_BUCKET_SECONDS", DEFAULT_BUCKET_SECONDS)),
        retention_days=int(_setting("FORGE_USAGE_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)),
    )
    USAGE_REPORTS.labels(outcome="recorded" if recorded else "duplicate").inc()


def _record_new(
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    limits: HeartbeatLimits,
    now: datetime,
) -> ResponseReturnValue:
    """A first heartbeat, or one with another token: the instance cap applies."""
    try:
        instance = record_heartbeat(
            db.session,
            project_id=project_id,
            token_id=token_id,
            body=body,
            now=now,
            max_instances=limits.max_instances,
        )
    except TooManyInstances as e:
        db.session.rollback()
        HEARTBEATS.labels(outcome="too_many_instances").inc()
        return _problem(403, str(e))
    if body.usage is not None:
        _record_usage(db.session, project_id, instance, body, now)
    db.session.commit()
    _judge_guard(project_id, body)
    HEARTBEATS.labels(outcome="accepted").inc()
    return Response(status=204)


def _setting(name: str, default: float) -> float:
    try:
        return number_setting(current_app.config, os.environ, name, default)
    except ValueError as e:
        log.warning("%s; using %g", e, default)
        return default


def _note_revoked(token_id: str, token_project_id: uuid.UUID, body: HeartbeatBody) -> None:
    """A heartbeat signed with a revoked token is still worth knowing: the FORGE shows its
    instance as revoked, with the error it reports. Best effort, and only an instance that used
    this very token is updated (none is created); the answer is 401 whatever happens here."""
    try:
        project_id = _project_id(body.project_id)
    except HeartbeatError:
        return
    if project_id != token_project_id:
        return
    try:
        count_heartbeat(
            db.session,
            token_id=token_id,
            instance_id=body.instance_id,
            limits=heartbeat_limits(current_app),
            now=_clock(),
        )
    except TooManyHeartbeats:
        db.session.commit()
        return
    record_rejected_heartbeat(
        db.session, project_id=project_id, token_id=token_id, body=body, now=utcnow()
    )
    db.session.commit()


def _project_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise HeartbeatError(
            "field 'project_id' of the heartbeat is not a project id (a UUID)"
        ) from None
