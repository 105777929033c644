"""The heartbeat API's service: one heartbeat in, one answer out (DESIGN §7, issue 14 §2).

    answer = ingest_heartbeat(header, body, problem, limits=limits, clock=time.time())
    # answer.status: 204, 400, 401, 403 or 429; answer.outcome names the metric label

The common heartbeat on PostgreSQL (a known instance, its own token, no usage report) is ONE
statement on one pooled connection in autocommit (:data:`_FAST_SQL`): it reads the token,
and only when the presented secret's hash, the project and the token's state allow it,
counts the heartbeat against both shared limits, updates the instance's row within them and
records the token's use (at most once a minute). The secret's hash is then compared again in
Python in constant time, and that comparison decides. The statement commits asynchronously
(``set_config('synchronous_commit', 'off', true)``, for its own transaction only): a
heartbeat does not wait for the WAL to reach the disk while it holds the token's hot counter
row. A database crash may forget the last fraction of a second of heartbeats, never more,
and never consistency; every other write of the FORGE stays synchronous.

Everything else (SQLite, a usage report, an invalid body, a revoked token, a new instance or
one reporting with another token) takes the general path: the token, then the counters,
then the row, then the ORM path with the per-token instance cap.
"""

from __future__ import annotations

import functools
import hmac
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import Connection

from anvil_client.errors import AnvilError
from anvil_client.wire import AccessToken as WireToken
from forge_app.extensions import db
from forge_app.metrics import USAGE_REPORTS
from forge_app.models import UTCDateTime, utcnow
from forge_app.models.distribution import AccessToken
from forge_app.services.heartbeat_limits import (
    HeartbeatLimits,
    TooManyHeartbeats,
    check_hits,
    count_heartbeat,
    counter_keys,
    setting_or_default,
)
from forge_app.services.heartbeats import (
    HeartbeatBody,
    TooManyInstances,
    instance_values,
    record_heartbeat,
    record_rejected_heartbeat,
    update_known_instance,
)
from forge_app.services.tokens import TOUCH_EVERY, bearer_text, hash_token
from forge_app.usage import DEFAULT_BUCKET_SECONDS, DEFAULT_RETENTION_DAYS, record_usage

__all__ = ["Answer", "ingest_heartbeat", "project_id_of"]

#: Compared with a presented hash when the token id is unknown (same work either way).
_NO_HASH = "0" * 64
_NOT_A_PROJECT = "field 'project_id' of the heartbeat is not a project id (a UUID)"


@dataclass(frozen=True)
class Answer:
    """What the API answers: ``status``; ``outcome`` (the metric's label); ``message`` (one
    sentence) for an error; ``retry_after`` (seconds) for 429."""

    status: int
    outcome: str
    message: str | None = None
    retry_after: int | None = None


_ACCEPTED = Answer(204, "accepted")
_UNKNOWN = Answer(401, "unauthorized", "the ACCESS_TOKEN is missing or unknown")
_REVOKED = Answer(401, "revoked", "the ACCESS_TOKEN was revoked")
_FORBIDDEN = Answer(403, "forbidden", "this ACCESS_TOKEN belongs to another project")


@dataclass(frozen=True)
class _Token:
    id: int
    token_id: str
    project_id: uuid.UUID
    last_used_at: datetime | None
    revoked: bool


def ingest_heartbeat(
    header: str | None,
    body: HeartbeatBody | None,
    problem: str | None,
    *,
    limits: HeartbeatLimits,
    clock: float,
) -> Answer:
    """Authenticate, limit and record one heartbeat. ``body`` is the parsed body, or None
    with ``problem`` (one sentence) when it was invalid: a token problem is answered first.
    ``clock``: seconds since the epoch for the limit windows."""
    presented = _presented(header)
    if presented is None:
        return _UNKNOWN
    if body is None or problem is not None:
        return _general(presented, None, problem or "the heartbeat body is invalid", limits, clock)
    project_id = project_id_of(body.project_id)
    if project_id is None:
        return _general(presented, None, _NOT_A_PROJECT, limits, clock)
    if body.usage is None and db.engine.dialect.name == "postgresql":
        return _fast(presented, project_id, body, limits, clock)
    return _general(presented, body, None, limits, clock)


def project_id_of(text_value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text_value)
    except ValueError:
        return None


def _presented(header: str | None) -> WireToken | None:
    text_value = bearer_text(header)
    if text_value is None:
        return None
    try:
        return WireToken.parse(text_value)
    except AnvilError:
        return None


def _found(row: Any, presented: WireToken, stored_hash: str | None) -> bool:
    """Whether ``row`` is the token presented: the constant-time comparison that decides
    (the presented secret is hashed even when no row was found)."""
    matches = hmac.compare_digest(hash_token(presented.text), stored_hash or _NO_HASH)
    return matches and row is not None


# --- the PostgreSQL fast path ---------------------------------------------------------------

#: One round trip: the token; within it (hash, project, not revoked) both counters' upsert
#: (token row first, then the instance's: one lock order, no deadlock); within both limits the
#: instance's update and the token's last use (once a minute). The counts come back either
#: way; ``updated`` is NULL when the instance has no row with this token yet. The transaction
#: (this statement, in autocommit) commits without waiting for the WAL flush.
_FAST_SQL = text(
    "WITH tok AS ("
    "SELECT id, project_id, secret_hash, revoked_at FROM access_tokens "
    "WHERE token_id = :token_id), "
    "ok AS (SELECT id FROM tok WHERE secret_hash = :secret_hash AND revoked_at IS NULL "
    "AND project_id = :project_id), "
    "hits AS ("
    "INSERT INTO heartbeat_counters (key, window_index, hits) "
    "SELECT v.key, :window, 1 FROM (VALUES (1, :token_key), (2, :instance_key)) AS v(n, key) "
    "WHERE EXISTS (SELECT 1 FROM ok) ORDER BY v.n "
    "ON CONFLICT (key) DO UPDATE SET "
    "hits = CASE WHEN heartbeat_counters.window_index = excluded.window_index "
    "THEN heartbeat_counters.hits + 1 ELSE 1 END, "
    "window_index = excluded.window_index "
    "RETURNING key, hits), "
    "within AS (SELECT 1 WHERE (SELECT hits FROM hits WHERE key = :token_key) <= :per_token "
    "AND (SELECT hits FROM hits WHERE key = :instance_key) <= :per_instance), "
    "updated AS ("
    "UPDATE live_instances SET hostname = :hostname, channel = :channel, mode = :mode, "
    "sequence = :sequence, releases_json = CAST(:releases_json AS jsonb), "
    "last_error = :last_error, client_version = :client_version, last_seen_at = :now, "
    "token_rejected_at = NULL, archived_at = NULL "
    "WHERE project_id = :project_id AND instance_id = :instance_id AND token_id = :token_id "
    "AND EXISTS (SELECT 1 FROM within) RETURNING id), "
    "touched AS ("
    "UPDATE access_tokens SET last_used_at = :now WHERE id = (SELECT id FROM ok) "
    "AND EXISTS (SELECT 1 FROM within) "
    "AND (last_used_at IS NULL OR last_used_at <= :touch_before) RETURNING id) "
    "SELECT (SELECT id FROM tok), (SELECT project_id FROM tok), (SELECT secret_hash FROM tok), "
    "(SELECT revoked_at IS NOT NULL FROM tok), "
    "(SELECT hits FROM hits WHERE key = :token_key), "
    "(SELECT hits FROM hits WHERE key = :instance_key), "
    "(SELECT id FROM updated), (SELECT count(*) FROM touched), "
    "set_config('synchronous_commit', 'off', true)"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("touch_before", type_=UTCDateTime()))


def _fast(
    presented: WireToken,
    project_id: uuid.UUID,
    body: HeartbeatBody,
    limits: HeartbeatLimits,
    clock: float,
) -> Answer:
    now = utcnow()
    window_index = int(clock // limits.window)
    token_key, instance_key = counter_keys(presented.token_id, body.instance_id)
    with db.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        row = connection.execute(
            _FAST_SQL,
            {
                **instance_values(body, json_text=True),
                "token_id": presented.token_id,
                "secret_hash": hash_token(presented.text),
                "project_id": project_id,
                "instance_id": body.instance_id,
                "token_key": token_key,
                "instance_key": instance_key,
                "window": window_index,
                "per_token": limits.per_token,
                "per_instance": limits.per_instance,
                "now": now,
                "touch_before": now - TOUCH_EVERY,
            },
        ).one()
        if not _found(row[0], presented, row[2]):
            return _UNKNOWN
        if row[3]:
            connection.close()
            _note_revoked(presented.token_id, row[1], body, limits, clock)
            return _REVOKED
        if row[1] != project_id:
            return _FORBIDDEN
        try:
            check_hits(connection, int(row[4]), int(row[5]), window_index, limits, clock)
        except TooManyHeartbeats as e:
            return _limited(e)
    if row[6] is None:
        return _record_new(project_id, presented.token_id, body, limits, now)
    return _ACCEPTED


# --- the general path -------------------------------------------------------------------------


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


def _lookup_token(connection: Connection, presented: WireToken) -> _Token | None:
    """The token presented (revoked or not), or None; the secret's hash is compared in
    constant time, and computed even for an unknown id."""
    row = connection.execute(_token_statement(), {"token_id": presented.token_id}).first()
    if not _found(row, presented, row.secret_hash if row is not None else None):
        return None
    assert row is not None
    last_used = None if row.last_used_at is None else row.last_used_at.replace(tzinfo=UTC)
    return _Token(row.id, row.token_id, row.project_id, last_used, row.revoked_at is not None)


def _general(
    presented: WireToken,
    body: HeartbeatBody | None,
    problem: str | None,
    limits: HeartbeatLimits,
    clock: float,
) -> Answer:
    with db.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        token = _lookup_token(connection, presented)
        if token is None:
            return _UNKNOWN
        if token.revoked:
            connection.close()
            if body is not None:
                _note_revoked(token.token_id, token.project_id, body, limits, clock)
            return _REVOKED
        if body is None:
            return Answer(400, "invalid", problem)
        project_id = project_id_of(body.project_id)
        assert project_id is not None  # checked by ingest_heartbeat
        if project_id != token.project_id:
            return _FORBIDDEN
        now = utcnow()
        try:
            count_heartbeat(
                connection,
                token_id=token.token_id,
                instance_id=body.instance_id,
                limits=limits,
                now=clock,
            )
        except TooManyHeartbeats as e:
            return _limited(e)
        if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
            connection.execute(
                update(AccessToken).where(AccessToken.id == token.id).values(last_used_at=now)
            )
        known = _update_known(connection, token, body, now)
    if known is None:
        return _record_new(project_id, token.token_id, body, limits, now)
    _judge_guard(project_id, body)
    return _ACCEPTED


def _update_known(
    connection: Connection, token: _Token, body: HeartbeatBody, now: datetime
) -> int | None:
    """The known instance's row (and a usage report with it, in one transaction)."""

    def update() -> int | None:
        return update_known_instance(
            connection, project_id=token.project_id, token_id=token.token_id, body=body, now=now
        )

    if body.usage is None:
        return update()
    connection.commit()  # ends the autobegun (autocommit) one; nothing to send
    connection.execution_options(isolation_level=connection.default_isolation_level)
    with connection.begin() as transaction:
        known = update()
        if known is None:
            transaction.rollback()
        else:
            instance = _Known(known, body.instance_id)
            _record_usage(connection, token.project_id, instance, body, now)
    return known


def _limited(error: TooManyHeartbeats) -> Answer:
    return Answer(429, "limited", str(error), max(1, math.ceil(error.retry_after)))


@dataclass(frozen=True)
class _Known:
    id: int
    instance_id: str


def _record_usage(
    executor: Any, project_id: uuid.UUID, instance: Any, body: HeartbeatBody, now: datetime
) -> None:
    assert body.usage is not None
    config = current_app.config
    recorded = record_usage(
        executor,
        project_id,
        instance,
        body.channel,
        body.usage,
        now,
        bucket_seconds=int(
            setting_or_default(config, "FORGE_USAGE_BUCKET_SECONDS", DEFAULT_BUCKET_SECONDS)
        ),
        retention_days=int(
            setting_or_default(config, "FORGE_USAGE_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)
        ),
    )
    USAGE_REPORTS.labels(outcome="recorded" if recorded else "duplicate").inc()


def _judge_guard(project_id: uuid.UUID, body: HeartbeatBody) -> None:
    """New usage may move a release's health guard (forge_app.guards; never raises, throttled
    by FORGE_GUARD_EVALUATE_SECONDS)."""
    if body.usage is None:
        return
    from forge_app.guard_actions import after_heartbeat

    after_heartbeat(project_id, body.channel)


def _record_new(
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    limits: HeartbeatLimits,
    now: datetime,
) -> Answer:
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
        return Answer(403, "too_many_instances", str(e))
    if body.usage is not None:
        _record_usage(db.session, project_id, instance, body, now)
    db.session.commit()
    _judge_guard(project_id, body)
    return _ACCEPTED


def _note_revoked(
    token_id: str,
    token_project_id: uuid.UUID,
    body: HeartbeatBody,
    limits: HeartbeatLimits,
    clock: float,
) -> None:
    """A heartbeat signed with a revoked token is still worth knowing: the FORGE shows its
    instance as revoked, with the error it reports. Best effort, and only an instance that used
    this very token is updated (none is created); the answer is 401 whatever happens here."""
    project_id = project_id_of(body.project_id)
    if project_id is None or project_id != token_project_id:
        return
    try:
        count_heartbeat(
            db.session, token_id=token_id, instance_id=body.instance_id, limits=limits, now=clock
        )
    except TooManyHeartbeats:
        db.session.commit()
        return
    record_rejected_heartbeat(
        db.session, project_id=project_id, token_id=token_id, body=body, now=utcnow()
    )
    db.session.commit()
